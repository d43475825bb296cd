"""Small tensor operations on episodes that several heads share (grouping by class, distances)."""
import torch
import torch.nn.functional as F

from m3net.model.base import class_means


def autocast_off(tensor):
    """Context that runs matching outside autocast (AMP), in the dtype its inputs are cast to.

    Class distances differ by less than 1e-2 (cosine costs of similar frames), below the
    resolution of bf16 / fp16 costs, so the encoders may run under AMP but the matchers do not.
    """
    return torch.autocast(tensor.device.type, enabled=False)


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


def safe_sqrt(x, eps=1e-8):
    """sqrt with a bounded gradient near 0 (nearly parallel frames): float32 rounding of 1 - cos
    is ~1e-7, so below eps the value is noise and its 1/(2·sqrt) gradient would be a spike."""
    return torch.sqrt(x.clamp(min=eps))


def unit_distance(a, b):
    """Euclidean distance between the unit-normalised vectors: a, b (..., d) -> (...), in [0, 2].

    Normalising first makes C-M's and T-M's distances independent of the feature scale (ImageNet
    ResNet maps average ~0.5, random-weight ones ~10) and of d, like I-M's cosine cost, so one
    temperature initialisation fits every view and every cache.
    """
    return safe_sqrt((F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(dim=-1))


def similarity_all_pairs(query, support):
    """cos between every query frame and every support frame of every (query, support) pair.

    query (Q, T, d), support (G, S, T, d) with G in {1, Q} (shared or per-query supports)
    -> (Q, S, T, T), a permuted view (no copy) of one (Q·T, d) x (d, S·T) matmul (G = 1) or Q
    batched (T, d) x (d, S·T) ones (G = Q): the (Q·S, T, d) copies of both sides are never built,
    and m3net.kernels.dtw_similarity reads the view in place.
    """
    q = F.normalize(query, dim=-1)  # (Q, T, d)
    s = F.normalize(support, dim=-1)  # (G, S, T, d)
    frames = s.flatten(1, 2).transpose(1, 2)  # (G, d, S·T)
    sim = q @ (frames[0] if s.shape[0] == 1 else frames)  # (Q, T, S·T); a 2-D right side folds into one matmul
    return sim.unflatten(2, s.shape[1:3]).transpose(1, 2)  # (Q, S, T, T)


def cosine_cost_all_pairs(query, support):
    """1 - cos of every frame pair of every (query, support) pair: (Q, T, d), (G, S, T, d) -> (Q, S, T, T).
    Same values as m3net.kernels.cosine_cost on the Q·S pairs (see similarity_all_pairs)."""
    return 1 - similarity_all_pairs(query, support)
