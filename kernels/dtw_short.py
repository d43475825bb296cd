"""Triton, short path (N, M <= SHORT_MAX): one pair per thread, the whole DP unrolled over
constexpr N x M with every row a tuple of registers; the backward recomputes R. Kernels and launchers.

The algorithm, limits and complexity are in the header of dtw.py.
"""
import functools

import torch

from m3net.kernels.dtw_grid import (
    KernelLaunch,
    _accumulation_dtype,
    _device_guard,
    _interpreting,
    _launch,
    _scale,
    _threads_per_program,
    tl,
    triton,
)

SYMMETRIC_BWD_MAX = 8  # dtw_symmetric's backward runs both directions in one program up to N, M = this
SHORT_WARPS = 1  # pinned: one compile per shape; a 1-warp program spreads a small batch over more SMs
VECTOR_BYTES = 16  # one LDG.128 / STG.128

if triton is not None:  # the jitted helpers exist only where triton is installed
    from m3net.kernels.dtw_grid import _has_diag, _has_left, _has_up, _log2

    @triton.constexpr_function
    def _grid_cols(m, otam):
        return m + 2 if otam else m

    @triton.constexpr_function
    def _bits(k):
        return k.bit_length() - 1

    @triton.constexpr_function
    def _bit_reversed(k, bits):
        return int(format(k, f"0{bits}b")[::-1], 2) if bits else 0

    @triton.jit
    def _split_columns(tile, BLOCK_B: tl.constexpr, K: tl.constexpr):
        """(BLOCK_B, K) tile whose K columns one thread holds -> tuple of its K columns, each (BLOCK_B,).

        Halving splits (K a power of two) stay inside the thread: no shared memory, no barrier.
        """
        BITS: tl.constexpr = _bits(K)
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
    def _join_columns(columns, BLOCK_B: tl.constexpr, K: tl.constexpr):
        """Inverse of _split_columns: K (BLOCK_B,) columns -> one (BLOCK_B, K) tile for a vector store."""
        BITS: tl.constexpr = _bits(K)
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
        """Element offset (int64) of each pair's matrix: row b of a (B, N, M) cost, or pair b = q·S + s of a
        (Q, S, N, M) similarity (two batch strides, e.g. a permuted view of a (Q·T, S·T) matmul).

        q = b // S by multiply-high with the launcher's magic number (_divisor_magic): a division per
        pair would cost ~10 instructions.
        """
        if SIMILARITY:
            b = pairs.to(tl.uint32)
            magic = (tl.zeros_like(b) + S_MAGIC).to(tl.uint32)
            q = ((tl.umulhi(b, magic) + b) >> S_SHIFT).to(tl.int32)
            return q.to(tl.int64) * stride_b + (pairs - q * S).to(tl.int64) * stride_s
        else:
            return pairs.to(tl.int64) * stride_b

    @triton.jit
    def _vector_offsets(row_offsets, c0, VEC: tl.constexpr):
        """(BLOCK_B, VEC) offsets of columns c0 .. c0+VEC-1 of each pair's row, with the compiler told what
        the launcher checked: each thread's VEC elements are contiguous and start VEC-aligned."""
        where = row_offsets[:, None] + (c0 + tl.arange(0, VEC))[None, :]
        return tl.max_contiguous(tl.multiple_of(where, [1, VEC]), [1, VEC])

    @triton.jit
    def _load_row(ptr, offsets, live, i, row_stride, col_stride, M: tl.constexpr, VEC: tl.constexpr,
                  ACC: tl.constexpr, SIMILARITY: tl.constexpr, BLOCK_B: tl.constexpr):
        """Row i of every pair's matrix, M (BLOCK_B,) values in ACC (SIMILARITY: 1 - s, formed here).

        VEC > 1: the row's columns are contiguous and VEC-aligned (the launcher checked), so each thread
        reads its own pair's row as M / VEC vector loads of 16 bytes and splits them in registers.
        VEC == 1: one load per element (strided rows: Cᵀ, odd widths or layouts).
        """
        row_offsets = offsets + i * row_stride.to(tl.int64)
        values = ()
        if VEC > 1:
            for c0 in tl.static_range(0, M, VEC):
                where = _vector_offsets(row_offsets, c0, VEC)
                tile = tl.load(ptr + where, mask=live[:, None], other=0.0).to(ACC)
                if SIMILARITY:
                    tile = 1.0 - tile
                values = values + _split_columns(tile, BLOCK_B, VEC)
        else:
            for j in tl.static_range(M):
                value = tl.load(ptr + row_offsets + j * col_stride.to(tl.int64), mask=live, other=0.0).to(ACC)
                if SIMILARITY:
                    value = 1.0 - value
                values = values + (value,)
        return values

    @triton.jit
    def _store_row(ptr, src_ptr, offsets, live, i, row_stride, col_stride, values, M: tl.constexpr,
                   VEC: tl.constexpr, ACCUMULATE: tl.constexpr, BLOCK_B: tl.constexpr):
        """Stores M (BLOCK_B,) values as row i of every pair's matrix (VEC as in _load_row); ACCUMULATE
        adds what ``src_ptr`` holds at the same place first, in the values' dtype."""
        row_offsets = offsets + i * row_stride.to(tl.int64)
        if VEC > 1:
            for c0 in tl.static_range(0, M, VEC):
                chunk = ()
                for k in tl.static_range(VEC):
                    chunk = chunk + (values[c0 + k],)
                tile = _join_columns(chunk, BLOCK_B, VEC)
                where = _vector_offsets(row_offsets, c0, VEC)
                if ACCUMULATE:
                    tile += tl.load(src_ptr + where, mask=live[:, None], other=0.0).to(tile.dtype)
                tl.store(ptr + where, tile.to(ptr.dtype.element_ty), mask=live[:, None])
        else:
            for j in tl.static_range(M):
                where = row_offsets + j * col_stride.to(tl.int64)
                value = values[j]
                if ACCUMULATE:
                    value += tl.load(src_ptr + where, mask=live, other=0.0).to(value.dtype)
                tl.store(ptr + where, value.to(ptr.dtype.element_ty), mask=live)

    @triton.jit
    def _finite_or_zero(lo):
        """The soft-min's shift: the smallest predecessor, or 0 where all are +inf (behind inf costs), so
        their terms exp2(shift - x) are exactly 0 and the cell is +inf, as in the reference, not NaN."""
        return tl.where(lo < float("inf"), lo, 0.0)

    @triton.jit
    def _cell_min(prev, row, i, j, COLS: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr,
                  FAST_MATH: tl.constexpr):
        """(Soft) minimum over the predecessors of cell (i, j), in log2 units (costs scaled by log2(e)/γ).

        The minimum's own term is exactly 2^0 = 1, so 3 predecessors need two exp2 and one log2;
        the middle value comes from min/max, not a sort.
        """
        HAS_DIAG: tl.constexpr = _has_diag(i, j, COLS, OTAM)
        HAS_UP: tl.constexpr = _has_up(i, j, COLS, OTAM)
        HAS_LEFT: tl.constexpr = _has_left(i, j, COLS, OTAM)
        if HAS_DIAG and HAS_UP and HAS_LEFT:
            ab_lo = tl.minimum(prev[j - 1], prev[j])
            ab_hi = tl.maximum(prev[j - 1], prev[j])
            lo = tl.minimum(ab_lo, row[j - 1])
            if HARD:
                smin = lo
            else:
                mid = tl.maximum(ab_lo, tl.minimum(ab_hi, row[j - 1]))
                hi = tl.maximum(ab_hi, row[j - 1])
                shift = _finite_or_zero(lo)
                smin = lo - _log2(1.0 + tl.exp2(shift - mid) + tl.exp2(shift - hi), FAST_MATH)
        elif HAS_DIAG and HAS_LEFT:  # otam rows >= 1, columns 2..M
            lo = tl.minimum(prev[j - 1], row[j - 1])
            if HARD:
                smin = lo
            else:
                hi = tl.maximum(prev[j - 1], row[j - 1])
                smin = lo - _log2(1.0 + tl.exp2(_finite_or_zero(lo) - hi), FAST_MATH)
        elif HAS_UP:
            smin = prev[j]
        elif HAS_LEFT:
            smin = row[j - 1]
        else:  # a source: its predecessor is the virtual ZERO cell
            smin = 0.0
        return smin

    @triton.jit
    def _hard_weights(prev, row, i, j, COLS: tl.constexpr, OTAM: tl.constexpr):
        """One-hot argmin over the predecessors (diag, up, left) of cell (i, j); ties go to the earlier one."""
        HAS_DIAG: tl.constexpr = _has_diag(i, j, COLS, OTAM)
        HAS_UP: tl.constexpr = _has_up(i, j, COLS, OTAM)
        HAS_LEFT: tl.constexpr = _has_left(i, j, COLS, OTAM)
        # One return at the end: Triton compiles the code after a return inside a constexpr branch too, and
        # every return must give blocks of one type.
        zero = tl.zeros_like(row[j])
        if HAS_DIAG and HAS_UP and HAS_LEFT:
            wd = (prev[j - 1] <= prev[j]) & (prev[j - 1] <= row[j - 1])
            wu = (~wd) & (prev[j] <= row[j - 1])
            wl = ~(wd | wu)
            wd, wu, wl = wd.to(tl.float32), wu.to(tl.float32), wl.to(tl.float32)
        elif HAS_DIAG and HAS_LEFT:
            take_diag = prev[j - 1] <= row[j - 1]
            wd, wu, wl = take_diag.to(tl.float32), zero, (~take_diag).to(tl.float32)
        elif HAS_UP:
            wd, wu, wl = zero, zero + 1.0, zero
        elif HAS_LEFT:
            wd, wu, wl = zero, zero, zero + 1.0
        else:
            wd, wu, wl = zero, zero, zero
        return wd, wu, wl

    @triton.jit
    def _cell_weights(prev, row, i, j, COLS: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr):
        """Weights of the predecessors (diag, up, left) of cell (i, j) in its (soft) minimum, missing ones
        0: the one-hot argmin (hard) or the softmax weights.

        exp2(lo - x) / Σ rather than exp2(smin - x): the differences stay small where the weight
        is large, so the weights keep full relative precision however large R grows.
        """
        HAS_DIAG: tl.constexpr = _has_diag(i, j, COLS, OTAM)
        HAS_UP: tl.constexpr = _has_up(i, j, COLS, OTAM)
        HAS_LEFT: tl.constexpr = _has_left(i, j, COLS, OTAM)
        zero = tl.zeros_like(row[j])
        if HARD:
            wd, wu, wl = _hard_weights(prev, row, i, j, COLS, OTAM)
        elif not (HAS_DIAG or HAS_UP or HAS_LEFT):  # a source: nothing to pass E on to
            wd, wu, wl = zero, zero, zero
        else:
            lo = prev[j - 1] if HAS_DIAG else (prev[j] if HAS_UP else row[j - 1])
            if HAS_UP:
                lo = tl.minimum(lo, prev[j])
            if HAS_LEFT:
                lo = tl.minimum(lo, row[j - 1])
            lo = _finite_or_zero(lo)  # all predecessors +inf: every weight 0 (total 0, below)
            wd = zero
            wu = zero
            wl = zero
            if HAS_DIAG:
                wd = tl.exp2(lo - prev[j - 1])
            if HAS_UP:
                wu = tl.exp2(lo - prev[j])
            if HAS_LEFT:
                wl = tl.exp2(lo - row[j - 1])
            inv = 1.0 / tl.maximum(wd + wu + wl, 1.0)  # >= 1 anyway where a predecessor is finite: its own 2^0
            wd, wu, wl = wd * inv, wu * inv, wl * inv
        return wd, wu, wl  # one return (see _hard_weights)

    @triton.jit
    def _forward_rows(cost_ptr, offsets, live, row_stride, col_stride, scale,
                      N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr,
                      LENGTH: tl.constexpr, KEEP_ROWS: tl.constexpr, FAST_MATH: tl.constexpr,
                      SIMILARITY: tl.constexpr, VEC: tl.constexpr, BLOCK_B: tl.constexpr):
        """The DP over the whole grid in registers; returns (last R row, last path-length row, all R rows).

        LENGTH also runs the hard DP (for soft mode on its own rows) and carries the length of
        the optimal path into each cell. KEEP_ROWS keeps every R row for the backward.
        """
        COLS: tl.constexpr = _grid_cols(M, OTAM)
        ACC = scale.dtype
        prev = ()
        prev_hard = ()
        prev_len = ()
        rows = ()
        for i in tl.static_range(N):
            cost = _load_row(cost_ptr, offsets, live, i, row_stride, col_stride, M, VEC, ACC, SIMILARITY, BLOCK_B)
            if OTAM:  # the padding columns: zeros built, never derived from a cost (an inf cost stays local)
                zero = tl.zeros([BLOCK_B], ACC)
                cost = (zero,) + cost + (zero,)
            row = ()
            row_hard = ()
            row_len = ()
            for j in tl.static_range(COLS):
                smin = _cell_min(prev, row, i, j, COLS, OTAM, HARD, FAST_MATH)
                row = row + (cost[j] * scale + smin,)
                if LENGTH:
                    if HARD:
                        hard_prev, hard_row = prev, row
                    else:
                        smin = _cell_min(prev_hard, row_hard, i, j, COLS, OTAM, True, FAST_MATH)
                        row_hard = row_hard + (cost[j] + smin,)  # unscaled: the same ties as dtw_path
                        hard_prev, hard_row = prev_hard, row_hard
                    wd, wu, wl = _hard_weights(hard_prev, hard_row, i, j, COLS, OTAM)
                    length = tl.full([BLOCK_B], 1.0, ACC)  # the cell itself
                    if _has_diag(i, j, COLS, OTAM):
                        length += wd * prev_len[j - 1]
                    if _has_up(i, j, COLS, OTAM):
                        length += wu * prev_len[j]
                    if _has_left(i, j, COLS, OTAM):
                        length += wl * row_len[j - 1]
                    row_len = row_len + (length,)
            if KEEP_ROWS:
                rows = rows + (row,)
            prev = row
            prev_hard = row_hard
            prev_len = row_len
        return prev, prev_len, rows

    @triton.jit
    def _backward_rows(R, g, grad_ptr, src_ptr, offsets, live, row_stride, col_stride,
                       N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr,
                       ACCUMULATE: tl.constexpr, VEC: tl.constexpr, BLOCK_B: tl.constexpr):
        """E row by row from the bottom-right, from the R rows of _forward_rows; writes dcost = E·g
        (with ACCUMULATE: src + E·g, rounded once to the gradient's dtype), one row at a time.

        E[c] pulls from its successors below-right (their diag weight), below (up) and right
        (left); each cell's weights are recomputed from R when the cell is reached, so nothing
        per cell is ever stored in memory.
        """
        COLS: tl.constexpr = _grid_cols(M, OTAM)
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
                wd, wu, wl = _cell_weights(R[i - 1] if i >= 1 else (), R[i], i, j, COLS, OTAM, HARD)
                e = tl.zeros_like(g)
                if i == N - 1 and j == COLS - 1:
                    e += 1.0
                if i + 1 < N and j + 1 < COLS:
                    if _has_diag(i + 1, j + 1, COLS, OTAM):
                        e += below_e[j + 1] * below_wd[j + 1]
                if i + 1 < N:
                    if _has_up(i + 1, j, COLS, OTAM):
                        e += below_e[j] * below_wu[j]
                if j + 1 < COLS:
                    e += right_e * right_wl
                row_e = (e,) + row_e
                row_wd = (wd,) + row_wd
                row_wu = (wu,) + row_wu
                right_e = e
                right_wl = wl
            grad = ()  # cost column k is grid column k, or k + 1 for otam
            for k in tl.static_range(M):
                grad = grad + (row_e[k + 1 if OTAM else k] * g,)
            _store_row(grad_ptr, src_ptr, offsets, live, i, row_stride, col_stride, grad, M, VEC, ACCUMULATE,
                       BLOCK_B)
            below_e = row_e
            below_wd = row_wd
            below_wu = row_wu

    # Batch sizes, the similarity's S and its magic number, and the strides are runtime values Triton would
    # otherwise specialise on (== 1, % 16): not specialised, every variant compiles once per shape, mode
    # and pass; what the loads may assume about the layout comes from the launcher as VEC.
    _RUNTIME = ["B", "S", "S_MAGIC", "S_SHIFT", "stride_b", "stride_s", "stride_n", "stride_m"]

    @triton.jit(do_not_specialize=_RUNTIME)
    def _dtw_short_fwd_kernel(
        cost_ptr, out_ptr, length_ptr, scale: tl.float64,
        B, S, S_MAGIC: tl.uint32, S_SHIFT, stride_b, stride_s, stride_n, stride_m,
        N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr, LENGTH: tl.constexpr,
        SYMMETRIC: tl.constexpr, SIMILARITY: tl.constexpr, FAST_MATH: tl.constexpr, VEC: tl.constexpr,
        BLOCK_B: tl.constexpr,
    ):
        """value = R[last] (+ the same on Cᵀ with SYMMETRIC: OTAM's two directions, one read of C).

        ``scale`` = log2(e)/γ (1 for hard), an fp64 argument converted to the accumulation dtype here.
        """
        pairs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        live = pairs < B
        offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, SIMILARITY)
        scale = tl.full([], scale, out_ptr.dtype.element_ty)
        last, last_len, _ = _forward_rows(cost_ptr, offsets, live, stride_n, stride_m, scale,
                                          N, M, OTAM, HARD, LENGTH, False, FAST_MATH, SIMILARITY, VEC, BLOCK_B)
        value = last[_grid_cols(M, OTAM) - 1]
        if SYMMETRIC:  # rows of Cᵀ are the columns of C, already in L1
            last_t, _, _ = _forward_rows(cost_ptr, offsets, live, stride_m, stride_n, scale,
                                         M, N, OTAM, HARD, False, False, FAST_MATH, SIMILARITY, 1, BLOCK_B)
            value += last_t[_grid_cols(N, OTAM) - 1]
        tl.store(out_ptr + pairs, value / scale, mask=live)
        if LENGTH:
            tl.store(length_ptr + pairs, last_len[_grid_cols(M, OTAM) - 1], mask=live)

    @triton.jit(do_not_specialize=_RUNTIME + ["stride_go", "stride_gb", "stride_gs", "stride_gn", "stride_gm"])
    def _dtw_short_bwd_kernel(
        cost_ptr, grad_out_ptr, grad_ptr, first_ptr, scale: tl.float64,
        B, S, S_MAGIC: tl.uint32, S_SHIFT, stride_b, stride_s, stride_n, stride_m, stride_go,
        stride_gb, stride_gs, stride_gn, stride_gm,
        N: tl.constexpr, M: tl.constexpr, OTAM: tl.constexpr, HARD: tl.constexpr, SYMMETRIC: tl.constexpr,
        ACCUMULATE: tl.constexpr, SIMILARITY: tl.constexpr, FAST_MATH: tl.constexpr, VEC: tl.constexpr,
        VEC_G: tl.constexpr, BLOCK_B: tl.constexpr,
    ):
        """Recomputes R in registers from the cost, then the reverse recursion; dcost = E·dvalue.

        SIMILARITY stores dsim = -dcost. ``first_ptr`` (the gradient's layout) holds the first direction's
        gradient with SYMMETRIC, or the gradient to add onto with ACCUMULATE: the gradient itself, or an
        fp32 scratch for a 16-bit gradient, so the two directions' sum is rounded once.
        """
        pairs = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        live = pairs < B
        offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_b, stride_s, SIMILARITY)
        grad_offsets = _pair_offsets(pairs, S, S_MAGIC, S_SHIFT, stride_gb, stride_gs, SIMILARITY)
        ACC = grad_out_ptr.dtype.element_ty
        scale = tl.full([], scale, ACC)
        g = tl.load(grad_out_ptr + pairs.to(tl.int64) * stride_go, mask=live, other=0.0).to(ACC)
        if SIMILARITY:
            g = -g
        _, _, R = _forward_rows(cost_ptr, offsets, live, stride_n, stride_m, scale,
                                N, M, OTAM, HARD, False, True, FAST_MATH, SIMILARITY, VEC, BLOCK_B)
        if SYMMETRIC:
            _backward_rows(R, g, first_ptr, first_ptr, grad_offsets, live, stride_gn, stride_gm, N, M, OTAM, HARD,
                           False, VEC_G, BLOCK_B)
            # Cᵀ's gradient, transposed, adds onto C's
            _, _, R = _forward_rows(cost_ptr, offsets, live, stride_m, stride_n, scale,
                                    M, N, OTAM, HARD, False, True, FAST_MATH, SIMILARITY, 1, BLOCK_B)
            tl.debug_barrier()  # the first pass's stores before this pass reads them back
            _backward_rows(R, g, grad_ptr, first_ptr, grad_offsets, live, stride_gm, stride_gn, M, N, OTAM, HARD,
                           True, 1, BLOCK_B)
        else:
            _backward_rows(R, g, grad_ptr, first_ptr, grad_offsets, live, stride_gn, stride_gm, N, M, OTAM, HARD,
                           ACCUMULATE, VEC_G, BLOCK_B)


