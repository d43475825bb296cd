"""M3Net's three matching functions (paper §3.4), batched over all (query, support) pairs.

Every matcher takes query frames (Q, T, d) and support frames (G, S, T, d), G in {1, Q}: G = Q
when the support features depend on the query (inductive IECE re-encodes the supports per
query), G = 1 otherwise. Each returns a distance (Q, N) (smaller = closer).
"""
import torch
from torch import nn

from m3net.kernels import dtw_similarity
from m3net.model.episode_ops import (
    class_mean_distance,
    cosine_cost_all_pairs,
    safe_sqrt,
    similarity_all_pairs,
    stack_by_class,
    unit_distance,
)

DTW_MODES = ("hard", "soft")


def instance_matching(query, support, support_labels, n_way, mode="hard", gamma=0.1):
    """I-M (§3.4.1): D1 = mean over a class's supports of the average cosine cost along the DTW path.

    cost M = 1 - cos of frame pairs, all Q·S pairs in one dtw_similarity call on the (Q, S, T, T) view of
    the frame-similarity matmul (the kernel forms 1 - s in registers; no cost tensor). "Average
    along the optimal path" = DTW value / number of cells on the hard optimal path, both from the
    same pass over the cost:
      mode="hard": the paper's DP (min over 3 predecessors): D is the mean cost of the optimal
                   path's cells (value = Σ cost·path, gradient = the path indicator / length).
      mode="soft": soft-DTW value (smoothing ``gamma``) over the hard path's length, a smoother
                   gradient spread over near-optimal paths.
    The path length is an integer count without gradient.
    """
    sim = similarity_all_pairs(query, support)  # (Q, S, T, T), strided
    total, length = dtw_similarity(sim, mode=mode, gamma=gamma, with_length=True)  # (Q, S) each
    pair = (total / length).to(sim.dtype)  # (Q, S)
    return class_mean_distance(pair, support_labels, n_way)  # (Q, N)


def task_matching(query, support, support_labels, n_way):
    """T-M (§3.4.3): bidirectional nearest-frame distance, D3 = mean over a class's supports.

    D_ij = mean over query frames of the distance to the nearest support frame + the same from
    the support side. Frame distances are euclidean between unit-normalised frames (see
    unit_distance), i.e. sqrt(2 · cosine cost).
    """
    frame = safe_sqrt(2 * cosine_cost_all_pairs(query, support))  # (Q, S, T_query, T_support)
    pair = frame.min(dim=3).values.mean(dim=2) + frame.min(dim=2).values.mean(dim=2)  # (Q, S)
    return class_mean_distance(pair, support_labels, n_way)  # (Q, N)


class CategoryMatching(nn.Module):
    """C-M (§3.4.2): two-way cross-attention reconstruction against the class prototype.

    Prototype V_c = the K·T stacked support frames of class c. With shared W_Q, W_K, W_V (d × d_k):
      query-centred:      V̂_c = softmax(V_j W_Q (V_c W_K)ᵀ / √d_k) V_c W_V,  D(q→s) = ‖V_j W_V − V̂_c‖
      prototype-centred:  V̂_j = softmax(V_c W_Q (V_j W_K)ᵀ / √d_k) V_j W_V,  D(s→q) = ‖V_c W_V − V̂_j‖
    D2 = D(s→q) + D(q→s); each norm is taken per frame, between unit-normalised vectors (see
    unit_distance), and averaged over that side's frames, so the two directions weigh equally although the
    prototype has K·T frames.
    Needs the same number of supports in every class.
    """

    def __init__(self, dim, attention_dim):
        super().__init__()
        self.scale = attention_dim ** -0.5
        self.w_q = nn.Linear(dim, attention_dim, bias=False)
        self.w_k = nn.Linear(dim, attention_dim, bias=False)
        self.w_v = nn.Linear(dim, attention_dim, bias=False)

    def reconstruct(self, target, source):
        """Rebuild target's frames from source's: target (..., A, d), source (..., B, d) -> (target W_V, rebuilt),
        each (..., A, d_k)."""
        attention = torch.softmax(self.w_q(target) @ self.w_k(source).transpose(-1, -2) * self.scale, dim=-1)
        return self.w_v(target), attention @ self.w_v(source)

    def forward(self, query, support, support_labels, n_way):
        prototype = stack_by_class(support, support_labels, n_way, dim=1).flatten(2, 3)  # (G, N, K·T, d)
        q = query[:, None]  # (Q, 1, T, d) against (G, N, K·T, d)
        q_values, rebuilt_prototype = self.reconstruct(q, prototype)  # (Q, 1, T, d_k), (Q, N, T, d_k)
        p_values, rebuilt_query = self.reconstruct(prototype, q)  # (G, N, K·T, d_k), (Q, N, K·T, d_k)
        query_to_support = unit_distance(q_values, rebuilt_prototype).mean(dim=-1)  # (Q, N)
        support_to_query = unit_distance(p_values, rebuilt_query).mean(dim=-1)  # (Q, N)
        return query_to_support + support_to_query
