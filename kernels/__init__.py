"""Batched soft / hard / OTAM dynamic time warping (see dtw.py for the algorithm and limits)."""
from m3net.kernels.dtw import (
    MAX_KERNEL_WIDTH,
    MODES,
    SHORT_MAX,
    DTWFallbackWarning,
    cosine_cost,
    dtw,
    dtw_path,
    dtw_reference,
    dtw_similarity,
    dtw_symmetric,
    dtw_with_length,
)

__all__ = ["dtw", "dtw_reference", "dtw_path", "dtw_with_length", "dtw_symmetric", "dtw_similarity", "cosine_cost",
           "MODES", "MAX_KERNEL_WIDTH", "SHORT_MAX", "DTWFallbackWarning"]
