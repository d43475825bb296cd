"""Baseline heads on the same cache and episodes as M3Net: protonet, tsn-cosine, otam, trx."""
import torch
import torch.nn.functional as F

from m3net.config import setting, settings
from m3net.kernels import dtw_similarity
from m3net.model.base import FewShotHead, HeadConfig, class_means, num_classes
from m3net.model.cross_transformer import cross_transformers, mean_tuple_distance
from m3net.model.episode_ops import autocast_off, class_mean_distance, similarity_all_pairs
from m3net.model.registry import register_head


@register_head("protonet")
class ProtoNet(FewShotHead):
    """Prototypical networks on mean-pooled clips: spatial + temporal mean of the cached maps,
    class prototype = mean of its supports, logits = negative squared euclidean distance
    (Snell et al. 2017). No parameters: it scores straight from the cache."""

    trainable = False
    first_pool = 1

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        s = support.mean(dim=(1, 2, 3))  # (S, C)
        q = query.mean(dim=(1, 2, 3))  # (Q, C)
        prototypes = class_means(s, support_labels, n_way)  # (N, C)
        return {"y": -torch.cdist(q, prototypes).pow(2)}  # (Q, N)


@register_head("tsn-cosine")
class TSNCosine(FewShotHead):
    """TSN-style: spatial + temporal mean of each clip, class prototype = mean of its supports,
    logits = temperature · cosine(query, prototype). No parameters; the fixed temperature only
    scales the logits (argmax and accuracy do not depend on it)."""

    trainable = False
    first_pool = 1

    @settings
    class Config(HeadConfig):
        temperature: float = setting(10.0, "Scale of the cosine logits (TSN + cosine, the paper's Table 1 baseline); "
                                     "argmax and accuracy do not depend on it.", minimum=0, exclusive=True)

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
    (otam_scores), mean over a class's supports, logits = -score.

    Deviation: the reference cosine (tobyperrett/few-shot-action-recognition utils.cos_sim, copied in
    HyRSM) divides by ‖x‖‖y‖ + 0.01; here the frames are unit-normalised (F.normalize). Measured on
    40 clips of the generated benchmark's cache, the cosines differ by at most 7e-7 on raw frames
    (norms 124-617) and 4e-5 on standardised ones (norms 16-30)."""

    trainable = False
    first_pool = 1

    @settings
    class Config(HeadConfig):
        gamma: float = setting(0.1, "OTAM's soft-min smoothing λ (Cao et al. use 0.1 on cosine costs in [0, 2]); "
                               "lower it when the costs' spread is small (e.g. 0.01).", minimum=0, exclusive=True)

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

    Training: the reference's run.py steps plain SGD (no momentum, no weight decay, lr 1e-3; ``--opt sgd``
    is its default) once per 16 tasks (``--tasks_per_batch 16``, each task's loss divided by 16) with 5
    queries per class, and a task's loss is the SUM of the cross-entropy over its queries (utils.py
    ``loss``: ``reduction='none'``, then ``-torch.sum(score, dim=0)``); ``train-head --preset reference``
    trains it that way (m3net.train.presets.RECIPES: ``loss_reduction=sum``), otherwise the trainer's
    options apply to every head alike. The same author's copy in tobyperrett/few-shot-action-recognition
    takes the mean (its CNN_FSHead.loss); m3net follows tobyperrett/trx, the code of the paper. Its
    first optimizer step comes after 15 tasks (``iteration`` is counted before the check), every later
    one after 16; m3net's after 16.
    """

    first_pool = 1  # the spatial mean of every frame comes first

    @settings
    class Config(HeadConfig):
        cardinalities: tuple = setting((2, 3), "Tuple sizes, one cross-transformer each (the reference's temp_set: "
                                       "pairs and triples), each in 1..num_frames.", minimum=1)
        attention_dim: int = setting(1152, "d_k of the query/key/value projections (the reference's "
                                     "trans_linear_out_dim).", minimum=1)
        position_scale: float = setting(0.1, "Scale of the sinusoidal frame positions added to the frames.")
        dropout: float = setting(0.1, "Dropout on frames + positions (the reference's trans_dropout), below 1.",
                                 minimum=0)

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.transformers = cross_transformers("trx", c.feature_dim, c.cardinalities, c.num_frames, c.attention_dim,
                                               c.position_scale, c.dropout)

    def widths(self):
        return {**super().widths(), "attention_dim": self.config.attention_dim}  # d_k of the cross-transformers

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        s, q = support.mean(dim=(2, 3)), query.mean(dim=(2, 3))  # (S|Q, T, C)
        return {"y": -mean_tuple_distance(self.transformers, q, s, support_labels, n_way)}  # (Q, N)
