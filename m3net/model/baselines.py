"""Baseline heads on the same cache and episodes as M3Net: tsn-cosine, otam, trx (protonet is in registry.py)."""
import dataclasses
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from m3net.kernels import dtw_symmetric
from m3net.model.episode_ops import autocast_off, class_mean_distance, cosine_cost_all_pairs, stack_by_class
from m3net.model.registry import FewShotHead, class_means, num_classes, register_head


@register_head("tsn-cosine")
class TSNCosine(FewShotHead):
    """TSN-style: spatial + temporal mean of each clip, class prototype = mean of its supports,
    logits = temperature · cosine(query, prototype). No parameters; the fixed temperature only
    scales the logits (argmax and accuracy do not depend on it)."""

    trainable = False

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


@register_head("otam")
class OTAM(FewShotHead):
    """OTAM (Cao et al. CVPR 2020) without training: per-frame features (spatial mean), cosine
    cost between every query and support frame, symmetric score dtw(C, otam) + dtw(Cᵀ, otam),
    mean over a class's supports, logits = -score. All Q·S pairs and both directions go through
    one dtw_symmetric call."""

    trainable = False

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8
        gamma: float = 0.1  # OTAM's soft-min smoothing λ

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        with autocast_off(query):
            cost = cosine_cost_all_pairs(query.mean(dim=(2, 3)), support.mean(dim=(2, 3))[None])  # (Q, S, T, T)
            flat = cost.flatten(0, 1)  # (Q·S, T, T)
            gamma = self.config.gamma
            score = dtw_symmetric(flat, mode="otam", gamma=gamma).to(flat.dtype)  # both directions, one launch
            return {"y": -class_mean_distance(score.view(cost.shape[:2]), support_labels, n_way)}  # (Q, N)


def sinusoidal_positions(frames, dim, dtype, device):
    """Fixed sine/cosine positional code (Vaswani et al. 2017): (T, d)."""
    position = torch.arange(frames, dtype=torch.float32, device=device)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    code = torch.zeros(frames, dim, device=device)
    code[:, 0::2] = torch.sin(position * rate)
    code[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return code.to(dtype)


class TemporalCrossTransformer(nn.Module):
    """TRX's cross-transformer for one tuple cardinality ω (Perrett et al. CVPR 2021).

    Every ordered ω-tuple of frames (i < j < ...) is one token: its frames concatenated (ω·d).
    Keys and values are LayerNorm(linear(tuple)) (d_k). For each query and class, the query's tuple
    keys attend over all K·#tuples support tuples of the class (one softmax), giving a
    query-specific prototype of value vectors; distance = ‖query values - prototype‖² / #tuples.
    """

    def __init__(self, dim, cardinality, attention_dim):
        super().__init__()
        self.cardinality = cardinality
        self.scale = attention_dim ** -0.5
        self.key = nn.Sequential(nn.Linear(cardinality * dim, attention_dim), nn.LayerNorm(attention_dim))
        self.value = nn.Sequential(nn.Linear(cardinality * dim, attention_dim), nn.LayerNorm(attention_dim))

    def tuples(self, frames):  # (X, T, d) -> (X, #tuples, ω·d)
        index = torch.tensor(list(itertools.combinations(range(frames.shape[1]), self.cardinality)), device=frames.device)
        return frames[:, index].flatten(2)

    def forward(self, query, support, support_labels, n_way):
        q_tuples, s_tuples = self.tuples(query), self.tuples(support)  # (Q, U, ω·d), (S, U, ω·d)
        n_tuples = q_tuples.shape[1]
        q_keys, q_values = self.key(q_tuples), self.value(q_tuples)  # (Q, U, d_k)
        s_keys = stack_by_class(self.key(s_tuples), support_labels, n_way).flatten(1, 2)  # (N, K·U, d_k)
        s_values = stack_by_class(self.value(s_tuples), support_labels, n_way).flatten(1, 2)
        attention = torch.softmax(q_keys[:, None] @ s_keys.transpose(1, 2) * self.scale, dim=-1)  # (Q, N, U, K·U)
        prototype = attention @ s_values  # (Q, N, U, d_k)
        return (q_values[:, None] - prototype).pow(2).sum(dim=(2, 3)) / n_tuples  # (Q, N)


@register_head("trx")
class TRX(FewShotHead):
    """TRX (Perrett et al. CVPR 2021) on cached maps: spatial mean per frame + fixed sinusoidal
    positions (scaled 0.1 as in the reference code), one cross-transformer per tuple cardinality
    (pairs by default, ``cardinalities=(2, 3)`` adds triples), logits = -distance averaged over
    cardinalities. Trained with cross-entropy on y."""

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8
        cardinalities: tuple = (2,)
        attention_dim: int = 1152  # TRX's trans_linear_out_dim
        position_scale: float = 0.1

    def __init__(self, config):
        super().__init__(config)
        if not config.cardinalities or any(c < 1 or c > config.num_frames for c in config.cardinalities):
            raise ValueError(f"trx: cardinalities={config.cardinalities}; expected values in 1..num_frames={config.num_frames}")
        self.transformers = nn.ModuleList(TemporalCrossTransformer(config.feature_dim, c, config.attention_dim)
                                          for c in config.cardinalities)

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        frames = torch.cat([support, query]).mean(dim=(2, 3))  # (S+Q, T, C)
        frames = frames + self.config.position_scale * sinusoidal_positions(*frames.shape[1:], frames.dtype, frames.device)
        s, q = frames[: support.shape[0]], frames[support.shape[0]:]
        distance = torch.stack([t(q, s, support_labels, n_way) for t in self.transformers]).mean(dim=0)  # (Q, N)
        return {"y": -distance}
