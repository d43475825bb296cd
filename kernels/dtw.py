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

    Similarity input: ``dtw_similarity`` takes s (Q, S, N, M) with any strides (the matchers pass
    the permuted view of their (Q·T, S·T) frame matmul) and the cost C = 1 - s. The short kernels
    read s in place (pair b = q·S + s, two batch strides; q = b // S by multiply-high with a
    launcher-computed magic number), form 1 - s in registers in the accumulation dtype, and the
    backward writes dsim = -dcost in s's layout. Elsewhere 1 - s is materialised (one copy).

Implementations
    dtw_reference          pure torch, vectorised over the batch and over anti-diagonals; float64-safe.
    Short path (N, M <= SHORT_MAX): one pair per thread, N and M compile-time, the DP unrolled,
    every row a tuple of registers.
      _dtw_short_fwd_kernel  each cost row is loaded as a coalesced (BLOCK_B, M) tile and moved
                             into per-thread registers once through shared memory; costs are
                             scaled by log2(e)/γ so the soft-min is exp2/log2 (two exp2 and one
                             log2 per 3-predecessor cell: the minimum's term is exactly 1).
      _dtw_short_bwd_kernel  recomputes R in registers from the cost, then runs the reverse
                             recursion in the same program; nothing per cell is stored between
                             forward and backward (extra memory O(B)).
    Long path (wider / longer grids, up to MAX_KERNEL_WIDTH columns):
      _dtw_fwd_kernel        BLOCK_B pairs per program; the previous DP row is a (BLOCK_B, BLOCK_M)
                             register tile. With STORE_WEIGHTS (only when a gradient is needed)
                             it writes the 3 predecessor weights W per cell.
      _dtw_bwd_kernel        the reverse recursion from W; writes dcost once.
    fp16 / bf16 inputs accumulate (and return values) in fp32; fp64 stays fp64, γ included.

Limits and complexity
    Time O(B·N·M) cells. Short path: per pair, reads N·M costs and writes one value (and one
    length); the backward reads the cost again and writes N·M gradients. Registers grow with
    N·M in the backward (all of R is kept): 8×8 fits, 16×16 spills 1.5-4 KB per thread to
    local memory (benchmarks/dtw_static_sm90.md). Switch point SHORT_MAX = 16, set statically
    (no GPU timing yet): at 16×16 the short forward executes 15-41× and the short backward
    4-11× fewer SASS instructions per pair than the long path's, and no weights are moved.
    dtw_symmetric's backward runs both directions in one program only up to SYMMETRIC_BWD_MAX
    (8); beyond, one launch each. Long path: the forward with a gradient also writes
    W = 3·B·N'·M' fp32 (N'×M' the grid, M' = M+2 for otam) which the backward reads once.
    Grids wider than MAX_KERNEL_WIDTH columns run on the torch reference with a
    DTWFallbackWarning. B = 0 gives an empty result. The similarity input moves the same bytes per
    pair as a cost and saves the elementwise 1 - s pass (2·N·M elements read + written per pair) and
    its negation in the backward; it costs one add per cell and the pair offset arithmetic.

Dispatch
    ``backend=`` auto | triton | torch; None reads M3NET_DTW_BACKEND (default auto): CUDA
    tensors run Triton, CPU tensors the torch reference. ``triton`` with TRITON_INTERPRET=1 runs
    the Triton kernels on the CPU (this is how CI checks them). Every path goes through two torch
    custom ops, m3net::dtw_forward and m3net::dtw_backward (fake functions + registered autograd),
    so torch.compile(fullgraph=True) / CUDA graphs capture callers without a graph break.
"""
import contextlib
import functools
import math
import os
import warnings

import torch

from m3net.errors import ConfigError

try:  # Triton is optional: without it every input runs on the torch reference.
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None
    libdevice = None

MODES = ("soft", "hard", "otam")
BACKENDS = ("auto", "triton", "torch")
MAX_KERNEL_WIDTH = 256  # grid columns held in one register tile row (long path)
SHORT_MAX = 16  # N and M up to this run the register-resident short path
SYMMETRIC_BWD_MAX = 8  # dtw_symmetric's backward runs both directions in one program up to N, M = this
BACKEND_ENV = "M3NET_DTW_BACKEND"

__all__ = ["dtw", "dtw_reference", "dtw_path", "dtw_with_length", "dtw_symmetric", "dtw_similarity", "cosine_cost",
           "MODES", "MAX_KERNEL_WIDTH", "SHORT_MAX", "DTWFallbackWarning"]


class DTWFallbackWarning(UserWarning):
    """A Triton-bound input ran on the torch reference (shown once per call site by default)."""


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
# Triton, short path: one pair per thread, the whole DP unrolled over constexpr N x M
# --------------------------------------------------------------------------------------------
if triton is not None:

    @triton.constexpr_function
    def _grid_cols(m, otam):
        return m + 2 if otam else m

    # Which predecessors cell (i, j) of the grid takes its minimum over (see _predecessor_mask).
    @triton.constexpr_function
    def _has_diag(i, j, otam, cols):
        return i >= 1 and j >= 1

    @triton.constexpr_function
    def _has_up(i, j, otam, cols):
        return i >= 1 and (j == 1 or j == cols - 1) if otam else i >= 1

    @triton.constexpr_function
    def _has_left(i, j, otam, cols):
        return j >= 1

    @triton.constexpr_function
    def _bit_reversed(k, bits):
        return int(format(k, f"0{bits}b")[::-1], 2) if bits else 0

    @triton.jit
    def _split_columns(tile, BLOCK_B: tl.constexpr, K: tl.constexpr, BITS: tl.constexpr):
        """(BLOCK_B, K) tile -> tuple of its K columns, each (BLOCK_B,); K = 2**BITS.

        The tile is loaded coalesced (a warp reads whole rows of consecutive pairs); halving
        splits make the compiler move it once through shared memory into one-pair-per-thread
        registers, where a masked sum per column would reduce across lanes instead.
        """
        parts = (tile,)
        for level in tl.static_range(BITS):
            halves = ()
            for p in tl.static_range(2**level):
                even, odd = tl.split(tl.reshape(parts[p], (BLOCK_B, K // 2 ** (level + 1), 2)))
                halves = halves + (even, odd)
            parts = halves
        columns = ()
        for k in tl.static_range(K):  # split order is bit-reversed column order
            columns = columns + (tl.reshape(parts[_bit_reversed(k, BITS)], (BLOCK_B,)),)
        return columns

    @triton.jit
    def _join_columns(columns, BLOCK_B: tl.constexpr, K: tl.constexpr, BITS: tl.constexpr):
        """Inverse of _split_columns: K (BLOCK_B,) columns -> one (BLOCK_B, K) tile for a coalesced store."""
        parts = ()
        for k in tl.static_range(K):
            parts = parts + (tl.reshape(columns[_bit_reversed(k, BITS)], (BLOCK_B, 1)),)
        for level in tl.static_range(BITS):
            merged = ()
            for p in tl.static_range(K // 2 ** (level + 1)):
                pair = tl.join(parts[2 * p], parts[2 * p + 1])
                merged = merged + (tl.reshape(pair, (BLOCK_B, 2 ** (level + 1))),)
            parts = merged
        return parts[0]

    @triton.jit
    def _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, SIMILARITY: tl.constexpr):
        """Element offset of each pair's matrix: row b of a (B, N, M) cost, or pair b = q·S + s of a
        (Q, S, N, M) similarity (two batch strides, e.g. a permuted view of a (Q·T, S·T) matmul).

        q = b // S by multiply-high with the launcher's magic number (_divisor_magic): a thread
        holds several pairs' rows of a load tile, and a division per row would cost ~10 instructions.
        """
        if SIMILARITY:
            b = pairs.to(tl.uint32)
            magic = (tl.zeros_like(b) + S_MAGIC).to(tl.uint32)  # S_MAGIC may arrive as a constexpr 1
            q = ((tl.umulhi(b, magic) + b) >> S_SHIFT).to(tl.int32)
            return q.to(tl.int64) * stride_b + (pairs - q * S).to(tl.int64) * stride_s
        else:
            return pairs.to(tl.int64) * stride_b

    @triton.jit
    def _load_grid_row(cost_ptr, offsets, live, i, stride_n, stride_m, ACC: tl.constexpr,
                       M: tl.constexpr, OTAM: tl.constexpr, SIMILARITY: tl.constexpr, BLOCK_B: tl.constexpr,
                       MP: tl.constexpr, BITS: tl.constexpr):
        """Row i of the grid's cost in ACC, one (BLOCK_B,) value per column (otam: 0 | cost | 0).

        SIMILARITY: the input holds similarities s and the cost 1 - s is formed here, in registers
        and in ACC (no cost tensor is ever written); otam's padding columns stay 0.
        """
        cols = tl.arange(0, MP)
        ptrs = cost_ptr + offsets[:, None] + i * stride_n + cols[None, :] * stride_m
        tile = tl.load(ptrs, mask=live[:, None] & (cols[None, :] < M), other=0.0).to(ACC)
        if SIMILARITY:
            tile = 1.0 - tile
        values = _split_columns(tile, BLOCK_B, MP, BITS)
        row = ()
        if OTAM:
            row = (values[0] * 0,)  # a zero in the columns' dtype and layout
        for j in tl.static_range(M):
            row = row + (values[j],)
        if OTAM:
            row = row + (values[0] * 0,)
        return row

    @triton.jit
    def _log2(x, FAST_MATH: tl.constexpr):
        # tl.log2 lowers to a ~15-instruction polynomial; lg2.approx (MUFU) is exact to 2^-22 relative.
        if FAST_MATH:
            return libdevice.fast_log2f(x)
        else:
            return tl.log2(x)

    @triton.jit
    def _cell_min(prev, row, j, HAS_DIAG: tl.constexpr, HAS_UP: tl.constexpr, HAS_LEFT: tl.constexpr,
                  HARD: tl.constexpr, FAST_MATH: tl.constexpr):
        """(Soft) minimum over the cell's predecessors, in log2 units (costs scaled by log2(e)/γ).

        The minimum's own term is exactly 2^0 = 1, so 3 predecessors need two exp2 and one log2;
        the middle value comes from min/max, not a sort.
        """
        if HAS_DIAG and HAS_UP and HAS_LEFT:
            ab_lo = tl.minimum(prev[j - 1], prev[j])
            ab_hi = tl.maximum(prev[j - 1], prev[j])
            lo = tl.minimum(ab_lo, row[j - 1])
            if HARD:
                smin = lo
            else:
                mid = tl.maximum(ab_lo, tl.minimum(ab_hi, row[j - 1]))
                hi = tl.maximum(ab_hi, row[j - 1])
                smin = lo - _log2(1.0 + tl.exp2(lo - mid) + tl.exp2(lo - hi), FAST_MATH)
        elif HAS_DIAG and HAS_LEFT:  # otam rows >= 1, columns 2..M
            lo = tl.minimum(prev[j - 1], row[j - 1])
            if HARD:
                smin = lo
            else:
                hi = tl.maximum(prev[j - 1], row[j - 1])
                smin = lo - _log2(1.0 + tl.exp2(lo - hi), FAST_MATH)
        elif HAS_UP:
            smin = prev[j]
        elif HAS_LEFT:
            smin = row[j - 1]
        else:  # a source: its predecessor is the virtual ZERO cell
            smin = 0.0
        return smin

    @triton.jit
    def _hard_weights(prev, row, j, HAS_DIAG: tl.constexpr, HAS_UP: tl.constexpr, HAS_LEFT: tl.constexpr):
        """One-hot argmin over the predecessors (diag, up, left); ties go to the earlier one."""
        if HAS_DIAG and HAS_UP and HAS_LEFT:
            take_diag = (prev[j - 1] <= prev[j]) & (prev[j - 1] <= row[j - 1])
            take_up = (~take_diag) & (prev[j] <= row[j - 1])
            take_left = ~(take_diag | take_up)
            return take_diag.to(tl.float32), take_up.to(tl.float32), take_left.to(tl.float32)
        elif HAS_DIAG and HAS_LEFT:
            take_diag = prev[j - 1] <= row[j - 1]
            return take_diag.to(tl.float32), 0.0, (~take_diag).to(tl.float32)
        elif HAS_UP:
            return 0.0, 1.0, 0.0
        elif HAS_LEFT:
            return 0.0, 0.0, 1.0
        else:
            return 0.0, 0.0, 0.0

    @triton.jit
    def _soft_weights(prev, row, j, HAS_DIAG: tl.constexpr, HAS_UP: tl.constexpr, HAS_LEFT: tl.constexpr):
        """Softmax weights of the predecessors (diag, up, left), missing ones 0.

        exp2(lo - x) / Σ rather than exp2(smin - x): the differences stay small where the weight
        is large, so the weights keep full relative precision however large R grows.
        """
        lo = prev[j - 1] if HAS_DIAG else (prev[j] if HAS_UP else row[j - 1])
        if HAS_UP:
            lo = tl.minimum(lo, prev[j])
        if HAS_LEFT:
            lo = tl.minimum(lo, row[j - 1])
        wd = 0.0
        wu = 0.0
        wl = 0.0
        if HAS_DIAG:
            wd = tl.exp2(lo - prev[j - 1])
        if HAS_UP:
            wu = tl.exp2(lo - prev[j])
        if HAS_LEFT:
            wl = tl.exp2(lo - row[j - 1])
        inv = 1.0 / (wd + wu + wl)
        return wd * inv, wu * inv, wl * inv

    @triton.jit
    def _forward_rows(cost_ptr, offsets, live, stride_n, stride_m, scale,
                      N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr,
                      LENGTH: tl.constexpr, KEEP_ROWS: tl.constexpr, FAST_MATH: tl.constexpr,
                      SIMILARITY: tl.constexpr, BLOCK_B: tl.constexpr, MP: tl.constexpr, BITS: tl.constexpr):
        """The DP over the whole grid in registers; returns (last R row, last path-length row, all R rows).

        LENGTH also runs the hard DP (for soft mode on its own rows) and carries the length of
        the optimal path into each cell. KEEP_ROWS keeps every R row for the backward.
        """
        COLS: tl.constexpr = _grid_cols(M, OTAM)
        prev = ()
        prev_hard = ()
        prev_len = ()
        rows = ()
        for i in tl.static_range(N):
            cost = _load_grid_row(cost_ptr, offsets, live, i, stride_n, stride_m, scale.dtype, M, OTAM, SIMILARITY,
                                  BLOCK_B, MP, BITS)
            row = ()
            row_hard = ()
            row_len = ()
            for j in tl.static_range(COLS):
                smin = _cell_min(prev, row, j, _has_diag(i, j, OTAM, COLS), _has_up(i, j, OTAM, COLS),
                                 _has_left(i, j, OTAM, COLS), HARD, FAST_MATH)
                row = row + (cost[j] * scale + smin,)
                if LENGTH:
                    if HARD:
                        hard_prev, hard_row = prev, row
                    else:
                        smin = _cell_min(prev_hard, row_hard, j, _has_diag(i, j, OTAM, COLS), _has_up(i, j, OTAM, COLS),
                                         _has_left(i, j, OTAM, COLS), True, FAST_MATH)
                        row_hard = row_hard + (cost[j] + smin,)  # unscaled: the same ties as dtw_path
                        hard_prev, hard_row = prev_hard, row_hard
                    wd, wu, wl = _hard_weights(hard_prev, hard_row, j, _has_diag(i, j, OTAM, COLS),
                                               _has_up(i, j, OTAM, COLS), _has_left(i, j, OTAM, COLS))
                    length = cost[j] * 0 + 1.0  # the cell itself, as a tensor
                    if _has_diag(i, j, OTAM, COLS):
                        length += wd * prev_len[j - 1]
                    if _has_up(i, j, OTAM, COLS):
                        length += wu * prev_len[j]
                    if _has_left(i, j, OTAM, COLS):
                        length += wl * row_len[j - 1]
                    row_len = row_len + (length,)
            if KEEP_ROWS:
                rows = rows + (row,)
            prev = row
            prev_hard = row_hard
            prev_len = row_len
        return prev, prev_len, rows

    @triton.jit
    def _backward_rows(R, g, grad_ptr, offsets, live, stride_gn, stride_gm,
                       N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr,
                       ACCUMULATE: tl.constexpr, BLOCK_B: tl.constexpr, MP: tl.constexpr, BITS: tl.constexpr):
        """E row by row from the bottom-right, from the R rows of _forward_rows; writes (or with
        ACCUMULATE adds) dcost = E·g, one coalesced tile store per row.

        E[c] pulls from its successors below-right (their diag weight), below (up) and right
        (left); each cell's weights are recomputed from R when the cell is reached, so nothing
        per cell is ever stored in memory.
        """
        COLS: tl.constexpr = _grid_cols(M, OTAM)
        cols = tl.arange(0, MP)
        below_e = ()  # E of row i+1, and that row's weights towards its diag / up predecessors
        below_wd = ()
        below_wu = ()
        for i in tl.static_range(N - 1, -1, -1):
            row_e = ()  # built right to left by prepending: natural column order once the row is done
            row_wd = ()
            row_wu = ()
            right_e = 0.0  # E and left weight of cell (i, j+1)
            right_wl = 0.0
            for j in tl.static_range(COLS - 1, -1, -1):
                prev = R[i - 1] if i >= 1 else ()
                if HARD:
                    wd, wu, wl = _hard_weights(prev, R[i], j, _has_diag(i, j, OTAM, COLS), _has_up(i, j, OTAM, COLS),
                                               _has_left(i, j, OTAM, COLS))
                elif _has_diag(i, j, OTAM, COLS) or _has_up(i, j, OTAM, COLS) or _has_left(i, j, OTAM, COLS):
                    wd, wu, wl = _soft_weights(prev, R[i], j, _has_diag(i, j, OTAM, COLS), _has_up(i, j, OTAM, COLS),
                                               _has_left(i, j, OTAM, COLS))
                else:  # a source: nothing to pass E on to
                    wd, wu, wl = 0.0, 0.0, 0.0
                e = g * 0
                if i == N - 1 and j == COLS - 1:
                    e += 1.0
                if i + 1 < N and j + 1 < COLS:
                    if _has_diag(i + 1, j + 1, OTAM, COLS):
                        e += below_e[j + 1] * below_wd[j + 1]
                if i + 1 < N:
                    if _has_up(i + 1, j, OTAM, COLS):
                        e += below_e[j] * below_wu[j]
                if j + 1 < COLS:
                    e += right_e * right_wl
                row_e = (e,) + row_e
                row_wd = (wd,) + row_wd
                row_wu = (wu,) + row_wu
                right_e = e
                right_wl = wl
            grad = ()  # cost column k is grid column k, or k + 1 for otam
            for k in tl.static_range(MP):
                if k < M:
                    grad = grad + (row_e[k + 1 if OTAM else k] * g,)
                else:
                    grad = grad + (g * 0,)
            tile = _join_columns(grad, BLOCK_B, MP, BITS)
            ptrs = grad_ptr + offsets[:, None] + i * stride_gn + cols[None, :] * stride_gm
            mask = live[:, None] & (cols[None, :] < M)
            if ACCUMULATE:
                tile += tl.load(ptrs, mask=mask, other=0.0).to(tile.dtype)
            tl.store(ptrs, tile.to(grad_ptr.dtype.element_ty), mask=mask)
            below_e = row_e
            below_wd = row_wd
            below_wu = row_wu

    @triton.jit
    def _dtw_short_fwd_kernel(
        cost_ptr, scale_ptr, out_ptr, length_ptr,
        B, S, S_MAGIC, S_SHIFT, stride_b, stride_s, stride_n, stride_m,
        N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr, LENGTH: tl.constexpr,
        SYMMETRIC: tl.constexpr, SIMILARITY: tl.constexpr, FAST_MATH: tl.constexpr, BLOCK_B: tl.constexpr,
        MP: tl.constexpr, BITS: tl.constexpr, MP_T: tl.constexpr, BITS_T: tl.constexpr,
    ):
        """value = R[last] (+ the same on Cᵀ with SYMMETRIC: OTAM's two directions, one read of C)."""
        pairs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        live = pairs < B
        offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, SIMILARITY)
        scale = tl.load(scale_ptr)  # log2(e)/γ in the accumulation dtype (1 for hard)
        last, last_len, _ = _forward_rows(cost_ptr, offsets, live, stride_n, stride_m, scale,
                                          N, M, OTAM, HARD, LENGTH, False, FAST_MATH, SIMILARITY, BLOCK_B, MP, BITS)
        value = last[_grid_cols(M, OTAM) - 1]
        if SYMMETRIC:  # rows of Cᵀ are the columns of C, already in L1
            last_t, _, _ = _forward_rows(cost_ptr, offsets, live, stride_m, stride_n, scale,
                                         M, N, OTAM, HARD, False, False, FAST_MATH, SIMILARITY, BLOCK_B, MP_T, BITS_T)
            value += last_t[_grid_cols(N, OTAM) - 1]
        tl.store(out_ptr + pairs, value / scale, mask=live)
        if LENGTH:
            tl.store(length_ptr + pairs, last_len[_grid_cols(M, OTAM) - 1], mask=live)

    @triton.jit
    def _dtw_short_bwd_kernel(
        cost_ptr, scale_ptr, grad_out_ptr, grad_ptr,
        B, S, S_MAGIC, S_SHIFT, stride_b, stride_s, stride_n, stride_m, stride_gb, stride_gs, stride_gn, stride_gm,
        N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr, SYMMETRIC: tl.constexpr,
        SIMILARITY: tl.constexpr, FAST_MATH: tl.constexpr, BLOCK_B: tl.constexpr,
        MP: tl.constexpr, BITS: tl.constexpr, MP_T: tl.constexpr, BITS_T: tl.constexpr,
    ):
        """Recomputes R in registers from the cost, then the reverse recursion; dcost = E·dvalue.

        With SIMILARITY the launcher passes -dvalue, so the stored E·g is dsim = -dcost.
        """
        pairs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        live = pairs < B
        offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, SIMILARITY)
        grad_offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_gb, stride_gs, SIMILARITY)
        scale = tl.load(scale_ptr)
        g = tl.load(grad_out_ptr + pairs, mask=live, other=0.0).to(scale.dtype)
        _, _, R = _forward_rows(cost_ptr, offsets, live, stride_n, stride_m, scale,
                                N, M, OTAM, HARD, False, True, FAST_MATH, SIMILARITY, BLOCK_B, MP, BITS)
        _backward_rows(R, g, grad_ptr, grad_offsets, live, stride_gn, stride_gm, N, M, OTAM, HARD, False,
                       BLOCK_B, MP, BITS)
        if SYMMETRIC:  # Cᵀ's gradient, transposed, adds onto C's
            _, _, R = _forward_rows(cost_ptr, offsets, live, stride_m, stride_n, scale,
                                    M, N, OTAM, HARD, False, True, FAST_MATH, SIMILARITY, BLOCK_B, MP_T, BITS_T)
            tl.debug_barrier()  # the first pass's gradient tiles were stored by other threads of the program
            _backward_rows(R, g, grad_ptr, grad_offsets, live, stride_gm, stride_gn, M, N, OTAM, HARD, True,
                           BLOCK_B, MP_T, BITS_T)


