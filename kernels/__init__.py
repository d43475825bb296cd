"""Batched soft / hard / OTAM dynamic time warping (see dtw.py for the algorithm and limits)."""
from m3net.kernels.dtw import *  # noqa: F403 (the public API, declared once in dtw.__all__)
from m3net.kernels.dtw import __all__  # noqa: F401
