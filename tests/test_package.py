"""The installed package: namespace layout, console script, README/CI agreement."""
import importlib
import os
import subprocess
import sys

import pytest

import m3net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["m3net.cli", "m3net.kernels", "m3net.extract", "m3net.cache"])
def test_namespace_modules_import(name):
    importlib.import_module(name)


def test_no_generic_top_level_modules_installed():
    # cli/cache/kernels/extract exist only inside m3net, never as top-level names.
    for generic in ("cli", "cache", "kernels", "extract"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or REPO in os.path.abspath(spec.origin or REPO), generic


def test_version_flag_runs_console_script_and_module():
    out = subprocess.run(["m3net", "--version"], capture_output=True, text=True, check=True)
    assert m3net.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "m3net", "--help"], capture_output=True, text=True, check=True)
    assert "train-head" in out.stdout and "bench-dtw" in out.stdout


def test_splits_ship_inside_package():
    base = os.path.join(os.path.dirname(m3net.__file__), "splits")
    assert os.path.isfile(os.path.join(base, "LICENSE"))
    for ds in ("Gym99", "Gym288", "Diving48"):
        for split in ("trainlist.txt", "vallist.txt", "testlist.txt"):
            assert os.path.getsize(os.path.join(base, ds, split)) > 0


def test_ci_runs_the_readme_commands_it_reads_from_the_readme():
    # .ci/run takes both commands out of README.md (.ci/readme_command.py) and runs each in a fresh
    # virtualenv: the first installs with nothing extra and runs the whole demo, the second the tests.
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert len(blocks) == 2
    assert blocks[0].endswith("m3net demo") and "[test]" not in blocks[0] and "triton" not in blocks[0]
    assert "pytest" in blocks[1]
    for number, block in enumerate(blocks, start=1):
        printed = subprocess.run([sys.executable, os.path.join(REPO, ".ci", "readme_command.py"), str(number)],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert printed == block
        assert f"run_readme_command {number}" in ci


def test_only_the_four_mapped_names_join_the_namespace():
    # The checkout's other top-level files and folders are not part of the package.
    for name in ("m3net.setup", "m3net.tests", "m3net.docs", "m3net.benchmarks"):
        assert importlib.util.find_spec(name) is None, name


# The repository's tools, as the package held them before they moved to tools/ (issue 32).
FORMER_TOOL_MODULES = ("m3net.readme_figures", "m3net.bench.session", "m3net.bench.session_pytest",
                       "m3net.kernels.static_sm90", "m3net.data.synthetic_validate")


@pytest.mark.parametrize("name", FORMER_TOOL_MODULES)
def test_the_package_holds_no_tool(name):
    assert importlib.util.find_spec(name) is None, name


def test_tools_are_not_installed():
    # tools/*.py run as scripts from a checkout: none is a module of the package, and tools/ is no package of it.
    tools = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "tools")) if name.endswith(".py"))
    assert {"docs_sections", "gpu_session", "static_sm90", "validate_synthetic"} <= set(tools)
    for name in tools:
        assert importlib.util.find_spec(f"m3net.{name}") is None, name
    assert not os.path.exists(os.path.join(REPO, "tools", "__init__.py"))
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        setuptools = tomllib.load(fh)["tool"]["setuptools"]
    assert not any("tools" in name for name in setuptools["packages"])
    assert not any("tools" in folder for folder in setuptools["package-dir"].values())


def test_every_package_folder_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        declared = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    mapped = {"m3net": "m3net", "kernels": "m3net.kernels", "extract": "m3net.extract", "cache": "m3net.cache"}
    found = set()
    for folder, name in mapped.items():
        for where, _, files in os.walk(os.path.join(REPO, folder)):
            if "__init__.py" in files:
                found.add(name + where[len(os.path.join(REPO, folder)):].replace(os.sep, "."))
    assert found == declared
