"""m3net: few-shot fine-grained action recognition after M3Net (ACM MM 2023).

Installed, the namespace holds ``m3net.kernels``, ``m3net.extract``, ``m3net.cache`` and
``m3net.cli``, which live in the top-level folders of the source tree (see setup.py).
"""
import os as _os

from m3net._version import __version__

# Run from a source checkout (``python -m m3net`` in the repo root, or an editable install),
# the mapped folders sit beside this one: put the checkout root on the package path so
# ``m3net.kernels`` -> ./kernels and ``m3net.cli`` -> ./cli.py resolve as they do installed.
_source_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_source_root, "setup.py")) and _os.path.isfile(
    _os.path.join(_source_root, "cli.py")
):
    __path__.append(_source_root)  # noqa: F821 (module __path__)

__all__ = ["__version__"]
