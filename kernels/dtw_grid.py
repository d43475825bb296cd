"""What the DTW reference, the Triton kernels and the dispatch share: the grid each mode's DP runs
on (shape, padding, accumulation dtype) and the optional Triton import with its launch helpers.

The algorithm, limits and complexity are in the header of dtw.py.
"""
import contextlib
import os

import torch

try:  # Triton is optional: without it every input runs on the torch reference.
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None
    libdevice = None


def _grid_shape(mode, n, m):
    return (n, m + 2) if mode == "otam" else (n, m)


def _pad_cost(cost, mode):
    """The grid's cost: the cost itself, or for otam one zero column before and after."""
    return torch.nn.functional.pad(cost, (1, 1)) if mode == "otam" else cost



def _accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32



def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _device_guard(tensor):
    """Launch on the tensor's GPU (inputs on cuda:1 run on cuda:1), not the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()

