"""Baseline heads on the same cache and episodes as M3Net: tsn-cosine, otam, trx (protonet is in registry.py)."""
import dataclasses

import torch.nn.functional as F

from m3net.kernels import dtw_similarity
from m3net.model.cross_transformer import cross_transformers, mean_tuple_distance
from m3net.model.episode_ops import autocast_off, class_mean_distance, similarity_all_pairs
from m3net.model.registry import FewShotHead, class_means, num_classes, register_head


@register_head("tsn-cosine")
class TSNCosine(FewShotHead):
    """TSN-style: spatial + temporal mean of each clip, class prototype = mean of its supports,
    logits = temperature · cosine(query, prototype). No parameters; the fixed temperature only
    scales the logits (argmax and accuracy do not depend on it)."""

    trainable = False
    first_pool = 1

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8
        temperature: float = 10.0

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        prototypes = class_means(support.mean(dim=(1, 2, 3)), support_labels, n_way)  # (N, C)
        cosine = F.normalize(query.mean(dim=(1, 2, 3)), dim=-1) @ F.normalize(prototypes, dim=-1).t()  # (Q, N)
        return {"y": self.config.temperature * cosine}


def otam_scores(query, support, gamma):
    """OTAM's symmetric score of every (query, support) pair: query (Q, T, d), support (S, T, d) -> (Q, S).

    One dtw_similarity call on the frame-similarity matmul's (Q, S, T, T) view, both directions in
    one launch (C = 1 - s formed in the kernel's registers). Free of data-dependent shapes, so
    torch.compile(fullgraph=True) captures it whole (the DTW is one custom-op node).
    """
    sim = similarity_all_pairs(query, support[None])  # (Q, S, T, T)
    return dtw_similarity(sim, mode="otam", gamma=gamma, symmetric=True).to(sim.dtype)  # (Q, S)


@register_head("otam")
class OTAM(FewShotHead):
    """OTAM (Cao et al. CVPR 2020) without training: per-frame features (spatial mean), cosine
    cost between every query and support frame, symmetric score dtw(C, otam) + dtw(Cᵀ, otam)
    (otam_scores), mean over a class's supports, logits = -score."""

    trainable = False
    first_pool = 1

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8
        gamma: float = 0.1  # OTAM's soft-min smoothing λ

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        with autocast_off(query):
            score = otam_scores(query.mean(dim=(2, 3)), support.mean(dim=(2, 3)), self.config.gamma)  # (Q, S)
            return {"y": -class_mean_distance(score, support_labels, n_way)}  # (Q, N)


@register_head("trx")
class TRX(FewShotHead):
    """TRX (Perrett et al., "Temporal-Relational CrossTransformers for Few-Shot Action
    Recognition", CVPR 2021; reference code github.com/tobyperrett/trx) on cached maps.

    Spatial mean per frame (the reference's ResNet avg-pool), then one cross-transformer per tuple
    cardinality (m3net.model.cross_transformer), logits = -distance averaged over cardinalities,
    trained with cross-entropy on y. Defaults are the reference's: pairs and triples
    (``temp_set`` [2, 3]), d_k = 1152, positions scaled 0.1 with dropout 0.1 added inside each
    cross-transformer, LayerNorm on the keys only.

    Deviations: the reference's run.py steps plain SGD (no momentum, lr 1e-3; ``--opt sgd`` is its
    default) once per 16 tasks; here each episode is one step of the trainer's optimizer
    (``--optimizer``, ``--momentum``, ``--lr`` apply to every head alike).
    """

    first_pool = 1  # the spatial mean of every frame comes first

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8
        cardinalities: tuple = (2, 3)  # the reference's temp_set
        attention_dim: int = 1152  # the reference's trans_linear_out_dim
        position_scale: float = 0.1
        dropout: float = 0.1  # on frames + positions (the reference's trans_dropout)

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.transformers = cross_transformers("trx", c.feature_dim, c.cardinalities, c.num_frames, c.attention_dim,
                                               c.position_scale, c.dropout)

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        s, q = support.mean(dim=(2, 3)), query.mean(dim=(2, 3))  # (S|Q, T, C)
        return {"y": -mean_tuple_distance(self.transformers, q, s, support_labels, n_way)}  # (Q, N)
