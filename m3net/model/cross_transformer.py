"""TRX's temporal cross-transformer (Perrett et al. CVPR 2021), shared by the trx and strm heads.

Follows the reference code (github.com/tobyperrett/trx, model.py): each cross-transformer adds its
own fixed sinusoidal positions (scaled 0.1) followed by dropout 0.1, builds every ordered ω-tuple of
frames, and LayerNorms the keys only (the values are the plain linear map, although the reference
creates an unused ``norm_v``).
"""
import itertools
import math

import torch
from torch import nn

from m3net.errors import ConfigError
from m3net.model.episode_ops import stack_by_class


def sinusoidal_positions(length, dim, dtype, device):
    """Fixed sine/cosine positional code (Vaswani et al. 2017): (L, d)."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim, device=device)
    code[:, 0::2] = torch.sin(position * rate)
    code[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return code.to(dtype)


class PositionalEncoding(nn.Module):
    """x + scale · sinusoid, then dropout: (X, L, d) -> (X, L, d). TRX and STRM use scale 0.1, dropout 0.1."""

    def __init__(self, scale=0.1, dropout=0.1):
        super().__init__()
        self.scale = scale
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(x + self.scale * sinusoidal_positions(*x.shape[1:], x.dtype, x.device))


def frame_tuples(frames, cardinality):
    """Every ordered ω-tuple of frames (i < j < ...), its frames concatenated: (X, T, d) -> (X, U, ω·d)."""
    index = torch.tensor(list(itertools.combinations(range(frames.shape[1]), cardinality)), device=frames.device)
    return frames[:, index].flatten(2)


class TemporalCrossTransformer(nn.Module):
    """One tuple cardinality ω of TRX.

    Every ω-tuple of frames is one token (ω·d). Keys are LayerNorm(linear(tuple)), values
    linear(tuple) (d_k). For each query and class, each query tuple's key attends over all K·U
    support tuples of the class (one softmax), giving a query-specific prototype of value
    vectors; distance = ‖query values - prototype‖² / U.
    """

    def __init__(self, dim, cardinality, attention_dim, position_scale=0.1, dropout=0.1):
        super().__init__()
        self.cardinality = cardinality
        self.scale = attention_dim ** -0.5
        self.positions = PositionalEncoding(position_scale, dropout)
        self.key = nn.Sequential(nn.Linear(cardinality * dim, attention_dim), nn.LayerNorm(attention_dim))
        self.value = nn.Linear(cardinality * dim, attention_dim)

    def tuples(self, frames):  # (X, T, d) -> (X, U, ω·d)
        return frame_tuples(frames, self.cardinality)

    def forward(self, query, support, support_labels, n_way):
        """query (Q, T, d), support (S, T, d) -> distances (Q, N)."""
        q_tuples, s_tuples = self.tuples(self.positions(query)), self.tuples(self.positions(support))  # (Q|S, U, ω·d)
        n_tuples = q_tuples.shape[1]
        q_keys, q_values = self.key(q_tuples), self.value(q_tuples)  # (Q, U, d_k)
        s_keys = stack_by_class(self.key(s_tuples), support_labels, n_way).flatten(1, 2)  # (N, K·U, d_k)
        s_values = stack_by_class(self.value(s_tuples), support_labels, n_way).flatten(1, 2)
        attention = torch.softmax(q_keys[:, None] @ s_keys.transpose(1, 2) * self.scale, dim=-1)  # (Q, N, U, K·U)
        prototype = attention @ s_values  # (Q, N, U, d_k)
        return (q_values[:, None] - prototype).pow(2).sum(dim=(2, 3)) / n_tuples  # (Q, N)


def cross_transformers(head, dim, cardinalities, num_frames, attention_dim, position_scale=0.1, dropout=0.1):
    """One TemporalCrossTransformer per tuple cardinality; ``head`` names the head in errors."""
    if not cardinalities or any(not isinstance(c, int) or c < 1 or c > num_frames for c in cardinalities):
        raise ConfigError(f"{head}: cardinalities={cardinalities}; expected integers in 1..num_frames={num_frames}")
    if attention_dim < 1 or not 0 <= dropout < 1:
        raise ConfigError(f"{head}: attention_dim={attention_dim}, dropout={dropout}; expected >= 1 and in [0, 1)")
    return nn.ModuleList(TemporalCrossTransformer(dim, c, attention_dim, position_scale, dropout)
                         for c in cardinalities)


def mean_tuple_distance(transformers, query, support, support_labels, n_way):
    """TRX's class distance, averaged over the cardinalities: (Q, T, d), (S, T, d) -> (Q, N)."""
    return torch.stack([t(query, support, support_labels, n_way) for t in transformers]).mean(dim=0)
