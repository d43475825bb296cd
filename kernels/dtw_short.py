"""Triton, short path (N, M <= SHORT_MAX): one pair per thread, the whole DP unrolled over
constexpr N x M with every row a tuple of registers; the backward recomputes R. Kernels and launchers.

The algorithm, limits and complexity are in the header of dtw.py.
"""
import math

import torch

from m3net.kernels.dtw_grid import (
    KernelLaunch,
    _accumulation_dtype,
    _device_guard,
    _interpreting,
    _launch,
    libdevice,
    tl,
    triton,
)

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



def _short_launch_config(batch, n, m, mode, gamma, device, dtype):
    """(grid, scale tensor, constexprs, num_warps) of the short-path kernels for ``batch`` pairs of n x m.

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
                MP=mp, BITS=mp.bit_length() - 1, MP_T=mp_t, BITS_T=mp_t.bit_length() - 1)
    return (triton.cdiv(batch, block_b),), scale, meta, num_warps


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
    grid, scale, meta, warps = _short_launch_config(layout[0], *cost.shape[-2:], mode, gamma, cost.device, cost.dtype)
    out = torch.empty(layout[0], dtype=scale.dtype, device=cost.device)
    length = torch.empty_like(out) if with_length else out
    meta = dict(meta, LENGTH=with_length, SYMMETRIC=symmetric, SIMILARITY=similarity)
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_short_fwd_kernel, grid, (cost, scale, out, length, *layout), meta, warps,
                             32 * warps))
    return out, (length if with_length else None)


def _short_backward(cost, grad_out, mode, gamma, symmetric=False, similarity=False):
    """dvalue/dcost (the cost's shape), or with ``similarity`` dvalue/dsim = -dvalue/dcost laid out
    like the similarity where it is dense (a permuted matmul output gets its gradient in the same
    layout, so the matmul's backward reads it without a copy)."""
    layout = _pair_layout(cost, similarity)
    grid, scale, meta, warps = _short_launch_config(layout[0], *cost.shape[-2:], mode, gamma, cost.device, cost.dtype)
    grad = torch.empty_like(cost) if similarity else torch.empty(cost.shape, dtype=cost.dtype, device=cost.device)
    g = (-grad_out if similarity else grad_out).to(scale.dtype).contiguous()
    meta = dict(meta, SYMMETRIC=symmetric, SIMILARITY=similarity)
    with _device_guard(cost):
        args = (cost, scale, g, grad, *layout, *_pair_layout(grad, similarity)[4:])
        _launch(KernelLaunch(_dtw_short_bwd_kernel, grid, args, meta, warps, 32 * warps))
    return grad
