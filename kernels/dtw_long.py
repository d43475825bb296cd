"""Triton, long path (grids past SHORT_MAX, up to MAX_KERNEL_WIDTH columns): anti-diagonal wavefronts
over lanes that each hold K columns of a row in registers; the training forward stores one checkpoint
row every SEGMENT_ROWS steps, from which the backward recomputes R a segment at a time. Kernels and
launchers.

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
# S: rows a lane recomputes at a time in the backward, held in registers (S·(K+1) values); the training
# forward stores a checkpoint row per S steps, so a larger S stores less and holds more registers. On sm_90
# (Triton 3.6) the 32x32 backward takes 255 registers without spills at S = 4, spills 128 B at S = 6 and
# 408 B at S = 8 (and compiles for ~60 s instead of ~10 s): S = 4, 14,600 B per 32x32 fp32 training step.
SEGMENT_ROWS = 4

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

    @triton.jit
    def _checkpoint_offsets(group, pairs, lanes, B, L: tl.constexpr, K: tl.constexpr):
        """Offset of value 0 of each (pair, lane)'s checkpoint for ``group``; value k is k·B·L further on.
        Layout (group, k, pair, lane): the lanes of consecutive pairs are consecutive, one warp's stores
        or loads of a value one contiguous run."""
        block = pairs * 0 + group * (K + 1)  # in int64, like pairs: the offsets may pass 2^31
        return (block * B + pairs) * L + lanes

    @triton.jit(do_not_specialize=_RUNTIME)
    def _dtw_long_fwd_kernel(
        cost_ptr, out_ptr, ckpt_ptr, scale: tl.float64, B, N, M, stride_b, stride_n, stride_m,
        OTAM: tl.constexpr, HARD: tl.constexpr, CHECKPOINTS: tl.constexpr, FAST_MATH: tl.constexpr,
        BLOCK_B: tl.constexpr, L: tl.constexpr, K: tl.constexpr, S: tl.constexpr,
    ):
        """BLOCK_B pairs x L lanes, one (pair, lane) per thread. Lane l holds grid columns l·K .. l·K+K-1
        and at step t computes row i = t - l of them, left to right; its left neighbour's last value of
        the same row arrives from lane l-1 (computed one step earlier), its up and diag values are its
        own previous row. value = R[N-1, cols-1] (in log2 units until the final division by scale).

        CHECKPOINTS (a gradient will be needed): at every step t = g·S - 1 (g >= 1) each lane stores its
        row i = g·S - l - 1 and that row's value left of its columns (K + 1 values): the row above lane
        l's rows of segment g, i + l in [g·S, g·S + S), from which the backward recomputes them."""
        ACC = out_ptr.dtype.element_ty
        scale = tl.full([], scale, ACC)
        pair_ids = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        pairs = pair_ids[:, None].to(tl.int64)  # (BLOCK_B, 1)
        lanes = tl.arange(0, L)[None, :]  # (1, L)
        live = pairs < B
        cols = M + 2 if OTAM else M
        groups = (N + L - 2) // S + 1  # segments of the backward; checkpoints for segments 1 .. groups-1
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
            last_row = i == N - 1
            row = ()
            left = left_in
            diag = diag_in
            for c in tl.static_range(K):
                j = columns[c]
                cost = tl.load(costs + cost_columns[c], mask=in_row & cost_masks[c], other=0.0).to(ACC)
                smin, _, _, _ = _soft_min3(diag, up[c], left, _diag_lanes(i, j, cols, OTAM),
                                           _up_lanes(i, j, cols, OTAM), _left_lanes(i, j, cols, OTAM), HARD, FAST_MATH)
                r = cost * scale + smin
                value = tl.where(last_row & (j == cols - 1), r, value)
                row = row + (r,)
                diag = up[c]
                left = r
            if CHECKPOINTS:
                if (t % S == S - 1) & (t // S < groups - 1):
                    ckpt = ckpt_ptr + _checkpoint_offsets(t // S, pairs, lanes, B, L, K)
                    stride = B * L
                    tl.store(ckpt, left_in, mask=in_row)
                    for c in tl.static_range(K):
                        tl.store(ckpt + (c + 1) * stride, row[c], mask=in_row)
            up = row
            diag_in = left_in
            if L > 1:  # lane l's last value of this row is lane l+1's left neighbour on the next step
                left_in = tl.gather(row[K - 1], from_left, axis=1)
        tl.store(out_ptr + pair_ids, tl.sum(value, axis=1) / scale, mask=pair_ids < B)

    @triton.jit(do_not_specialize=_RUNTIME + ["stride_go", "stride_gb", "stride_gn", "stride_gm"])
    def _dtw_long_bwd_kernel(
        cost_ptr, ckpt_ptr, grad_out_ptr, grad_ptr, scale: tl.float64, B, N, M, stride_b, stride_n, stride_m,
        stride_go, stride_gb, stride_gn, stride_gm,
        OTAM: tl.constexpr, HARD: tl.constexpr, FAST_MATH: tl.constexpr, BLOCK_B: tl.constexpr, L: tl.constexpr,
        K: tl.constexpr, S: tl.constexpr,
    ):
        """The reverse recursion E[c] = Σ_successors E[s]·W[s, direction] on the forward's tiling, mirrored,
        one segment at a time from the last: lane l's rows i with i + l in [g·S, g·S + S).

        Recompute: from the segment's checkpoint (lane l's row g·S - l - 1 and the value left of it) each
        lane recomputes its S rows of R top-down, in registers (S x (K+1) values); all lanes at once, since
        lane l-1's segment starts one row below lane l's, so the left neighbour of lane l's row r is lane
        l-1's row r - 1, computed a step earlier (a warp shuffle). The arithmetic is the forward's
        (_soft_min3 on the same values); for hard, where ties decide, R is the forward's exactly (a cost
        plus a minimum, scale 1, rounds the same however it is compiled).
        Reverse: bottom-up through the segment, lane l computes row i one step after lane l+1, right to
        left: the weights W of row i from R of rows i-1 and i, then E, with lane l+1 handing over E·W_left
        of its first cell (this row) and E·W_diag of it (the row below, a step earlier)."""
        ACC = ckpt_ptr.dtype.element_ty
        scale = tl.full([], scale, ACC)
        pairs = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None].to(tl.int64)  # (BLOCK_B, 1)
        lanes = tl.arange(0, L)[None, :]  # (1, L)
        live = pairs < B
        cols = M + 2 if OTAM else M
        groups = (N + L - 2) // S + 1
        columns, cost_columns, cost_masks = _lane_columns(lanes, cols, M, stride_m, OTAM, K)
        grad_columns, grad_masks = _lane_columns(lanes, cols, M, stride_gm, OTAM, K)[1:]  # no `_`: the loop's
        g = tl.load(grad_out_ptr + pairs * stride_go, mask=live, other=0.0).to(ACC)
        from_left = tl.maximum(lanes - 1, 0) + tl.zeros([BLOCK_B, L], tl.int32)
        from_right = tl.minimum(lanes + 1, L - 1) + tl.zeros([BLOCK_B, L], tl.int32)
        last_lane = lanes == L - 1
        zero = tl.zeros([BLOCK_B, L], ACC)
        below_up = ()  # E·W_up of row i+1's cells: what they pass to row i, same column
        below_diag = ()  # E·W_diag of them: what they pass to row i, one column left
        for c in tl.static_range(K):
            below_up = below_up + (zero,)
            below_diag = below_diag + (zero,)
        right_in = zero  # E·W_left of (i, l·K + K), from lane l+1
        diag_new = zero  # E·W_diag of (i, l·K + K), from lane l+1: used one step later, at row i - 1
        diag_in = zero  # E·W_diag of (i+1, l·K + K)
        for step in range(0, groups):
            group = groups - 1 - step
            first = group * S - lanes  # lane l's first row of the segment
            # The checkpoint: R of the row above the segment, index 0 the value left of the lane's columns.
            # Segment 0 has none (its first row is row 0 or before the grid: no up or diag predecessors).
            top_row = first - 1
            top_ok = live & (first + lanes >= S) & (top_row >= 0) & (top_row < N)  # group >= 1, as a tensor
            ckpt = ckpt_ptr + _checkpoint_offsets(group - 1, pairs, lanes, B, L, K)
            top = ()
            for k in tl.static_range(K + 1):
                top = top + (tl.load(ckpt + k * (B * L), mask=top_ok, other=0.0),)
            rows = ()
            above = top
            for r in tl.static_range(S):
                i = first + r
                in_row = live & (i >= 0) & (i < N)
                costs = cost_ptr + pairs * stride_b + i.to(tl.int64) * stride_n
                left = above[K]
                if L > 1:  # lane l-1's row r - 1 is lane l's row r: its last value is the left neighbour
                    left = tl.gather(left, from_left, axis=1)
                row = (left,)
                diag = above[0]
                for c in tl.static_range(K):
                    j = columns[c]
                    cost = tl.load(costs + cost_columns[c], mask=in_row & cost_masks[c], other=0.0).to(ACC)
                    smin, _, _, _ = _soft_min3(diag, above[c + 1], left, _diag_lanes(i, j, cols, OTAM),
                                               _up_lanes(i, j, cols, OTAM), _left_lanes(i, j, cols, OTAM), HARD,
                                               FAST_MATH)
                    left = cost * scale + smin
                    row = row + (left,)
                    diag = above[c + 1]
                rows = rows + (row,)
                above = row
            for r in tl.static_range(S - 1, -1, -1):  # (S - 1 - u is no constexpr index in Triton 3.6)
                i = first + r
                in_row = live & (i >= 0) & (i < N)
                grads = grad_ptr + pairs * stride_gb + i.to(tl.int64) * stride_gn
                last_row = i == N - 1
                cur = rows[r]
                if r > 0:
                    above = rows[r - 1]
                else:
                    above = top
                wd = ()
                wu = ()
                wl = ()
                for c in tl.static_range(K):
                    j = columns[c]
                    _, d, v, h = _soft_min3(above[c], above[c + 1], cur[c], _diag_lanes(i, j, cols, OTAM),
                                            _up_lanes(i, j, cols, OTAM), _left_lanes(i, j, cols, OTAM), HARD,
                                            FAST_MATH)
                    keep = in_row & (j < cols)  # elsewhere no successor: weight 0
                    wd = wd + (tl.where(keep, d, 0.0),)
                    wu = wu + (tl.where(keep, v, 0.0),)
                    wl = wl + (tl.where(keep, h, 0.0),)
                row_e = ()  # built right to left by prepending
                right = right_in
                for c in tl.static_range(K - 1, -1, -1):
                    e = below_up[c] + right  # successors (i+1, j) and (i, j+1)
                    if c + 1 < K:  # successor (i+1, j+1)
                        e += below_diag[c + 1]
                    else:
                        e += diag_in
                    e = tl.where(last_row & (columns[c] == cols - 1), 1.0, e)
                    tl.store(grads + grad_columns[c], (e * g).to(grad_ptr.dtype.element_ty),
                             mask=in_row & grad_masks[c])
                    row_e = (e,) + row_e
                    right = e * wl[c]
                diag_in = diag_new
                if L > 1:  # the last lane's right neighbour is past the grid
                    right_in = tl.where(last_lane, 0.0, tl.gather(right, from_right, axis=1))
                    diag_new = tl.where(last_lane, 0.0, tl.gather(row_e[0] * wd[0], from_right, axis=1))
                below_up = ()
                below_diag = ()
                for c in tl.static_range(K):
                    below_up = below_up + (row_e[c] * wu[c],)
                    below_diag = below_diag + (row_e[c] * wd[c],)


def _long_tiling(cols):
    """(K columns per lane, L lanes per pair with L·K >= cols, pairs per program): one (pair, lane) per
    thread of a LONG_WARPS program, so a pair's lanes sit in one warp."""
    k = min(COLUMNS_PER_LANE, triton.next_power_of_2(cols))
    lanes = triton.next_power_of_2(triton.cdiv(cols, k))
    return k, lanes, _threads_per_program(LONG_WARPS) // lanes


def _checkpoint_shape(batch, mode, n, m):
    """Shape of the training forward's checkpoints: (segments - 1, K + 1, batch, L)."""
    k, lanes, _ = _long_tiling(_grid_shape(mode, n, m)[1])
    return ((n + lanes - 2) // SEGMENT_ROWS, k + 1, batch, lanes)


def _long_forward(cost, mode, gamma, checkpoints):
    """(value (B,), the backward's checkpoints (_checkpoint_shape) or None), in the accumulation dtype."""
    batch, n, m = cost.shape
    acc = _accumulation_dtype(cost.dtype)
    out = torch.empty(batch, dtype=acc, device=cost.device)
    saved = torch.empty(_checkpoint_shape(batch, mode, n, m), dtype=acc, device=cost.device) if checkpoints else None
    k, lanes, block_b = _long_tiling(_grid_shape(mode, n, m)[1])
    meta = dict(OTAM=mode == "otam", HARD=mode == "hard", CHECKPOINTS=checkpoints,
                FAST_MATH=acc == torch.float32 and not _interpreting(), BLOCK_B=block_b, L=lanes, K=k, S=SEGMENT_ROWS)
    # Without checkpoints (or with none to store: N + L - 1 <= S) the pointer is never written: out stands in.
    args = (cost, out, out if saved is None or saved.numel() == 0 else saved, _scale(mode, gamma), batch, n, m,
            *cost.stride())
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_long_fwd_kernel, (triton.cdiv(batch, block_b),), args, meta, LONG_WARPS, block_b,
                             (n + lanes - 1,)))
    return out, saved


def _long_backward(cost, checkpoints, grad_out, mode, gamma, dtype):
    """dvalue/dcost (B, N, M) in ``dtype`` from the cost, the forward's checkpoints and dvalue (B,)."""
    batch, n, m = cost.shape
    acc = _accumulation_dtype(cost.dtype)
    grad = torch.empty(batch, n, m, dtype=dtype, device=cost.device)
    grad_out = grad_out.to(acc)
    k, lanes, block_b = _long_tiling(_grid_shape(mode, n, m)[1])
    meta = dict(OTAM=mode == "otam", HARD=mode == "hard", FAST_MATH=acc == torch.float32 and not _interpreting(),
                BLOCK_B=block_b, L=lanes, K=k, S=SEGMENT_ROWS)
    segments = (n + lanes - 2) // SEGMENT_ROWS + 1
    args = (cost, checkpoints if checkpoints.numel() else grad_out, grad_out, grad, _scale(mode, gamma), batch, n, m,
            *cost.stride(), grad_out.stride(0), *grad.stride())
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_long_bwd_kernel, (triton.cdiv(batch, block_b),), args, meta, LONG_WARPS, block_b,
                             (segments,)))
    return grad