# --------------------------------------------------------------------------------------------
# Triton, long path: BLOCK_B pairs per program, rows as register tiles, weights stored
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


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _device_guard(tensor):
    """Launch on the tensor's GPU (inputs on cuda:1 run on cuda:1), not the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _long_forward(cost, mode, gamma, store_weights):
    batch, n, m = cost.shape
    rows, cols = _grid_shape(mode, n, m)
    acc = _accumulation_dtype(cost.dtype)
    out = torch.empty(batch, dtype=acc, device=cost.device)
    weights = torch.empty(batch, rows, cols, 3, dtype=acc, device=cost.device) if store_weights else out
    block_b, block_m = _triton_block_sizes(cols)
    with _device_guard(cost):
        _dtw_fwd_kernel[(triton.cdiv(batch, block_b),)](
            cost, out, weights, batch, n, m, *cost.stride(), float(gamma),
            OTAM=mode == "otam", HARD=mode == "hard", STORE_WEIGHTS=store_weights,
            ACC_DTYPE=_triton_acc_dtype(cost.dtype), BLOCK_B=block_b, BLOCK_M=block_m,
        )
    return out, (weights if store_weights else None)


def _long_backward(weights, grad_out, mode, n, m, dtype):
    batch = weights.shape[0]
    _, cols = _grid_shape(mode, n, m)
    grad = torch.empty(batch, n, m, dtype=dtype, device=weights.device)
    block_b, block_m = _triton_block_sizes(cols)
    with _device_guard(weights):
        _dtw_bwd_kernel[(triton.cdiv(batch, block_b),)](
            weights, grad_out.to(weights.dtype).contiguous(), grad, batch, n, m, *grad.stride(),
            OTAM=mode == "otam", ACC_DTYPE=_triton_acc_dtype(weights.dtype), BLOCK_B=block_b, BLOCK_M=block_m,
        )
    return grad


def _short_launch_config(batch, n, m, mode, gamma, device, dtype):
    """(grid, scale tensor, launch keywords) of the short-path kernels for ``batch`` pairs of n x m.

    One pair per thread: BLOCK_B = 32 · num_warps, with fewer warps per program when the batch
    would otherwise launch fewer than two programs per SM (an episode is a few thousand pairs).
    """
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    num_warps = 4
    while num_warps > 1 and triton.cdiv(batch, 32 * num_warps) < 2 * sms:
        num_warps //= 2
    block_b = 32 * num_warps
    acc = _accumulation_dtype(dtype)
    # Costs are scaled by log2(e)/γ so the soft-min is exp2/log2; a float64 scale for float64 costs.
    scale = torch.full((1,), 1.0 if mode == "hard" else math.log2(math.e) / gamma, dtype=acc, device=device)
    mp, mp_t = (max(triton.next_power_of_2(width), 2) for width in (m, n))  # row tile widths of C and Cᵀ
    fast_math = acc == torch.float32 and not _interpreting()  # libdevice's lg2.approx exists only compiled
    meta = dict(N=n, M=m, OTAM=mode == "otam", HARD=mode == "hard", FAST_MATH=fast_math, BLOCK_B=block_b,
                MP=mp, BITS=mp.bit_length() - 1, MP_T=mp_t, BITS_T=mp_t.bit_length() - 1, num_warps=num_warps)
    return (triton.cdiv(batch, block_b),), scale, meta


def _divisor_magic(d):
    """(magic, shift) with n // d == (umulhi(n, magic) + n) >> shift for 0 <= n < 2**31, 1 <= d < 2**31,
    magic < 2**32 (Granlund & Montgomery 1994, unsigned division; n < 2**31 keeps the sum in 32 bits)."""
    shift = (d - 1).bit_length()  # ceil(log2 d)
    return (2**32 * (2**shift - d)) // d + 1, shift


def _pair_layout(x, similarity):
    """(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, stride_n, stride_m) of a (B, N, M) cost or a
    (Q, S, N, M) similarity."""
    if similarity:
        return (x.shape[0] * x.shape[1], x.shape[1], *_divisor_magic(x.shape[1]), *x.stride())
    return (x.shape[0], 1, 1, 0, x.stride(0), 0, x.stride(1), x.stride(2))


def _short_forward(cost, mode, gamma, with_length, symmetric=False, similarity=False):
    """(value (B,), length (B,) or None); ``cost`` is a similarity (Q, S, N, M) with ``similarity``."""
    layout = _pair_layout(cost, similarity)
    grid, scale, meta = _short_launch_config(layout[0], *cost.shape[-2:], mode, gamma, cost.device, cost.dtype)
    out = torch.empty(layout[0], dtype=scale.dtype, device=cost.device)
    length = torch.empty_like(out) if with_length else out
    with _device_guard(cost):
        _dtw_short_fwd_kernel[grid](cost, scale, out, length, *layout, LENGTH=with_length, SYMMETRIC=symmetric,
                                    SIMILARITY=similarity, **meta)
    return out, (length if with_length else None)


def _short_backward(cost, grad_out, mode, gamma, symmetric=False, similarity=False):
    """dvalue/dcost (the cost's shape), or with ``similarity`` dvalue/dsim = -dvalue/dcost laid out
    like the similarity where it is dense (a permuted matmul output gets its gradient in the same
    layout, so the matmul's backward reads it without a copy)."""
    layout = _pair_layout(cost, similarity)
    grid, scale, meta = _short_launch_config(layout[0], *cost.shape[-2:], mode, gamma, cost.device, cost.dtype)
    grad = torch.empty_like(cost) if similarity else torch.empty(cost.shape, dtype=cost.dtype, device=cost.device)
    g = (-grad_out if similarity else grad_out).to(scale.dtype).contiguous()
    with _device_guard(cost):
        _dtw_short_bwd_kernel[grid](cost, scale, g, grad, *layout, *_pair_layout(grad, similarity)[4:],
                                    SYMMETRIC=symmetric, SIMILARITY=similarity, **meta)
    return grad


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
    if not cost.is_cuda and not _interpreting():
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
    """Cells on the hard optimal path, from the hard DP's weights (paths without the short kernel)."""
    if backend == "triton":
        _, weights = _long_forward(cost, "hard", 0.0, store_weights=True)
        ones = torch.ones(cost.shape[0], dtype=weights.dtype, device=cost.device)
        return _long_backward(weights, ones, "hard", cost.shape[1], cost.shape[2], weights.dtype).sum(dim=(1, 2))
    _, weights = _reference_forward(cost, "hard", 0.0)
    return _reference_backward(weights, "hard", cost.shape[1], cost.shape[2]).sum(dim=(1, 2))


# --------------------------------------------------------------------------------------------
# Custom ops: forward and backward as torch.library ops, so torch.compile / CUDA graphs capture
# the DTW as one opaque node (no graph break, no tracing into Triton launches or the reference's
# Python loop). The register_fake functions give Dynamo / AOTAutograd the output metadata.
# --------------------------------------------------------------------------------------------
def _forward_outputs_meta(cost, mode, backend, with_length, similarity, store_weights):
    """{name: (shape, dtype)} of m3net::dtw_forward's outputs; unused outputs are empty (0,)."""
    batch = cost.shape[0] * cost.shape[1] if similarity else cost.shape[0]
    n, m = cost.shape[-2:]
    acc = _accumulation_dtype(cost.dtype)
    stores = store_weights and not _uses_short_path(backend, n, m)  # the short backward recomputes instead
    return {"value": ((batch,), acc), "length": ((batch if with_length else 0,), acc),
            "saved": ((batch, *_grid_shape(mode, n, m), 3) if stores else (0,), acc)}


@torch.library.custom_op("m3net::dtw_forward", mutates_args=())
def _dtw_forward_op(cost: torch.Tensor, mode: str, gamma: float, backend: str, with_length: bool, symmetric: bool,
                    similarity: bool, store_weights: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value (B,), hard path length (B,) or (0,), predecessor weights for the backward or (0,)).

    ``backend`` is resolved ('triton' | 'torch'). ``symmetric`` and ``similarity`` come only with the
    short path (_run falls back to two calls / a materialised 1 - s elsewhere).
    """
    length = saved = None
    if _uses_short_path(backend, *cost.shape[-2:]):
        value, length = _short_forward(cost, mode, gamma, with_length, symmetric, similarity)
    else:
        forward = _long_forward if backend == "triton" else _reference_forward
        value, saved = forward(cost, mode, gamma, store_weights=store_weights)
        value = value.contiguous()  # the reference's value is a strided view of its DP buffer
        if with_length:
            length = _path_length(cost, backend)
    # An op's outputs may not alias each other: a fresh empty tensor for each unused one.
    return value, *(cost.new_empty(0, dtype=value.dtype) if t is None else t for t in (length, saved))


@_dtw_forward_op.register_fake
def _(cost, mode, gamma, backend, with_length, symmetric, similarity, store_weights):
    meta = _forward_outputs_meta(cost, mode, backend, with_length, similarity, store_weights)
    return tuple(cost.new_empty(shape, dtype=dtype) for shape, dtype in meta.values())


@torch.library.custom_op("m3net::dtw_backward", mutates_args=())
def _dtw_backward_op(saved: torch.Tensor, grad_out: torch.Tensor, mode: str, gamma: float, backend: str,
                     symmetric: bool, similarity: bool, n: int, m: int, dtype: torch.dtype) -> torch.Tensor:
    """d(Σ grad_out · value)/d input. ``saved``: the input itself on the short path (the backward
    recomputes R from it), else the forward's predecessor weights (grid (B, N, M') x 3)."""
    if _uses_short_path(backend, n, m):
        # Both directions' R in one program spills past 8x8 (ptxas: 76 KB at 16x16, see
        # benchmarks/dtw_static_sm90.md): larger grids take one launch per direction.
        if symmetric and max(saved.shape[-2:]) > SYMMETRIC_BWD_MAX:
            grad = _short_backward(saved, grad_out, mode, gamma, similarity=similarity)
            transposed = _short_backward(saved.transpose(-1, -2), grad_out, mode, gamma, similarity=similarity)
            return grad + transposed.transpose(-1, -2)
        return _short_backward(saved, grad_out, mode, gamma, symmetric, similarity)
    if backend == "triton":
        return _long_backward(saved, grad_out, mode, n, m, dtype)
    return (_reference_backward(saved, mode, n, m) * grad_out.to(saved.dtype)[:, None, None]).to(dtype)


@_dtw_backward_op.register_fake
def _(saved, grad_out, mode, gamma, backend, symmetric, similarity, n, m, dtype):
    if _uses_short_path(backend, n, m):
        return torch.empty_like(saved) if similarity else saved.new_empty(saved.shape)
    return saved.new_empty(saved.shape[0], n, m, dtype=dtype)


def _setup_dtw_context(ctx, inputs, output):
    cost, mode, gamma, backend, _with_length, symmetric, similarity, _store_weights = inputs
    ctx.args = (mode, gamma, backend, symmetric, similarity, *cost.shape[-2:], cost.dtype)
    # Short path: keep the input (the backward recomputes R); else the weights, not the input.
    ctx.save_for_backward(cost if _uses_short_path(backend, *cost.shape[-2:]) else output[2])


def _dtw_op_backward(ctx, grad_value, _grad_length, _grad_saved):
    (saved,) = ctx.saved_tensors
    return (torch.ops.m3net.dtw_backward(saved, grad_value, *ctx.args),) + (None,) * 7


_dtw_forward_op.register_autograd(_dtw_op_backward, setup_context=_setup_dtw_context)


def _run(cost, mode, gamma, backend, with_length=False, symmetric=False, similarity=False):
    """Validation, dispatch and the op call: value (B,) [, length (B,), no gradient]; B = Q·S for a similarity."""
    _validate(cost, mode, gamma, similarity)
    backend = _backend_for(cost, mode, backend)
    if similarity and not _uses_short_path(backend, *cost.shape[-2:]):
        # Only the short kernel folds 1 - s into its load; elsewhere the cost is materialised (one copy).
        cost, similarity = (1 - cost).flatten(0, 1), False
    if cost.numel() == 0:
        value = cost.sum(dim=(-2, -1)).flatten().to(_accumulation_dtype(cost.dtype))  # (0,), still in cost's graph
        return (value, value.detach()) if with_length else value
    if symmetric and not _uses_short_path(backend, *cost.shape[-2:]):
        return _run(cost, mode, gamma, backend) + _run(cost.transpose(1, 2), mode, gamma, backend)
    store_weights = cost.requires_grad and torch.is_grad_enabled()
    value, length, _ = torch.ops.m3net.dtw_forward(cost, mode, float(gamma), backend, with_length, symmetric,
                                                   similarity, store_weights)
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
