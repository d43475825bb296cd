"""m3net: few-shot fine-grained action recognition after M3Net (ACM MM 2023).

The Python API (m3net/api.py; docs/api.md) is importable from here: ``m3net.FewShotClassifier``,
``m3net.Prediction``, ``m3net.open_cache``, ``m3net.FeatureCache``, ``m3net.create_head``. Those names
load on first use, so ``import m3net`` stays cheap (no torch until one is used).

Installed, the namespace holds ``m3net.kernels``, ``m3net.extract``, ``m3net.cache`` and
``m3net.cli``, which live in the top-level folders of the source tree; pyproject.toml declares that
mapping (package-dir) and setup.py installs ``cli.py`` as ``m3net.cli``.
"""
import importlib.abc as _abc
import importlib.util as _util
import os as _os
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING

from m3net._version import __version__

if _TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them on first use
    from m3net.api import FeatureCache, FewShotClassifier, Prediction, create_head, open_cache

__all__ = ["__version__", "FewShotClassifier", "Prediction", "FeatureCache", "open_cache", "create_head"]
_API_NAMES = frozenset(__all__[1:])

# The four names pyproject.toml maps into the namespace, and where they are in a source checkout.
_CHECKOUT_NAMES = {"m3net.cli": "cli.py", "m3net.kernels": "kernels", "m3net.extract": "extract",
                   "m3net.cache": "cache"}


class _CheckoutFinder(_abc.MetaPathFinder):
    """Finds the four mapped names in a source checkout (``python -m m3net`` in the repo root with the
    checkout on PYTHONPATH, or an editable install, whose finder does not carry the cli.py module) and
    nothing else: ``m3net.setup`` or ``m3net.tests`` do not exist."""

    def __init__(self, root):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        relative = _CHECKOUT_NAMES.get(fullname)
        if relative is None:
            return None
        location = _os.path.join(self.root, relative)
        if _os.path.isdir(location):
            return _util.spec_from_file_location(fullname, _os.path.join(location, "__init__.py"),
                                                 submodule_search_locations=[location])
        return _util.spec_from_file_location(fullname, location)


_source_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_source_root, "setup.py")) and _os.path.isfile(
    _os.path.join(_source_root, "cli.py")
) and not any(isinstance(finder, _CheckoutFinder) for finder in _sys.meta_path):
    _sys.meta_path.append(_CheckoutFinder(_source_root))


def __getattr__(name):
    """The API's names, imported (with torch) on first use."""
    if name in _API_NAMES:
        from m3net import api

        return getattr(api, name)
    raise AttributeError(f"module 'm3net' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API_NAMES))

