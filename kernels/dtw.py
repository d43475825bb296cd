"""Batched soft / hard / OTAM dynamic time warping over (B, N, M) cost matrices.

Algorithm
    Every mode is one dynamic programme on a grid of cells, each with a cost and a set of
    predecessors among {diag (i-1, j-1), up (i-1, j), left (i, j-1)}:

        R[i, j] = cost[i, j] + smin(R[p] for p in preds(i, j))      (sources: R = cost)

    smin is the hard minimum (``hard``, ties broken diag, then up, then left) or the soft minimum
    ``-γ log Σ exp(-x/γ)`` (``soft``, ``otam``), computed max-shifted so nothing overflows or
    underflows. The value is R at the last cell.

    hard / soft   grid N×M, source (0, 0); predecessors: the 3 neighbours inside the grid.
                  This is classic DTW and Cuturi & Blondel's soft-DTW (ICML 2017): their
                  +inf border rows only ever contribute a zero weight.
    otam          OTAM (Cao et al., CVPR 2020) as re-implemented in few-shot action code: the
                  cost is padded with a zero column before and after (width M+2); column 0 is
                  a source (0); row 0 is a cumulative sum (predecessor: left); rows i >= 1 take
                  {diag, up, left} in columns 1 and M+1 and {diag, left} in columns 2..M.

    Backward: the soft-min of a cell is a softmax-weighted choice of its predecessors (for the
    hard min the weights are the one-hot argmin). Cuturi & Blondel's expected-alignment
    recursion runs in reverse order,

        E[last] = 1,   E[c] = Σ_{s successor of c} E[s] · W[s, direction(c -> s)],

    and dvalue/dcost = E (on the padded grid for otam, sliced back to N×M). The weights are
    probabilities in [0, 1], so the recursion cannot overflow for any γ; for ``hard`` E is the
    indicator of the optimal path (``dtw_path``).

    Path length: the number of cells on the hard optimal path (same tie-break), carried through
    the hard DP as L[c] = 1 + L[argmin predecessor]; ``dtw_with_length`` returns it beside the
    value (soft mode runs the hard DP alongside for it). ``dtw_symmetric`` = dtw(C) + dtw(Cᵀ)
    (OTAM's score): on the short path both DPs run in the same program from one read of C.

    The predecessor rules are written once (dtw_grid.py) and run as they are in the reference (on
    tensors), the short kernels (constexpr, per unrolled cell) and the long kernels (per lane).
    Infinite costs: a cell whose predecessors are all +inf is +inf and passes on no gradient, and
    hard ties among +inf go to the first predecessor the cell has, on every backend: an inf cost
    never turns a value, gradient or path length into NaN (OTAM's padding is built, not derived).

    Similarity input: ``dtw_similarity`` takes s (Q, S, N, M) with any strides (the matchers pass
    the permuted view of their (Q·T, S·T) frame matmul) and the cost C = 1 - s. The short kernels
    read s in place (pair b = q·S + s, two batch strides; q = b // S by multiply-high with a
    launcher-computed magic number), form 1 - s in registers in the accumulation dtype, and the
    backward writes dsim = -dcost in s's layout. Elsewhere 1 - s is materialised once, in the
    accumulation dtype as the kernel forms it.

Implementations (this file: validation, dispatch, custom ops, autograd and the public API)
    dtw_grid.py            the grid of each mode (shape, padding, predecessor rules, accumulation
                           dtype), the Triton handles, and the one launch function (recordable:
                           launch_configs lists a pass's launches for compile warming and tools/static_sm90.py).
    dtw_reference.py       pure torch, vectorised over the batch and over anti-diagonals; float64-safe.
    dtw_short.py           short path (N, M <= SHORT_MAX): one pair per thread, N and M compile-time,
                           the DP unrolled, every row a tuple of registers.
      _dtw_short_fwd_kernel  each thread reads its own pair's rows: where the rows are contiguous
                             and 16-byte aligned (the launcher's VEC) as 16-byte vector loads split
                             in registers (an 8×8 fp32 tile: 16 loads), else one load per element;
                             no shared memory, no barrier. Costs are scaled by log2(e)/γ so the
                             soft-min is exp2/log2 (two exp2 and one log2 per 3-predecessor cell:
                             the minimum's term is exactly 1).
      _dtw_short_bwd_kernel  recomputes R in registers from the cost, then runs the reverse
                             recursion in the same program; nothing per cell is stored between
                             forward and backward (extra memory O(B)). dtw_symmetric's 16-bit
                             gradient: both directions summed in fp32 (a scratch), rounded once.
    dtw_long.py            long path (N or M > SHORT_MAX, up to MAX_KERNEL_WIDTH grid columns):
                           anti-diagonal wavefronts after cuDTW++ (Schmidt & Hundt, Euro-Par 2020).
      _dtw_long_fwd_kernel   L lanes per pair (one thread each, all in one warp), lane l holding
                             K = 8 consecutive grid columns of its row in registers (L·K >= the grid
                             width, L <= 32). At step t lane l computes row t - l of its columns, left
                             to right: up and diag come from its own previous row, and the left
                             neighbour of its first column is lane l-1's last value of the same row,
                             computed one step earlier and passed across lanes (tl.gather along the
                             lane axis: a warp shuffle). N + L - 1 steps; with CHECKPOINTS (only when
                             a gradient is needed) it writes, every S = SEGMENT_ROWS steps, each lane's
                             current row and the value left of it (K + 1 values per lane): the row
                             above the lane's next segment of S rows.
      _dtw_long_bwd_kernel   the reverse recursion on the same tiling, one segment at a time from the
                             last, nothing per cell stored: each lane recomputes its S rows of R from
                             the segment's checkpoint row in registers (all lanes at once: lane l-1's
                             segment starts one row below lane l's, so the left neighbour of lane l's
                             row r is lane l-1's row r - 1, one step earlier), then runs the
                             recursion bottom-up through them, mirrored: right to left, the weights W
                             of a row from R of it and the row above (the forward's arithmetic),
                             lane l+1 handing lane l the E·W_left (this row) and E·W_diag (the row
                             below) of its first column; writes dcost once.
    fp16 / bf16 inputs accumulate (and return values) in fp32; fp64 stays fp64, γ included (the
    kernels take log2(e)/γ as an fp64 argument and convert it to the accumulation dtype).

Limits and complexity
    Time O(B·N·M) cells. Short path: per pair, reads N·M costs and writes one value (and one
    length); the backward reads the cost again and writes N·M gradients. Registers grow with
    N·M in the backward (all of R is kept): 8×8 fits, 16×16 spills (benchmarks/dtw_static_sm90.md).
    dtw_symmetric's backward runs both directions in one program only up to SYMMETRIC_BWD_MAX (8,
    dtw_short.py); beyond, one launch each. Long path: (N + L - 1)·L·K cell updates per pair (about
    N·M, plus the wavefront's fill and drain: L - 1 idle steps per lane), one value exchanged between
    neighbouring lanes per step (two in the backward). The backward runs about twice the forward's
    cell updates (the recompute, then the recursion: ⌈(N + L - 1)/S⌉·S steps each) and reads the cost
    again; the forward with a gradient also writes ⌊(N + L - 2)/S⌋·L·(K + 1) checkpoint values per
    pair (about N'·M'/S: N'×M' the grid, M' = M+2 for otam), which the backward reads once: a 32×32
    fp32 training step moves 14,600 B per pair against the 12,296 B floor, at most 84% of it (32,772 B
    and 37.5% when the forward stored 3 weights per cell). Switch
    point SHORT_MAX = 16, set statically (no GPU timing yet; see benchmarks/dtw_static_sm90.md for
    both paths at 16×16). Offsets are 64-bit everywhere (a batch-innermost layout may pass 2^31
    elements). Grids wider than MAX_KERNEL_WIDTH columns run on the torch reference with a
    DTWFallbackWarning. B = 0 gives an empty result. The similarity input moves the same bytes per
    pair as a cost and saves the elementwise 1 - s pass (2·N·M elements read + written per pair) and
    its negation in the backward; it costs one add per cell and the pair offset arithmetic.

    Compiles and launch overhead: every kernel runs in 1-warp programs (num_warps pinned; a small
    batch spreads over more SMs), and the batch size, S and the strides are not specialised, so a
    variant compiles once per (mode, pass, N, M, dtype) on the short path and per (mode, pass, dtype,
    K, L) on the long path, whatever the batch. Nothing but the outputs is allocated per call: the
    soft-min scale is a kernel argument, dvalue is read with its stride (autograd's expanded ones
    need no copy) and negated in the kernel for dsim, the constexprs are cached per shape.

Dispatch
    ``backend=`` auto | triton | torch; None reads M3NET_DTW_BACKEND (default auto): CUDA
    tensors run Triton, CPU tensors the torch reference. ``triton`` with TRITON_INTERPRET=1 runs
    the Triton kernels on the CPU (this is how CI checks them). Every path goes through two torch
    custom ops, m3net::dtw_forward and m3net::dtw_backward (fake functions + registered autograd),
    so torch.compile(fullgraph=True) / CUDA graphs capture callers without a graph break.
"""
import os
import warnings