@functools.lru_cache(maxsize=None)
def _short_constexprs(n, m, mode, fp32, interpreting):
    # libdevice's lg2.approx exists only compiled; one pair per thread
    return dict(N=n, M=m, OTAM=mode == "otam", HARD=mode == "hard", FAST_MATH=fp32 and not interpreting,
                BLOCK_B=_threads_per_program(SHORT_WARPS))


def _constexprs(x, mode):
    return _short_constexprs(*x.shape[-2:], mode, _accumulation_dtype(x.dtype) == torch.float32, _interpreting())


@functools.lru_cache(maxsize=1024)
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


def _vector_width(x):
    """Elements per 16-byte vector access of a row of ``x``'s matrices where every row is contiguous and
    16-byte aligned (then a thread reads its pair's row in vectors), else 1 (one access per element)."""
    vec = VECTOR_BYTES // x.element_size()
    aligned = x.data_ptr() % VECTOR_BYTES == 0 and x.stride(-1) == 1 and x.shape[-1] % vec == 0
    strides_aligned = all(stride % vec == 0 or size == 1 for stride, size in zip(x.stride()[:-1], x.shape[:-1]))
    return vec if aligned and strides_aligned else 1


def _short_forward(cost, mode, gamma, with_length, symmetric=False, similarity=False):
    """(value (B,), length (B,) or None); ``cost`` is a similarity (Q, S, N, M) with ``similarity``."""
    layout = _pair_layout(cost, similarity)
    out = torch.empty(layout[0], dtype=_accumulation_dtype(cost.dtype), device=cost.device)
    length = torch.empty_like(out) if with_length else out
    meta = dict(_constexprs(cost, mode), LENGTH=with_length, SYMMETRIC=symmetric, SIMILARITY=similarity,
                VEC=_vector_width(cost))
    block = meta["BLOCK_B"]
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_short_fwd_kernel, (triton.cdiv(layout[0], block),),
                             (cost, out, length, _scale(mode, gamma), *layout), meta, SHORT_WARPS, block))
    return out, (length if with_length else None)


