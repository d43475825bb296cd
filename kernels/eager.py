"""Literal per-cell loop transcriptions of the three DTW definitions.

This is how DTW and OTAM are commonly written in few-shot action code (a Python double loop over
cells, each step batched over pairs, autograd through the loop). It is the independent oracle the
tests compare the kernel with, and the "eager loop" column of ``m3net bench-dtw``.
"""
import torch


def _soft_min(values, gamma):
    stacked = torch.stack(values, dim=-1)
    return -gamma * torch.logsumexp(-stacked / gamma, dim=-1)


def eager_dtw(cost, mode="soft", gamma=0.1):
    """(B, N, M) -> (B,), by the textbook recursion, one cell at a time."""
    if mode == "otam":
        return eager_otam(cost, gamma)
    batch, n, m = cost.shape
    inf = torch.full((batch,), float("inf"), dtype=cost.dtype, device=cost.device)
    # R has a +inf border row/column and R[0][0] = 0 (Cuturi & Blondel's formulation).
    R = [[inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = torch.zeros(batch, dtype=cost.dtype, device=cost.device)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            preds = [R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]]
            if mode == "hard":
                best = torch.minimum(torch.minimum(preds[0], preds[1]), preds[2])
            else:
                best = _soft_min(preds, gamma)
            R[i][j] = cost[:, i - 1, j - 1] + best
    return R[n][m]


def eager_otam(cost, gamma=0.1):
    """OTAM's cumulative distance as in the TRX / OTAM few-shot code (zero column padding)."""
    dists = torch.nn.functional.pad(cost, (1, 1), "constant", 0)
    batch, n, cols = dists.shape
    cum = [[torch.zeros(batch, dtype=cost.dtype, device=cost.device) for _ in range(cols)] for _ in range(n)]
    for j in range(1, cols):  # top row: plain cumulative sum
        cum[0][j] = dists[:, 0, j] + cum[0][j - 1]
    for i in range(1, n):
        cum[i][1] = dists[:, i, 1] + _soft_min([cum[i - 1][0], cum[i - 1][1], cum[i][0]], gamma)
        for j in range(2, cols - 1):
            cum[i][j] = dists[:, i, j] + _soft_min([cum[i - 1][j - 1], cum[i][j - 1]], gamma)
        cum[i][cols - 1] = dists[:, i, cols - 1] + _soft_min(
            [cum[i - 1][cols - 2], cum[i - 1][cols - 1], cum[i][cols - 2]], gamma
        )
    return cum[n - 1][cols - 1]
