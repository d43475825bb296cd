"""Triton, long path (grids past SHORT_MAX, up to MAX_KERNEL_WIDTH columns): anti-diagonal wavefronts
over lanes that each hold K columns of a row in registers; the forward stores the predecessor
weights the backward reads. Kernels and launchers.

The algorithm, limits and complexity are in the header of dtw.py.
"""
import torch

from m3net.kernels.dtw_grid import (
    KernelLaunch,
    _accumulation_dtype,
    _device_guard,
    _grid_shape,
    _interpreting,
    _launch,
    _scale,
    _threads_per_program,
    tl,
    triton,
)

LONG_WARPS = 1  # pinned: one compile per (mode, pass, dtype, lane tiling), whatever the batch
COLUMNS_PER_LANE = 8  # K: one lane's share of a row, in registers

if triton is not None:  # the jitted helpers exist only where triton is installed
    from m3net.kernels.dtw_grid import _diag_lanes, _left_lanes, _log2, _up_lanes

    @triton.jit
    def _soft_min3(a, b, c, has_a, has_b, has_c, HARD: tl.constexpr, FAST_MATH: tl.constexpr):
        """(smin, wa, wb, wc): the (soft) minimum over the predecessors (diag, up, left) = (a, b, c) in
        log2 units and each one's weight; a missing one (has_* false) weighs 0, a source (none) has
        smin 0 and weights 0. Hard ties go to the earlier argument."""
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
            smin = tl.where(any_pred, lo, 0.0)
        else:
            # Predecessors all +inf (behind inf costs) or none: shift 0, every term exactly 0, so the
            # cell is +inf (or a source's 0) with zero weights, as in the reference, not NaN.
            shift = tl.where(lo < inf, lo, 0.0)
            ea = tl.exp2(shift - a)  # a missing predecessor: exp2(-inf) = 0
            eb = tl.exp2(shift - b)
            ec = tl.exp2(shift - c)
            total = tl.maximum(ea + eb + ec, 1.0)  # >= 1 anyway where one is finite: the minimum's 2^0
            smin = tl.where(any_pred, lo - _log2(total, FAST_MATH), 0.0)
            inv = 1.0 / total
            wa = ea * inv
            wb = eb * inv
            wc = ec * inv
        return smin, wa, wb, wc

    @triton.jit
    def _lane_columns(lanes, cols, M, stride_m, OTAM: tl.constexpr, K: tl.constexpr):
        """Per column c of a lane, the same at every step: its grid column j = l·K + c, the offset of its
        cost column (otam: j - 1; grid columns 0 and M+1 are zero padding) and whether that exists."""
        columns = ()
        cost_columns = ()
        cost_masks = ()
        for c in tl.static_range(K):
            j = lanes * K + c
            k = j - 1 if OTAM else j
            columns = columns + (j,)
            cost_columns = cost_columns + (k.to(tl.int64) * stride_m,)
            cost_masks = cost_masks + ((k >= 0) & (k < M),)
        return columns, cost_columns, cost_masks

    _RUNTIME = ["B", "N", "M", "stride_b", "stride_n", "stride_m"]  # not specialised: one compile per tiling

    @triton.jit(do_not_specialize=_RUNTIME)
    def _dtw_long_fwd_kernel(
        cost_ptr, out_ptr, w_ptr, scale: tl.float64, B, N, M, stride_b, stride_n, stride_m,
        OTAM: tl.constexpr, HARD: tl.constexpr, STORE_WEIGHTS: tl.constexpr, FAST_MATH: tl.constexpr,
        BLOCK_B: tl.constexpr, L: tl.constexpr, K: tl.constexpr,
    ):
        """BLOCK_B pairs x L lanes, one (pair, lane) per thread. Lane l holds grid columns l·K .. l·K+K-1
        and at step t computes row i = t - l of them, left to right; its left neighbour's last value of
        the same row arrives from lane l-1 (computed one step earlier), its up and diag values are its
        own previous row. value = R[N-1, cols-1] (in log2 units until the final division by scale)."""
        ACC = out_ptr.dtype.element_ty
        scale = tl.full([], scale, ACC)
        pair_ids = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        pairs = pair_ids[:, None].to(tl.int64)  # (BLOCK_B, 1)
        lanes = tl.arange(0, L)[None, :]  # (1, L)
        live = pairs < B
        cols = M + 2 if OTAM else M
        columns, cost_columns, cost_masks = _lane_columns(lanes, cols, M, stride_m, OTAM, K)
        from_left = tl.maximum(lanes - 1, 0) + tl.zeros([BLOCK_B, L], tl.int32)
        # Before its first row a lane's neighbours are never read (the predecessor rules exclude them):
        # zeros keep the idle lanes' arithmetic finite.
        zero = tl.zeros([BLOCK_B, L], ACC)
        up = ()  # R[i-1, l·K + c]: the lane's previous row
        for c in tl.static_range(K):
            up = up + (zero,)
        left_in = zero  # R[i, l·K - 1], from lane l-1
        diag_in = zero  # R[i-1, l·K - 1]
        value = zero  # R[N-1, cols-1] in the lane that computes it, 0 elsewhere
        for t in range(0, N + L - 1):
            i = t - lanes  # (1, L): each lane one row behind the lane on its left
            in_row = live & (i >= 0) & (i < N)
            costs = cost_ptr + pairs * stride_b + i.to(tl.int64) * stride_n
            weights = w_ptr + ((pairs * N + i) * cols) * 3  # W[pair, i, j, diag | up | left]
            last_row = i == N - 1
            row = ()
            left = left_in
            diag = diag_in
            for c in tl.static_range(K):
                j = columns[c]
                cost = tl.load(costs + cost_columns[c], mask=in_row & cost_masks[c], other=0.0).to(ACC)
                smin, wd, wu, wl = _soft_min3(diag, up[c], left, _diag_lanes(i, j, cols, OTAM),
                                              _up_lanes(i, j, cols, OTAM), _left_lanes(i, j, cols, OTAM), HARD,
                                              FAST_MATH)
                r = cost * scale + smin
                if STORE_WEIGHTS:
                    keep = in_row & (j < cols)
                    tl.store(weights + j * 3, wd.to(ACC), mask=keep)
                    tl.store(weights + j * 3 + 1, wu.to(ACC), mask=keep)
                    tl.store(weights + j * 3 + 2, wl.to(ACC), mask=keep)
                value = tl.where(last_row & (j == cols - 1), r, value)
                row = row + (r,)
                diag = up[c]
                left = r
            up = row
            diag_in = left_in
            if L > 1:  # lane l's last value of this row is lane l+1's left neighbour on the next step
                left_in = tl.gather(row[K - 1], from_left, axis=1)
        tl.store(out_ptr + pair_ids, tl.sum(value, axis=1) / scale, mask=pair_ids < B)

    @triton.jit(do_not_specialize=["B", "N", "M", "stride_go", "stride_gb", "stride_gn", "stride_gm"])
    def _dtw_long_bwd_kernel(
        w_ptr, grad_out_ptr, grad_ptr, B, N, M, stride_go, stride_gb, stride_gn, stride_gm,
        OTAM: tl.constexpr, BLOCK_B: tl.constexpr, L: tl.constexpr, K: tl.constexpr,
    ):
        """The reverse recursion E[c] = Σ_successors E[s]·W[s, direction] on the forward's tiling, mirrored:
        lane l computes row i = N-1 - t + (L-1-l) at step t, right to left, one step after lane l+1, which
        hands over E·W_left of its first cell (this row) and E·W_diag of it (the row below, a step earlier)."""
        ACC = w_ptr.dtype.element_ty
        pairs = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None].to(tl.int64)  # (BLOCK_B, 1)
        lanes = tl.arange(0, L)[None, :]  # (1, L)
        live = pairs < B
        cols = M + 2 if OTAM else M
        columns, grad_columns, grad_masks = _lane_columns(lanes, cols, M, stride_gm, OTAM, K)
        g = tl.load(grad_out_ptr + pairs * stride_go, mask=live, other=0.0).to(ACC)
        from_right = tl.minimum(lanes + 1, L - 1) + tl.zeros([BLOCK_B, L], tl.int32)
        last_lane = lanes == L - 1
        zero = tl.zeros([BLOCK_B, L], ACC)
        below_e = ()  # E of row i+1 and that row's weights towards its diag / up predecessors
        below_wd = ()
        below_wu = ()
        for c in tl.static_range(K):
            below_e = below_e + (zero,)
            below_wd = below_wd + (zero,)
            below_wu = below_wu + (zero,)
        right_in = zero  # E·W_left of (i, l·K + K), from lane l+1
        diag_new = zero  # E·W_diag of (i, l·K + K), from lane l+1: used one step later, at row i - 1
        diag_in = zero  # E·W_diag of (i+1, l·K + K)
        for t in range(0, N + L - 1):
            i = N - 1 - t + (L - 1 - lanes)  # (1, L)
            in_row = live & (i >= 0) & (i < N)
            weights = w_ptr + ((pairs * N + i) * cols) * 3
            grads = grad_ptr + pairs * stride_gb + i.to(tl.int64) * stride_gn
            last_row = i == N - 1
            wd = ()
            wu = ()
            wl = ()
            for c in tl.static_range(K):
                keep = in_row & (columns[c] < cols)  # elsewhere no successor: weight 0
                wd = wd + (tl.load(weights + columns[c] * 3, mask=keep, other=0.0),)
                wu = wu + (tl.load(weights + columns[c] * 3 + 1, mask=keep, other=0.0),)
                wl = wl + (tl.load(weights + columns[c] * 3 + 2, mask=keep, other=0.0),)
            row_e = ()  # built right to left by prepending
            right = right_in
            for c in tl.static_range(K - 1, -1, -1):
                e = below_e[c] * below_wu[c] + right  # successors (i+1, j) and (i, j+1)
                if c + 1 < K:  # successor (i+1, j+1)
                    e += below_e[c + 1] * below_wd[c + 1]
                else:
                    e += diag_in
                e = tl.where(last_row & (columns[c] == cols - 1), 1.0, e)
                tl.store(grads + grad_columns[c], (e * g).to(grad_ptr.dtype.element_ty), mask=in_row & grad_masks[c])
                row_e = (e,) + row_e
                right = e * wl[c]
            diag_in = diag_new
            if L > 1:  # the last lane's right neighbour is past the grid
                right_in = tl.where(last_lane, 0.0, tl.gather(right, from_right, axis=1))
                diag_new = tl.where(last_lane, 0.0, tl.gather(row_e[0] * wd[0], from_right, axis=1))
            below_e = row_e
            below_wd = wd
            below_wu = wu


