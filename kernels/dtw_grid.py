"""What the DTW reference, the Triton kernels and the dispatch share: the grid each mode's DP runs
on (shape, padding, accumulation dtype), the optional Triton import and the one place kernels are
launched from (so a caller can record the launches instead: compile warming, the static sm_90 table).

The algorithm, limits and complexity are in the header of dtw.py.
"""
import contextlib
import dataclasses
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



@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One Triton launch as a launcher issues it: ``kernel[grid](*args, **constexprs, num_warps=...)``.

    pairs_per_program and loop_trips (the trip count of each runtime loop, outermost first) turn the
    instructions one thread executes into instructions per pair (static_sm90).
    """

    kernel: object
    grid: tuple
    args: tuple
    constexprs: dict
    num_warps: int
    pairs_per_program: int
    loop_trips: tuple = ()

    def run(self):
        self.kernel[self.grid](*self.args, **self.constexprs, num_warps=self.num_warps)

    def warmup(self):
        """Compiles (or loads from Triton's cache) the variant this launch uses, without running it."""
        self.kernel.warmup(*self.args, grid=self.grid, **self.constexprs, num_warps=self.num_warps)


_recorded = None  # a list while recorded_launches() is active: launches are collected, not run


def _launch(launch):
    if _recorded is not None:
        _recorded.append(launch)
    else:
        launch.run()


def _recording():
    return _recorded is not None


@contextlib.contextmanager
def recorded_launches():
    """Within the block, kernel launches are appended to the yielded list instead of run (their
    outputs stay uninitialised): how launch_configs learns the launcher's own configurations."""
    global _recorded
    outer, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = outer
