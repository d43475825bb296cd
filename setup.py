"""Installs one namespace, ``m3net``, from the design card's top-level folders.

    m3net/    -> m3net            (data, model, train/eval, demo)
    kernels/  -> m3net.kernels    (DTW: torch reference + Triton kernel)
    extract/  -> m3net.extract    (decoding, sampling, backbone, extraction loop)
    cache/    -> m3net.cache      (HDF5 feature cache)
    cli.py    -> m3net.cli        (click front end, console script ``m3net``)

Nothing is installed under a generic top-level name (``cli``, ``cache``, ...).
"""
import os
import re

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))

# Top-level source folder -> package name inside the m3net namespace.
MAPPED_FOLDERS = {"kernels": "m3net.kernels", "extract": "m3net.extract", "cache": "m3net.cache"}


def _packages():
    package_dir = {"m3net": "m3net"}
    packages = ["m3net"] + ["m3net." + p for p in find_packages("m3net")]
    for folder, name in MAPPED_FOLDERS.items():
        package_dir[name] = folder
        packages += [name] + [name + "." + p for p in find_packages(folder)]
        for sub in find_packages(folder):
            package_dir[name + "." + sub] = os.path.join(folder, *sub.split("."))
    return packages, package_dir


class BuildPyWithCli(build_py):
    """Also installs the top-level ``cli.py`` as the module ``m3net.cli``."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "m3net":
            modules.append(("m3net", "cli", "cli.py"))
        return modules


def _version():
    with open(os.path.join(HERE, "m3net", "_version.py")) as fh:
        return re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)


packages, package_dir = _packages()

setup(
    name="m3net",
    version=_version(),
    description="Few-shot fine-grained action recognition (M3Net, ACM MM 2023): "
    "feature-cache pipeline with a Triton DTW kernel",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=packages,
    package_dir=package_dir,
    package_data={"m3net": ["splits/*", "splits/*/*.txt"]},
    cmdclass={"build_py": BuildPyWithCli},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.22",
        "h5py>=3.6",
        "click>=8.0",
        "tqdm>=4.60",
        "decord>=0.6; platform_machine=='x86_64' or platform_machine=='AMD64'",
        "av>=10.0",
        "pillow>=9.0",
        "matplotlib>=3.5",
    ],
    extras_require={
        # Triton ships its CPU interpreter (TRITON_INTERPRET=1) in the same wheel.
        "triton": ["triton>=2.2"],
        "torchvision": ["torchvision>=0.16"],
        # train-head and finetune write TensorBoard scalars next to their CSV logs when it is installed.
        "tensorboard": ["tensorboard>=2.10"],
        "test": [
            "pytest>=7.0",
            "triton>=2.2",
            "tslearn>=0.6",
            "scikit-video>=1.1.11",
            "tensorboard>=2.10",
            "ruff>=0.4",
        ],
        "bench": ["pysdtw>=0.0.5"],
    },
    entry_points={"console_scripts": ["m3net=m3net.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