import torch

from m3net.errors import ConfigError
from m3net.kernels.dtw_grid import (
    _accumulation_dtype,
    _grid_shape,
    _interpreting,
    _recording,
    recorded_launches,
    triton,
)
from m3net.kernels.dtw_long import _checkpoint_shape, _long_backward, _long_forward
from m3net.kernels.dtw_reference import _reference_backward, _reference_forward
from m3net.kernels.dtw_short import _short_backward, _short_forward

MODES = ("soft", "hard", "otam")
BACKENDS = ("auto", "triton", "torch")
MAX_KERNEL_WIDTH = 256  # grid columns of the long path: 32 lanes of 8 columns, one warp per pair
SHORT_MAX = 16  # N and M up to this run the register-resident short path
BACKEND_ENV = "M3NET_DTW_BACKEND"
PASSES = ("fwd", "fwd (training)", "fwd+length", "fwd symmetric", "bwd", "bwd symmetric")

__all__ = ["dtw", "dtw_reference", "dtw_path", "dtw_with_length", "dtw_symmetric", "dtw_similarity", "cosine_cost",
           "MODES", "MAX_KERNEL_WIDTH", "SHORT_MAX", "DTWFallbackWarning"]


class DTWFallbackWarning(UserWarning):
    """A Triton-bound input ran on the torch reference (shown once per call site by default)."""