def _long_tiling(cols):
    """(K columns per lane, L lanes per pair with L·K >= cols, pairs per program): one (pair, lane) per
    thread of a LONG_WARPS program, so a pair's lanes sit in one warp."""
    k = min(COLUMNS_PER_LANE, triton.next_power_of_2(cols))
    lanes = triton.next_power_of_2(triton.cdiv(cols, k))
    return k, lanes, _threads_per_program(LONG_WARPS) // lanes


def _long_forward(cost, mode, gamma, store_weights):
    """(value (B,), predecessor weights (B, rows, cols, 3) or None), in the accumulation dtype."""
    batch, n, m = cost.shape
    rows, cols = _grid_shape(mode, n, m)
    acc = _accumulation_dtype(cost.dtype)
    out = torch.empty(batch, dtype=acc, device=cost.device)
    weights = torch.empty(batch, rows, cols, 3, dtype=acc, device=cost.device) if store_weights else out
    k, lanes, block_b = _long_tiling(cols)
    meta = dict(OTAM=mode == "otam", HARD=mode == "hard", STORE_WEIGHTS=store_weights,
                FAST_MATH=acc == torch.float32 and not _interpreting(), BLOCK_B=block_b, L=lanes, K=k)
    args = (cost, out, weights, _scale(mode, gamma), batch, n, m, *cost.stride())
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_long_fwd_kernel, (triton.cdiv(batch, block_b),), args, meta, LONG_WARPS, block_b,
                             (n + lanes - 1,)))
    return out, (weights if store_weights else None)


def _long_backward(weights, grad_out, mode, n, m, dtype):
    """dvalue/dcost (B, N, M) in ``dtype`` from the forward's weights and dvalue (B,)."""
    batch = weights.shape[0]
    _, cols = _grid_shape(mode, n, m)
    grad = torch.empty(batch, n, m, dtype=dtype, device=weights.device)
    grad_out = grad_out.to(weights.dtype)
    k, lanes, block_b = _long_tiling(cols)
    meta = dict(OTAM=mode == "otam", BLOCK_B=block_b, L=lanes, K=k)
    args = (weights, grad_out, grad, batch, n, m, grad_out.stride(0), *grad.stride())
    with _device_guard(weights):
        _launch(KernelLaunch(_dtw_long_bwd_kernel, (triton.cdiv(batch, block_b),), args, meta, LONG_WARPS, block_b,
                             (n + lanes - 1,)))
    return grad
