"""The pure-torch DTW: vectorised over the batch and over each anti-diagonal, float64-safe.

The oracle the Triton kernels are tested against, and the CPU path of the dispatch (dtw.py).
"""
import functools

import torch

from m3net.kernels.dtw_grid import _accumulation_dtype, _diag_rule, _left_rule, _pad_cost, _up_rule


@functools.lru_cache(maxsize=256)
def _predecessor_mask(mode, rows, cols):
    """(rows, cols, 3) bool: which of diag / up / left each cell takes its minimum over."""
    i = torch.arange(rows).view(-1, 1).expand(rows, cols)
    j = torch.arange(cols).view(1, -1).expand(rows, cols)
    rules = (_diag_rule, _up_rule, _left_rule)  # the kernels' rules, on tensors
    return torch.stack([rule(i, j, cols, mode == "otam").expand(rows, cols) for rule in rules], dim=-1)


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
            # The first minimum among the cell's own predecessors (diag, up, left tie-break), also when
            # all are +inf and tie with the INF cells standing in for missing ones.
            ties = (values == values.amin(dim=-1, keepdim=True)) & (preds != rows * cols + 1)
            best = ties.to(torch.uint8).argmax(dim=-1, keepdim=True)
            smin = values.gather(-1, best).squeeze(-1)
            weights = torch.zeros_like(values).scatter_(-1, best, 1.0) if store_weights else None
        else:
            shift = values.amin(dim=-1, keepdim=True)
            # A cell whose predecessors are all +inf (behind inf costs) is +inf and passes on no gradient.
            reachable = shift < float("inf")
            shift = torch.where(reachable, shift, 0.0)
            scaled = (shift - values) / gamma  # <= 0: exp never overflows
            lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
            smin = (shift - gamma * lse).squeeze(-1)
            weights = torch.where(reachable, torch.exp(scaled - lse), 0.0) if store_weights else None
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