def _short_backward_launch(cost, grad_out, grad, first, mode, gamma, similarity, symmetric=False, accumulate=False):
    layout = _pair_layout(cost, similarity)
    meta = dict(_constexprs(cost, mode), SYMMETRIC=symmetric, ACCUMULATE=accumulate, SIMILARITY=similarity,
                VEC=_vector_width(cost), VEC_G=_vector_width(first if symmetric else grad))
    args = (cost, grad_out, grad, first, _scale(mode, gamma), *layout, grad_out.stride(0),
            *_pair_layout(grad, similarity)[4:])
    block = meta["BLOCK_B"]
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_short_bwd_kernel, (triton.cdiv(layout[0], block),), args, meta, SHORT_WARPS, block))


def _short_backward(cost, grad_out, mode, gamma, symmetric=False, similarity=False):
    """dvalue/dcost (the cost's shape), or with ``similarity`` dvalue/dsim = -dvalue/dcost laid out
    like the similarity where it is dense (a permuted matmul output gets its gradient in the same
    layout, so the matmul's backward reads it without a copy).

    symmetric: the gradient of dtw(C) + dtw(Cᵀ); both directions are summed in the accumulation dtype
    and rounded once to the cost's dtype.
    """
    grad = torch.empty_like(cost) if similarity else torch.empty(cost.shape, dtype=cost.dtype, device=cost.device)
    acc = _accumulation_dtype(cost.dtype)
    grad_out = grad_out.to(acc)
    if not symmetric:
        _short_backward_launch(cost, grad_out, grad, grad, mode, gamma, similarity)
        return grad
    first = grad if grad.dtype == acc else torch.empty_like(grad, dtype=acc)  # same strides as grad
    if max(cost.shape[-2:]) <= SYMMETRIC_BWD_MAX:
        _short_backward_launch(cost, grad_out, grad, first, mode, gamma, similarity, symmetric=True)
    else:  # both directions' R in one program spill past 8x8 (benchmarks/dtw_static_sm90.md): a launch each
        _short_backward_launch(cost, grad_out, first, first, mode, gamma, similarity)
        transposed = [t.transpose(-1, -2) for t in (cost, grad, first)]
        _short_backward_launch(transposed[0], grad_out, *transposed[1:], mode, gamma, similarity, accumulate=True)
    return grad
