"""Installs ``cli.py`` as the module ``m3net.cli``; everything else about the package (metadata, the
mapping of the top-level folders into the ``m3net`` namespace) is declared in pyproject.toml."""
from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCli(build_py):
    """Also installs the top-level ``cli.py`` as the module ``m3net.cli`` (package-dir maps packages, not
    single modules)."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "m3net":
            modules.append(("m3net", "cli", "cli.py"))
        return modules


setup(cmdclass={"build_py": BuildPyWithCli})
