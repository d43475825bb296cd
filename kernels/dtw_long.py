"""Triton, long path (grids past SHORT_MAX, up to MAX_KERNEL_WIDTH columns): BLOCK_B pairs per
program, rows as register tiles, the forward stores the predecessor weights the backward reads.
Kernels and launchers.

The algorithm, limits and complexity are in the header of dtw.py.
"""
import torch

from m3net.kernels.dtw_grid import KernelLaunch, _accumulation_dtype, _device_guard, _grid_shape, _launch, tl, triton

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



def _long_forward(cost, mode, gamma, store_weights):
    batch, n, m = cost.shape
    rows, cols = _grid_shape(mode, n, m)
    acc = _accumulation_dtype(cost.dtype)
    out = torch.empty(batch, dtype=acc, device=cost.device)
    weights = torch.empty(batch, rows, cols, 3, dtype=acc, device=cost.device) if store_weights else out
    block_b, block_m = _triton_block_sizes(cols)
    meta = dict(OTAM=mode == "otam", HARD=mode == "hard", STORE_WEIGHTS=store_weights,
                ACC_DTYPE=_triton_acc_dtype(cost.dtype), BLOCK_B=block_b, BLOCK_M=block_m)
    with _device_guard(cost):
        _launch(KernelLaunch(_dtw_fwd_kernel, (triton.cdiv(batch, block_b),),
                             (cost, out, weights, batch, n, m, *cost.stride(), float(gamma)), meta, 4, block_b,
                             (rows, cols)))
    return out, (weights if store_weights else None)


def _long_backward(weights, grad_out, mode, n, m, dtype):
    batch = weights.shape[0]
    _, cols = _grid_shape(mode, n, m)
    grad = torch.empty(batch, n, m, dtype=dtype, device=weights.device)
    block_b, block_m = _triton_block_sizes(cols)
    meta = dict(OTAM=mode == "otam", ACC_DTYPE=_triton_acc_dtype(weights.dtype), BLOCK_B=block_b, BLOCK_M=block_m)
    with _device_guard(weights):
        _launch(KernelLaunch(_dtw_bwd_kernel, (triton.cdiv(batch, block_b),),
                             (weights, grad_out.to(weights.dtype).contiguous(), grad, batch, n, m, *grad.stride()),
                             meta, 4, block_b, (n, cols)))
    return grad
