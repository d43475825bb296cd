"""What the DTW reference, the Triton kernels and the dispatch share: the grid each mode's DP runs
on (shape, padding, accumulation dtype), the optional Triton import and the one place kernels are
launched from (so a caller can record the launches instead: compile warming, the static sm_90 table).

The algorithm, limits and complexity are in the header of dtw.py.
"""
import contextlib
import dataclasses
import math
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


# The predecessor rules: which of diag (i-1, j-1), up (i-1, j) and left (i, j-1) cell (i, j) of a grid
# ``cols`` wide takes its minimum over. Written once, with & and | only, so the same functions run on
# Python ints (the short kernels' unrolled cells, as Triton constexpr functions), on torch tensors (the
# reference's masks) and on Triton tensors (the long kernels' lanes). A cell with none is a source.
def _diag_rule(i, j, cols, otam):
    return (i >= 1) & (j >= 1)


def _up_rule(i, j, cols, otam):
    # otam: up only in the padded grid's columns 1 and M + 1; row 0 is a cumulative sum along j.
    return (i >= 1) & ((j == 1) | (j == cols - 1)) if otam else i >= 1


def _left_rule(i, j, cols, otam):
    return j >= 1


def _pad_cost(cost, mode):
    """The grid's cost: the cost itself, or for otam one zero column before and after."""
    return torch.nn.functional.pad(cost, (1, 1)) if mode == "otam" else cost


def _accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scale(mode, gamma):
    """The kernels scale costs by log2(e)/γ so the soft-min is exp2/log2 (1 for hard). A Python float,
    passed to an fp64-typed kernel argument and converted to the accumulation dtype in the kernel:
    fp64 costs keep an fp64 γ, and no tensor is made per call."""
    return 1.0 if mode == "hard" else math.log2(math.e) / gamma


if triton is not None:
    _has_diag, _has_up, _has_left = (triton.constexpr_function(rule) for rule in (_diag_rule, _up_rule, _left_rule))
    _diag_lanes, _up_lanes, _left_lanes = (triton.jit(rule) for rule in (_diag_rule, _up_rule, _left_rule))

    @triton.jit
    def _log2(x, FAST_MATH: tl.constexpr):
        # tl.log2 lowers to a ~15-instruction polynomial; lg2.approx (MUFU) is exact to 2^-22 relative.
        if FAST_MATH:
            return libdevice.fast_log2f(x)
        else:
            return tl.log2(x)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


INTERPRETER_BLOCKING = 8


def _threads_per_program(warps):
    """Threads of a ``warps``-warp program: 32 each. Under TRITON_INTERPRET, INTERPRETER_BLOCKING times
    more: the interpreter runs a program's operations with numpy over its whole block, so fewer, larger
    programs run the same arithmetic faster (the kernels do not depend on the block size)."""
    return 32 * warps * (INTERPRETER_BLOCKING if _interpreting() else 1)


def _device_guard(tensor):
    """Launch on the tensor's GPU (inputs on cuda:1 run on cuda:1), not the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()



@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One Triton launch as a launcher issues it: ``kernel[grid](*args, **constexprs, num_warps=...)``.

    pairs_per_program and loop_trips (the trip count of each runtime loop, outermost first) turn the
    instructions one thread executes into instructions per pair (tools/static_sm90.py).
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
