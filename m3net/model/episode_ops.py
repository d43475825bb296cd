"""Small tensor operations on episodes that several heads share (grouping by class, distances)."""
import torch
import torch.nn.functional as F

from m3net.model.registry import class_means


def shots_per_class(support_labels, n_way):
    """K, checking every class has the same number of supports (stacked prototypes need it)."""
    counts = torch.bincount(support_labels, minlength=n_way)
    if bool((counts != counts[0]).any()) or int(counts[0]) == 0:
        raise ValueError(f"support_labels: every class 0..{n_way - 1} needs the same number of supports, "
                         f"got counts {counts.tolist()}")
    return int(counts[0])


def stack_by_class(values, support_labels, n_way, dim=0):
    """Supports grouped by class along ``dim``: (..., S, ...) -> (..., N, K, ...), classes in label order."""
    shots = shots_per_class(support_labels, n_way)
    order = torch.argsort(support_labels, stable=True)  # supports of class 0 first, then 1, ...
    grouped = values.index_select(dim, order)
    return grouped.unflatten(dim, (n_way, shots))


def class_mean_distance(pair_distance, support_labels, n_way):
    """Mean over each class's supports: pair_distance (Q, S) -> (Q, N)."""
    return class_means(pair_distance.t(), support_labels, n_way).t()


def safe_sqrt(x, eps=1e-12):
    """sqrt with a finite gradient at 0 (a query frame identical to a support frame)."""
    return torch.sqrt(x.clamp(min=eps))


def rms_distance(a, b):
    """Per-frame euclidean distance divided by sqrt(d): a, b (..., d) -> (...).

    Dividing by sqrt(d) keeps distances on one scale for any feature width, so one temperature
    initialisation fits d = 32 (tests) and d = 2048 (ResNet-50).
    """
    return safe_sqrt((a - b).pow(2).mean(dim=-1))


def pairwise_rms_distance(a, b):
    """rms_distance between every frame of a and every frame of b: (..., T, d), (..., U, d) -> (..., T, U).

    Expanded as |a|^2 + |b|^2 - 2ab so no (..., T, U, d) difference tensor is materialised.
    """
    squared = a.pow(2).sum(-1)[..., :, None] + b.pow(2).sum(-1)[..., None, :] - 2 * a @ b.transpose(-1, -2)
    return safe_sqrt(squared / a.shape[-1])


def cosine_cost_all_pairs(query, support):
    """1 - cos between every query frame and every support frame of every (query, support) pair.

    query (Q, T, d), support (G, S, T, d) with G in {1, Q} (shared or per-query supports)
    -> (Q, S, T, T). Same values as m3net.kernels.cosine_cost on the Q·S pairs, computed as one
    einsum so the (Q·S, T, d) copies of both sides are never built.
    """
    q = F.normalize(query, dim=-1)
    s = F.normalize(support, dim=-1).expand(query.shape[0], -1, -1, -1)  # (Q, S, T, d)
    return 1 - torch.einsum("qtd,qsud->qstu", q, s)
