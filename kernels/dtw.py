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
    hard min the weights are the one-hot argmin). The forward stores those weights W (3 per
    cell); the backward runs Cuturi & Blondel's expected-alignment recursion in reverse order,

        E[last] = 1,   E[c] = Σ_{s successor of c} E[s] · W[s, direction(c -> s)],

    and dvalue/dcost = E (on the padded grid for otam, sliced back to N×M). The weights are
    probabilities in [0, 1], so the recursion cannot overflow for any γ; for ``hard`` E is the
    indicator of the optimal path (``dtw_path``).

Implementations
    dtw_reference    pure torch, vectorised over the batch and over anti-diagonals; float64-safe.
    _dtw_fwd_kernel  Triton: BLOCK_B pairs per program, one lane per pair; the previous DP row is
                     a (BLOCK_B, BLOCK_M) register tile, the current cell's neighbours are carried
                     in registers; every cost element is read once and one value written per pair.
                     With STORE_WEIGHTS (only when a gradient is needed) it also writes W.
    _dtw_bwd_kernel  Triton: the reverse recursion, the next DP row of E in a register tile; reads
                     W and writes dcost once.
    fp16 / bf16 inputs accumulate in fp32; fp64 stays fp64.

Limits and complexity
    Time O(B·N·M) cells; the register tile makes each cell O(BLOCK_M) lane-parallel operations,
    so the kernel is meant for the short sequences of few-shot video (T = 8 .. 64).
    Memory: forward reads B·N·M cost and writes B values; with a gradient it also writes
    W = 3·B·N'·M' fp32 (N'×M' the grid, M' = M+2 for otam) which the backward reads once.
    The kernel handles grid widths up to MAX_KERNEL_WIDTH columns (any N); wider inputs fall
    back to the torch reference with one warning. B = 0 gives an empty result.

Dispatch
    CUDA tensors run the Triton kernel, CPU tensors the torch reference;
    M3NET_DTW_BACKEND=auto|triton|torch forces one. ``triton`` with TRITON_INTERPRET=1 runs the
    Triton kernel on the CPU (this is how CI checks it).
"""
import functools
import os
import warnings

import torch

try:  # Triton is optional: without it every input runs on the torch reference.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

MODES = ("soft", "hard", "otam")
MAX_KERNEL_WIDTH = 256  # grid columns held in one register tile row
BACKEND_ENV = "M3NET_DTW_BACKEND"

__all__ = ["dtw", "dtw_reference", "dtw_path", "cosine_cost", "MODES", "MAX_KERNEL_WIDTH"]


# --------------------------------------------------------------------------------------------
# Grid description shared by the reference and the kernel
# --------------------------------------------------------------------------------------------
def _grid_shape(mode, n, m):
    return (n, m + 2) if mode == "otam" else (n, m)


def _pad_cost(cost, mode):
    """The grid's cost: the cost itself, or for otam one zero column before and after."""
    return torch.nn.functional.pad(cost, (1, 1)) if mode == "otam" else cost


@functools.lru_cache(maxsize=256)
def _predecessor_mask(mode, rows, cols):
    """(rows, cols, 3) bool: which of diag / up / left each cell takes its minimum over."""
    i = torch.arange(rows).view(-1, 1).expand(rows, cols)
    j = torch.arange(cols).view(1, -1).expand(rows, cols)
    if mode == "otam":
        diag = (i >= 1) & (j >= 1)
        up = (i >= 1) & ((j == 1) | (j == cols - 1))
    else:
        diag = (i >= 1) & (j >= 1)
        up = i >= 1
    left = j >= 1
    return torch.stack([diag, up, left], dim=-1)


@functools.lru_cache(maxsize=256)
def _wavefront_plan(mode, rows, cols):
    """Per anti-diagonal i + j = d: (cells (L,), predecessor indices (L, 3)) into a flat R.

    R is the flat grid followed by two virtual cells: ZERO (value 0), the single predecessor of
    every source, and INF (value +inf), standing in for predecessors a cell does not have. The
    soft-min over {0} is exactly 0 and +inf gets weight 0, so no cell needs a special case.
    """
    size = rows * cols
    zero, inf = size, size + 1
    mask = _predecessor_mask(mode, rows, cols).reshape(size, 3)
    flat = torch.arange(size)
    i, j = flat // cols, flat % cols
    preds = torch.stack([flat - cols - 1, flat - cols, flat - 1], dim=-1)
    preds = torch.where(mask, preds, torch.full_like(preds, inf))
    is_source = ~mask.any(dim=-1)
    preds[is_source, 0] = zero
    return [(flat[(i + j) == d], preds[(i + j) == d]) for d in range(rows + cols - 1)]


def _accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Torch reference
# --------------------------------------------------------------------------------------------
def _reference_forward(cost, mode, gamma, store_weights=True):
    """Returns (value (B,), weights (B, rows, cols, 3) or None), in the accumulation dtype.

    Vectorised over the batch and over each anti-diagonal (all its cells are independent).
    """
    grid_cost = _pad_cost(cost.to(_accumulation_dtype(cost.dtype)), mode)  # (B, rows, cols)
    batch, rows, cols = grid_cost.shape
    flat_cost = grid_cost.reshape(batch, rows * cols)
    R = flat_cost.new_zeros(batch, rows * cols + 2)
    R[:, -1] = float("inf")  # the INF virtual cell; ZERO (index rows*cols) stays 0
    W = flat_cost.new_zeros(batch, rows * cols, 3) if store_weights else None
    for cells, preds in _wavefront_plan(mode, rows, cols):
        cells, preds = cells.to(cost.device), preds.to(cost.device)
        values = R[:, preds]  # (B, L, 3), at least one finite per cell
        if mode == "hard":
            best = values.argmin(dim=-1, keepdim=True)  # first minimum: diag, up, left tie-break
            smin = values.gather(-1, best).squeeze(-1)
            weights = torch.zeros_like(values).scatter_(-1, best, 1.0) if store_weights else None
        else:
            shift = values.amin(dim=-1, keepdim=True)
            scaled = (shift - values) / gamma  # <= 0: exp never overflows
            lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
            smin = (shift - gamma * lse).squeeze(-1)
            weights = torch.exp(scaled - lse) if store_weights else None
        R[:, cells] = flat_cost[:, cells] + smin
        if store_weights:
            W[:, cells] = weights
    value = R[:, rows * cols - 1]
    return value, (W.view(batch, rows, cols, 3) if store_weights else None)


def _reference_backward(weights, mode, n, m):
    """dvalue/dcost (B, N, M) from the stored predecessor weights (expected alignment E).

    Reverse wavefront: once a diagonal's E is final, each cell pushes E·W to its predecessors.
    """
    batch, rows, cols, _ = weights.shape
    flat_w = weights.reshape(batch, rows * cols, 3)
    E = flat_w.new_zeros(batch, rows * cols + 2)  # + the ZERO / INF virtual cells (ignored)
    E[:, rows * cols - 1] = 1
    for cells, preds in reversed(_wavefront_plan(mode, rows, cols)):
        cells, preds = cells.to(weights.device), preds.to(weights.device)
        push = E[:, cells, None] * flat_w[:, cells]  # (B, L, 3)
        E.index_add_(1, preds.reshape(-1), push.reshape(batch, -1))
    grad = E[:, : rows * cols].view(batch, rows, cols)
    return grad[:, :, 1 : m + 1] if mode == "otam" else grad


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _soft_min3(a, b, c, has_a, has_b, has_c, gamma, HARD: tl.constexpr):
        """Soft (or hard) minimum of up to three values and each one's weight.

        a, b, c are (diag, up, left); a missing predecessor has has_* false. Hard ties go to
        the earlier argument. A cell with no predecessor returns min 0 and weights 0.
        """
        inf = float("inf")
        a = tl.where(has_a, a, inf)
        b = tl.where(has_b, b, inf)
        c = tl.where(has_c, c, inf)
        lo = tl.minimum(tl.minimum(a, b), c)
        any_pred = has_a | has_b | has_c
        if HARD:
            take_a = has_a & (a <= b) & (a <= c)
            take_b = (~take_a) & has_b & (b <= c)
            take_c = (~take_a) & (~take_b) & has_c
            wa = tl.where(take_a, 1.0, 0.0)
            wb = tl.where(take_b, 1.0, 0.0)
            wc = tl.where(take_c, 1.0, 0.0)
            smin = lo
        else:
            shift = tl.where(any_pred, lo, 0.0)
            ea = tl.where(has_a, tl.exp((shift - a) / gamma), 0.0)
            eb = tl.where(has_b, tl.exp((shift - b) / gamma), 0.0)
            ec = tl.where(has_c, tl.exp((shift - c) / gamma), 0.0)
            total = tl.where(any_pred, ea + eb + ec, 1.0)  # >= 1: the minimum contributes exp(0)
            smin = shift - gamma * tl.log(total)
            wa = ea / total
            wb = eb / total
            wc = ec / total
        smin = tl.where(any_pred, smin, 0.0)
        return smin, wa, wb, wc

    @triton.jit
    def _has_predecessors(i, j, cols, OTAM: tl.constexpr):
        """Which of diag / up / left cell (i, j) of the grid takes its minimum over."""
        if OTAM:
            soft_row = i >= 1
            has_diag = soft_row & (j >= 1)
            has_up = soft_row & ((j == 1) | (j == cols - 1))
            has_left = j >= 1
        else:
            has_diag = (i >= 1) & (j >= 1)
            has_up = i >= 1
            has_left = j >= 1
        return has_diag, has_up, has_left

    @triton.jit
    def _dtw_fwd_kernel(
        cost_ptr, out_ptr, w_ptr,
        B, N, M, stride_b, stride_n, stride_m,
        gamma,
        OTAM: tl.constexpr, HARD: tl.constexpr, STORE_WEIGHTS: tl.constexpr,
        ACC_DTYPE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        pid = tl.program_id(0)
        pairs = pid * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
        live = pairs < B
        pairs64 = pairs.to(tl.int64)
        cols_idx = tl.arange(0, BLOCK_M)  # (BLOCK_M,)
        cols = M + 2 if OTAM else M
        rows = N
        inf = float("inf")
        # Lane-shaped zero: scalar conditions are broadcast to lanes before they meet a mask
        # (the interpreter rejects a tensor & Python-bool mask).
        lane0 = tl.zeros((BLOCK_B,), tl.int32)
        prev_row = tl.full((BLOCK_B, BLOCK_M), inf, ACC_DTYPE)  # R[i-1, :]
        for i in range(0, rows):
            row = tl.full((BLOCK_B, BLOCK_M), inf, ACC_DTYPE)
            left = tl.full((BLOCK_B,), inf, ACC_DTYPE)  # R[i, j-1]
            diag = tl.full((BLOCK_B,), inf, ACC_DTYPE)  # R[i-1, j-1]
            for j in range(0, cols):
                up = tl.sum(tl.where(cols_idx[None, :] == j, prev_row, 0.0), axis=1)  # R[i-1, j]
                has_diag, has_up, has_left = _has_predecessors(lane0 + i, lane0 + j, cols, OTAM)
                smin, wd, wu, wl = _soft_min3(diag, up, left, has_diag, has_up, has_left, gamma, HARD)
                if OTAM:  # padded columns 0 and M+1 have cost 0
                    c_mask = live & (lane0 + j >= 1) & (lane0 + j <= M)
                    c_off = pairs64 * stride_b + i * stride_n + (j - 1) * stride_m
                else:
                    c_mask = live
                    c_off = pairs64 * stride_b + i * stride_n + j * stride_m
                c = tl.load(cost_ptr + c_off, mask=c_mask, other=0.0).to(ACC_DTYPE)
                value = c + smin
                if STORE_WEIGHTS:
                    w_off = ((pairs64 * rows + i) * cols + j) * 3
                    tl.store(w_ptr + w_off, wd, mask=live)
                    tl.store(w_ptr + w_off + 1, wu, mask=live)
                    tl.store(w_ptr + w_off + 2, wl, mask=live)
                row = tl.where(cols_idx[None, :] == j, value[:, None], row)
                diag = up
                left = value
            prev_row = row
        last = tl.sum(tl.where(cols_idx[None, :] == cols - 1, prev_row, 0.0), axis=1)
        tl.store(out_ptr + pairs64, last, mask=live)

    @triton.jit
    def _dtw_bwd_kernel(
        w_ptr, grad_out_ptr, grad_ptr,
        B, N, M, stride_gb, stride_gn, stride_gm,
        OTAM: tl.constexpr, ACC_DTYPE: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        pid = tl.program_id(0)
        pairs = pid * BLOCK_B + tl.arange(0, BLOCK_B)
        live = pairs < B
        pairs64 = pairs.to(tl.int64)
        cols_idx = tl.arange(0, BLOCK_M)
        cols = M + 2 if OTAM else M
        rows = N
        g = tl.load(grad_out_ptr + pairs64, mask=live, other=0.0).to(ACC_DTYPE)
        lane0 = tl.zeros((BLOCK_B,), tl.int32)
        next_row = tl.zeros((BLOCK_B, BLOCK_M), ACC_DTYPE)  # E[i+1, :]
        for ii in range(0, rows):
            i = rows - 1 - ii
            row = tl.zeros((BLOCK_B, BLOCK_M), ACC_DTYPE)
            right = tl.zeros((BLOCK_B,), ACC_DTYPE)  # E[i, j+1]
            below_right = tl.zeros((BLOCK_B,), ACC_DTYPE)  # E[i+1, j+1]
            for jj in range(0, cols):
                j = cols - 1 - jj
                below = tl.sum(tl.where(cols_idx[None, :] == j, next_row, 0.0), axis=1)  # E[i+1, j]
                has_below = live & (lane0 + i + 1 < rows)
                has_right = live & (lane0 + j + 1 < cols)
                base_below = ((pairs64 * rows + (i + 1)) * cols + j) * 3
                base_right = ((pairs64 * rows + i) * cols + (j + 1)) * 3
                # W[cell, 0|1|2] = weight of its diag | up | left predecessor.
                w_diag = tl.load(w_ptr + base_below + 3 + 0, mask=has_below & has_right, other=0.0)
                w_up = tl.load(w_ptr + base_below + 1, mask=has_below, other=0.0)
                w_left = tl.load(w_ptr + base_right + 2, mask=has_right, other=0.0)
                e = below_right * w_diag + below * w_up + right * w_left
                e = tl.where((lane0 + i == rows - 1) & (lane0 + j == cols - 1), 1.0, e)
                if OTAM:  # only columns 1..M of the padded grid are real costs
                    g_mask = live & (lane0 + j >= 1) & (lane0 + j <= M)
                    g_off = pairs64 * stride_gb + i * stride_gn + (j - 1) * stride_gm
                else:
                    g_mask = live
                    g_off = pairs64 * stride_gb + i * stride_gn + j * stride_gm
                tl.store(grad_ptr + g_off, (e * g).to(grad_ptr.dtype.element_ty), mask=g_mask)
                row = tl.where(cols_idx[None, :] == j, e[:, None], row)
                right = e
                below_right = below
            next_row = row


def _triton_block_sizes(cols):
    block_m = max(triton.next_power_of_2(cols), 2)
    block_b = max(16, min(128, 4096 // block_m))
    return block_b, block_m


def _triton_acc_dtype(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _triton_forward(cost, mode, gamma, store_weights):
    batch, n, m = cost.shape
    rows, cols = _grid_shape(mode, n, m)
    acc = _accumulation_dtype(cost.dtype)
    out = torch.empty(batch, dtype=acc, device=cost.device)
    weights = torch.empty(batch, rows, cols, 3, dtype=acc, device=cost.device) if store_weights else out
    block_b, block_m = _triton_block_sizes(cols)
    grid = (triton.cdiv(batch, block_b),)
    _dtw_fwd_kernel[grid](
        cost, out, weights, batch, n, m, cost.stride(0), cost.stride(1), cost.stride(2), float(gamma),
        OTAM=mode == "otam", HARD=mode == "hard", STORE_WEIGHTS=store_weights,
        ACC_DTYPE=_triton_acc_dtype(cost.dtype), BLOCK_B=block_b, BLOCK_M=block_m,
    )
    return out, (weights if store_weights else None)


def _triton_backward(weights, grad_out, mode, n, m, dtype):
    batch = weights.shape[0]
    _, cols = _grid_shape(mode, n, m)
    grad = torch.empty(batch, n, m, dtype=dtype, device=weights.device)
    block_b, block_m = _triton_block_sizes(cols)
    grid = (triton.cdiv(batch, block_b),)
    _dtw_bwd_kernel[grid](
        weights, grad_out.contiguous(), grad, batch, n, m, grad.stride(0), grad.stride(1), grad.stride(2),
        OTAM=mode == "otam", ACC_DTYPE=_triton_acc_dtype(weights.dtype), BLOCK_B=block_b, BLOCK_M=block_m,
    )
    return grad


# --------------------------------------------------------------------------------------------
# Launcher: validation and dispatch
# --------------------------------------------------------------------------------------------
_warned_fallback = False


def _validate(cost, mode, gamma):
    if not isinstance(cost, torch.Tensor):
        raise TypeError(f"dtw: cost must be a torch.Tensor of shape (B, N, M), got {type(cost).__name__}")
    if cost.dim() != 3:
        raise ValueError(f"dtw: cost must have shape (B, N, M) (3 dims), got {tuple(cost.shape)}")
    if not cost.dtype.is_floating_point:
        raise TypeError(f"dtw: cost must be a floating dtype (float16/bfloat16/float32/float64), got {cost.dtype}")
    if mode not in MODES:
        raise ValueError(f"dtw: mode must be one of {MODES}, got {mode!r}")
    if mode != "hard" and not gamma > 0:
        raise ValueError(f"dtw: gamma must be > 0 for mode={mode!r}, got {gamma}")
    if cost.shape[0] > 0 and (cost.shape[1] < 1 or cost.shape[2] < 1):
        raise ValueError(f"dtw: N and M must be >= 1, got cost of shape {tuple(cost.shape)}")


def _backend_for(cost, mode):
    """'triton' or 'torch' for this input, honouring M3NET_DTW_BACKEND."""
    global _warned_fallback
    requested = os.environ.get(BACKEND_ENV, "auto").lower()
    if requested not in ("auto", "triton", "torch"):
        raise ValueError(f"{BACKEND_ENV}={requested!r}: expected auto, triton or torch")
    if requested == "torch":
        return "torch"
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    wants_triton = requested == "triton" or (requested == "auto" and cost.is_cuda)
    if not wants_triton:
        return "torch"
    if triton is None:
        if requested == "triton":
            raise RuntimeError(f"{BACKEND_ENV}=triton but triton is not installed (pip install triton)")
        return "torch"
    if not cost.is_cuda and not interpret:
        raise RuntimeError(
            f"{BACKEND_ENV}=triton on a {cost.device} tensor needs TRITON_INTERPRET=1 "
            "(set before m3net.kernels is imported) or a CUDA tensor"
        )
    _, cols = _grid_shape(mode, cost.shape[1], cost.shape[2])
    if cols > MAX_KERNEL_WIDTH:
        if not _warned_fallback:
            warnings.warn(
                f"dtw: grid width {cols} exceeds the Triton kernel's limit of {MAX_KERNEL_WIDTH} "
                "columns; falling back to the torch reference (slower).",
                stacklevel=3,
            )
            _warned_fallback = True
        return "torch"
    return "triton"


class _DTWFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost, mode, gamma, backend):
        needs_grad = ctx.needs_input_grad[0]
        if backend == "triton":
            value, weights = _triton_forward(cost, mode, gamma, store_weights=needs_grad)
        else:
            value, weights = _reference_forward(cost, mode, gamma, store_weights=needs_grad)
        ctx.mode, ctx.backend, ctx.n, ctx.m, ctx.dtype = mode, backend, cost.shape[1], cost.shape[2], cost.dtype
        if needs_grad:
            ctx.save_for_backward(weights)
        return value.to(cost.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (weights,) = ctx.saved_tensors
        if ctx.backend == "triton":
            grad = _triton_backward(weights, grad_out.to(weights.dtype), ctx.mode, ctx.n, ctx.m, ctx.dtype)
        else:
            grad = _reference_backward(weights, ctx.mode, ctx.n, ctx.m) * grad_out.to(weights.dtype)[:, None, None]
            grad = grad.to(ctx.dtype)
        return grad, None, None, None


def _run(cost, mode, gamma, backend=None):
    _validate(cost, mode, gamma)
    if cost.shape[0] == 0:
        return cost.sum(dim=(1, 2))  # empty (0,), still attached to cost's graph
    return _DTWFunction.apply(cost, mode, float(gamma), backend or _backend_for(cost, mode))


def dtw(cost, mode="soft", gamma=0.1):
    """DTW value of each cost matrix: (B, N, M) -> (B,), differentiable w.r.t. ``cost``.

    mode: ``soft`` (soft-DTW, smoothing ``gamma``), ``hard`` (classic DTW; gamma unused) or
    ``otam`` (OTAM's padded soft-DTW; the symmetric OTAM score is dtw(C) + dtw(Cᵀ)).
    Triton on CUDA tensors, torch reference on CPU (see M3NET_DTW_BACKEND).
    """
    return _run(cost, mode, gamma)


def dtw_reference(cost, mode="soft", gamma=0.1):
    """Same as :func:`dtw`, always on the pure-torch implementation (float64-safe)."""
    return _run(cost, mode, gamma, "torch")


def dtw_path(cost):
    """Hard-DTW optimal path of each cost matrix: (B, N, M) -> bool (B, N, M).

    Ties break diagonal first, then (i-1, j), then (i, j-1), on every backend.
    """
    if cost.shape[0] == 0:
        return torch.zeros(cost.shape, dtype=torch.bool, device=cost.device)
    with torch.enable_grad():
        leaf = cost.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(dtw(leaf, mode="hard").sum(), leaf)
    return grad > 0.5  # the backward of hard DTW is the 0/1 path indicator


def cosine_cost(x, y, eps=1e-8):
    """1 - cos(x_i, y_j): x (B, N, D), y (B, M, D) -> (B, N, M)."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"cosine_cost: expected x (B, N, D) and y (B, M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    x = torch.nn.functional.normalize(x, dim=-1, eps=eps)
    y = torch.nn.functional.normalize(y, dim=-1, eps=eps)
    return 1 - x @ y.transpose(1, 2)  # (B, N, M)
