"""Where the repository's tools are: tools/*.py are scripts, tested but not part of the installed package."""
import os

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def env_with_tools(env):
    """``env`` with tools/ first on PYTHONPATH, for a subprocess that imports a tool as a module."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [TOOLS, env.get("PYTHONPATH")]))}