def _uses_short_path(backend, n, m):
    return backend == "triton" and n <= SHORT_MAX and m <= SHORT_MAX


# --------------------------------------------------------------------------------------------
# Launcher: validation and dispatch
# --------------------------------------------------------------------------------------------
def _validate(cost, mode, gamma, similarity=False):
    name, shape, dims = ("dtw_similarity", "(Q, S, N, M)", 4) if similarity else ("dtw", "(B, N, M)", 3)
    if not isinstance(cost, torch.Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor of shape {shape}, got {type(cost).__name__}")
    if cost.dim() != dims:
        raise ValueError(f"{name}: input must have shape {shape} ({dims} dims), got {tuple(cost.shape)}")
    if not cost.dtype.is_floating_point:
        raise TypeError(f"{name}: input must be a floating dtype (float16/bfloat16/float32/float64), got {cost.dtype}")
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
    if mode != "hard" and not gamma > 0:
        raise ValueError(f"{name}: gamma must be > 0 for mode={mode!r}, got {gamma}")
    if cost.numel() == 0 and cost.shape[:-2].numel() > 0:
        raise ValueError(f"{name}: N and M must be >= 1, got input of shape {tuple(cost.shape)}")


def _backend_for(cost, mode, requested):
    """'triton' or 'torch' for this input; ``requested`` None reads M3NET_DTW_BACKEND."""
    source = "backend" if requested is not None else BACKEND_ENV
    if requested is None:
        requested = os.environ.get(BACKEND_ENV, "auto")
    requested = str(requested).lower()
    if requested not in BACKENDS:
        raise ConfigError(f"dtw: {source}={requested!r}: expected one of {', '.join(BACKENDS)}")
    if requested == "torch" or (requested == "auto" and not cost.is_cuda):
        return "torch"
    if triton is None:
        if requested == "triton":
            raise ConfigError(f"dtw: {source}=triton but triton is not installed (pip install triton)")
        return "torch"
    if not cost.is_cuda and not _interpreting() and not _recording():  # a recorded call launches nothing
        raise ConfigError(
            f"dtw: {source}=triton on a {cost.device} tensor needs TRITON_INTERPRET=1 "
            "(set before m3net.kernels is imported) or a CUDA tensor"
        )
    n, m = cost.shape[-2:]
    _, cols = _grid_shape(mode, n, m)
    if not _uses_short_path("triton", n, m) and cols > MAX_KERNEL_WIDTH:
        # stacklevel 4: _backend_for <- _run <- the public function <- the caller's line.
        warnings.warn(
            f"dtw: grid width {cols} exceeds the Triton kernel's limit of {MAX_KERNEL_WIDTH} "
            "columns; falling back to the torch reference (slower).",
            DTWFallbackWarning,
            stacklevel=4,
        )
        return "torch"
    return "triton"


def _path_length(cost, backend):
    """Cells on the hard optimal path, from the hard DP's backward (paths without the short kernel)."""
    if backend == "triton":
        _, checkpoints = _long_forward(cost, "hard", 0.0, checkpoints=True)
        acc = _accumulation_dtype(cost.dtype)
        ones = torch.ones(cost.shape[0], dtype=acc, device=cost.device)
        return _long_backward(cost, checkpoints, ones, "hard", 0.0, acc).sum(dim=(1, 2))
    _, weights = _reference_forward(cost, "hard", 0.0)
    return _reference_backward(weights, "hard", cost.shape[1], cost.shape[2]).sum(dim=(1, 2))


# --------------------------------------------------------------------------------------------
# Custom ops: forward and backward as torch.library ops, so torch.compile / CUDA graphs capture
# the DTW as one opaque node (no graph break, no tracing into Triton launches or the reference's
# Python loop). The register_fake functions give Dynamo / AOTAutograd the output metadata.
# --------------------------------------------------------------------------------------------
def _forward_outputs_meta(cost, mode, backend, with_length, similarity, for_backward):
    """{name: (shape, dtype)} of m3net::dtw_forward's outputs; unused outputs are empty (0,)."""
    batch = cost.shape[0] * cost.shape[1] if similarity else cost.shape[0]
    n, m = cost.shape[-2:]
    acc = _accumulation_dtype(cost.dtype)
    saved = (0,)  # the short backward recomputes R from the cost alone
    if for_backward and backend == "torch":
        saved = (batch, *_grid_shape(mode, n, m), 3)  # the reference's predecessor weights
    elif for_backward and not _uses_short_path(backend, n, m):
        saved = _checkpoint_shape(batch, mode, n, m)  # the long path's checkpoint rows
    return {"value": ((batch,), acc), "length": ((batch if with_length else 0,), acc), "saved": (saved, acc)}


@torch.library.custom_op("m3net::dtw_forward", mutates_args=())
def _dtw_forward_op(cost: torch.Tensor, mode: str, gamma: float, backend: str, with_length: bool, symmetric: bool,
                    similarity: bool, for_backward: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value (B,), hard path length (B,) or (0,), what the backward needs besides the input or (0,)).

    ``backend`` is resolved ('triton' | 'torch'). ``symmetric`` and ``similarity`` come only with the
    short path (_run falls back to two calls / a materialised 1 - s elsewhere). ``for_backward``: a
    gradient will be needed; the long path then stores its checkpoint rows, the reference its weights.
    """
    length = saved = None
    if _uses_short_path(backend, *cost.shape[-2:]):
        value, length = _short_forward(cost, mode, gamma, with_length, symmetric, similarity)
    else:
        if backend == "triton":
            value, saved = _long_forward(cost, mode, gamma, checkpoints=for_backward)
        else:
            value, saved = _reference_forward(cost, mode, gamma, store_weights=for_backward)
        value = value.contiguous()  # the reference's value is a strided view of its DP buffer
        if with_length:
            length = _path_length(cost, backend)
    # An op's outputs may not alias each other: a fresh empty tensor for each unused one.
    return value, *(cost.new_empty(0, dtype=value.dtype) if t is None else t for t in (length, saved))


@_dtw_forward_op.register_fake
def _(cost, mode, gamma, backend, with_length, symmetric, similarity, for_backward):
    meta = _forward_outputs_meta(cost, mode, backend, with_length, similarity, for_backward)
    return tuple(cost.new_empty(shape, dtype=dtype) for shape, dtype in meta.values())


@torch.library.custom_op("m3net::dtw_backward", mutates_args=())
def _dtw_backward_op(cost: torch.Tensor, saved: torch.Tensor, grad_out: torch.Tensor, mode: str, gamma: float,
                     backend: str, symmetric: bool, similarity: bool, n: int, m: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """d(Σ grad_out · value)/d input. The Triton backwards recompute R from the input ``cost`` (the long
    path a segment at a time, from the checkpoint rows in ``saved``); the reference reads the predecessor
    weights in ``saved`` (grid (B, N, M') x 3) and ignores ``cost``."""
    if _uses_short_path(backend, n, m):
        return _short_backward(cost, grad_out, mode, gamma, symmetric, similarity)
    if backend == "triton":
        return _long_backward(cost, saved, grad_out, mode, gamma, dtype)
    return (_reference_backward(saved, mode, n, m) * grad_out.to(saved.dtype)[:, None, None]).to(dtype)


@_dtw_backward_op.register_fake
def _(cost, saved, grad_out, mode, gamma, backend, symmetric, similarity, n, m, dtype):
    if _uses_short_path(backend, n, m):
        return torch.empty_like(cost) if similarity else cost.new_empty(cost.shape)
    return saved.new_empty(grad_out.shape[0], n, m, dtype=dtype)


def _setup_dtw_context(ctx, inputs, output):
    cost, mode, gamma, backend, _with_length, symmetric, similarity, _for_backward = inputs
    ctx.args = (mode, gamma, backend, symmetric, similarity, *cost.shape[-2:], cost.dtype)
    # Triton: the input (its backwards recompute R) and the long path's checkpoints; the reference: its
    # weights alone (the op's cost argument is then a stand-in, unread).
    ctx.save_for_backward(cost if backend == "triton" else output[2], output[2])


def _dtw_op_backward(ctx, grad_value, _grad_length, _grad_saved):
    cost, saved = ctx.saved_tensors
    return (torch.ops.m3net.dtw_backward(cost, saved, grad_value, *ctx.args),) + (None,) * 7


_dtw_forward_op.register_autograd(_dtw_op_backward, setup_context=_setup_dtw_context)


def _run(cost, mode, gamma, backend, with_length=False, symmetric=False, similarity=False):
    """Validation, dispatch and the op call: value (B,) [, length (B,), no gradient]; B = Q·S for a similarity."""
    _validate(cost, mode, gamma, similarity)
    backend = _backend_for(cost, mode, backend)
    if similarity and not _uses_short_path(backend, *cost.shape[-2:]):
        # Only the short kernel folds 1 - s into its load; elsewhere the cost is materialised (one copy),
        # in the accumulation dtype as the kernel forms it (a 16-bit 1 - s would round where it does not).
        cost, similarity = (1 - cost.to(_accumulation_dtype(cost.dtype))).flatten(0, 1), False
    if cost.numel() == 0:
        value = cost.sum(dim=(-2, -1)).flatten().to(_accumulation_dtype(cost.dtype))  # (0,), still in cost's graph
        return (value, value.detach()) if with_length else value
    if symmetric and not _uses_short_path(backend, *cost.shape[-2:]):
        # Two calls on one accumulation-dtype copy: their gradients add there, rounded to a 16-bit cost once.
        cost = cost.to(_accumulation_dtype(cost.dtype))
        return _run(cost, mode, gamma, backend) + _run(cost.transpose(1, 2), mode, gamma, backend)
    for_backward = cost.requires_grad and torch.is_grad_enabled()
    value, length, _ = torch.ops.m3net.dtw_forward(cost, mode, float(gamma), backend, with_length, symmetric,
                                                   similarity, for_backward)
    return (value, length.detach()) if with_length else value


def dtw(cost, mode="soft", gamma=0.1, backend=None):
    """DTW value of each cost matrix: (B, N, M) -> (B,), differentiable w.r.t. ``cost``.

    mode: ``soft`` (soft-DTW, smoothing ``gamma``), ``hard`` (classic DTW; gamma unused) or
    ``otam`` (OTAM's padded soft-DTW; the symmetric OTAM score is dtw(C) + dtw(Cᵀ)).
    backend: auto | triton | torch; None reads M3NET_DTW_BACKEND (default auto: Triton on CUDA
    tensors, torch reference on CPU). Values are fp32 for 16-bit costs (fp64 for fp64).
    """
    return _run(cost, mode, gamma, backend)


def dtw_reference(cost, mode="soft", gamma=0.1):
    """Same as :func:`dtw`, always on the pure-torch implementation (float64-safe)."""
    return _run(cost, mode, gamma, "torch")


def dtw_symmetric(cost, mode="otam", gamma=0.1, backend=None):
    """dtw(C) + dtw(Cᵀ) for each cost matrix (OTAM's symmetric score), differentiable.

    On the short Triton path both directions run in one launch from one read of the cost.
    """
    return _run(cost, mode, gamma, backend, symmetric=True)


def dtw_with_length(cost, mode="hard", gamma=0.1, backend=None):
    """(value, path length): the DTW value (differentiable, as :func:`dtw`) and the number of cells
    on the hard optimal path (float, no gradient), from one pass over the cost on the short path.

    For ``hard``, value / length is the mean cost along the optimal path,
    ``(cost * dtw_path(cost)).sum() / length``. Modes: soft, hard.
    """
    if mode not in ("soft", "hard"):
        raise ValueError(f"dtw_with_length: mode must be 'soft' or 'hard', got {mode!r}")
    return _run(cost, mode, gamma, backend, with_length=True)


def dtw_similarity(sim, mode="soft", gamma=0.1, backend=None, with_length=False, symmetric=False):
    """DTW of the cost 1 - s for every pair of a similarity (Q, S, N, M) -> (Q, S), differentiable w.r.t. ``sim``.

    ``sim`` may have any strides: the (Q, S, T, T) view of a (Q·T, S·T) frame-similarity matmul,
    ``mm.view(Q, T, S, T).transpose(1, 2)``, is read in place (two batch strides) and 1 - s is formed
    in registers, so no cost tensor is written. Equal to ``dtw(1 - sim.flatten(0, 1))`` (and to
    dtw_with_length / dtw_symmetric with the flags), reshaped to (Q, S); off the short Triton path
    (CPU, N or M > SHORT_MAX) it is computed that way. The gradient is -dvalue/dcost, laid out like
    ``sim`` where that is dense.

    with_length: also the hard optimal path's length (Q, S), no gradient (modes soft, hard).
    symmetric: dtw(C) + dtw(Cᵀ) of C = 1 - s (OTAM's score); not with with_length.
    """
    if with_length and (symmetric or mode not in ("soft", "hard")):
        raise ValueError(f"dtw_similarity: with_length needs mode 'soft' or 'hard' and symmetric=False, "
                         f"got mode={mode!r}, symmetric={symmetric}")
    out = _run(sim, mode, gamma, backend, with_length, symmetric, similarity=True)
    pairs = sim.shape[:2]
    return tuple(o.view(pairs) for o in out) if with_length else out.view(pairs)


def dtw_path(cost, backend=None):
    """Hard-DTW optimal path of each cost matrix: (B, N, M) -> bool (B, N, M).

    Ties break diagonal first, then (i-1, j), then (i, j-1), on every backend.
    """
    if cost.shape[0] == 0:
        return torch.zeros(cost.shape, dtype=torch.bool, device=cost.device)
    with torch.enable_grad():
        leaf = cost.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(dtw(leaf, mode="hard", backend=backend).sum(), leaf)
    return grad > 0.5  # the backward of hard DTW is the 0/1 path indicator


def cosine_cost(x, y, eps=1e-8):
    """1 - cos(x_i, y_j): x (B, N, D), y (B, M, D) -> (B, N, M)."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"cosine_cost: expected x (B, N, D) and y (B, M, D), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    x = torch.nn.functional.normalize(x, dim=-1, eps=eps)
    y = torch.nn.functional.normalize(y, dim=-1, eps=eps)
    return 1 - x @ y.transpose(1, 2)  # (B, N, M)


def launch_configs(mode, n, m, pass_="fwd", dtype=torch.float32, similarity=False, device="cpu", batch=4096):
    """The Triton launches (dtw_grid.KernelLaunch: kernel, grid, args, constexprs, num_warps) that one
    call issues for ``batch`` pairs of N x M ``dtype`` inputs, recorded from the launchers themselves.

    pass_ (PASSES): fwd = dtw / dtw_similarity without a gradient; fwd (training) = the same on an
    input that requires one (the long path then stores its checkpoint rows); fwd+length = dtw_with_length /
    with_length=True; fwd symmetric = dtw_symmetric / symmetric=True; bwd / bwd symmetric = the
    backward of fwd (training) / fwd symmetric. similarity: the (Q, S, N, M) view of a (Q·N, S·M) frame
    matmul (S = 5) as the matchers pass it. Nothing runs: the static sm_90 table compiles these launches
    and a GPU session can warm its compiles with ``launch.warmup()``.
    """
    if pass_ not in PASSES:
        raise ValueError(f"launch_configs: pass_ must be one of {PASSES}, got {pass_!r}")
    if similarity:
        supports = 5
        x = torch.zeros(-(-batch // supports) * n, supports * m, dtype=dtype, device=device)
        x = x.view(-1, n, supports, m).transpose(1, 2)  # (Q, S, N, M)
    else:
        x = torch.zeros(batch, n, m, dtype=dtype, device=device)
    x.requires_grad_(pass_ != "fwd")
    flags = {"with_length": pass_ == "fwd+length", "symmetric": pass_.endswith("symmetric")}
    with recorded_launches() as forward:
        with torch.set_grad_enabled(x.requires_grad):
            out = _run(x, mode, 0.1, "triton", similarity=similarity, **flags)
    if not pass_.startswith("bwd"):
        return forward
    value = out[0] if flags["with_length"] else out
    with recorded_launches() as backward:
        torch.autograd.grad(value.sum(), x)
    return backward
