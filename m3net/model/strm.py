"""The STRM head: spatio-temporal enrichment before TRX matching, with the query-class sub-sequence view."""
import torch
import torch.nn.functional as F
from torch import nn

from m3net.config import setting, settings
from m3net.errors import ConfigError
from m3net.model.base import FewShotHead, HeadConfig, num_classes
from m3net.model.cross_transformer import PositionalEncoding, cross_transformers, frame_tuples, mean_tuple_distance
from m3net.model.encoders import ChannelMixing
from m3net.model.episode_ops import stack_by_class
from m3net.model.registry import register_head


class PatchEnrichment(nn.Module):
    """STRM's patch-level enrichment inside each frame, then the spatial mean.

    (X, T, H, W, d) -> adaptive max pool to n×n -> P tokens + sinusoid·0.1, dropout
    -> z = γ·softmax(q kᵀ) v + z (γ learnable, init 0; no 1/√d, as in the reference)
    -> z + MLP(z) with MLP d→d/2→d/2→d (ReLUs) -> mean over P -> (X, T, d).
    """

    def __init__(self, dim, grid, position_scale, dropout):
        super().__init__()
        self.grid = grid
        self.positions = PositionalEncoding(position_scale, dropout)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim // 2), nn.ReLU(),
                                 nn.Linear(dim // 2, dim))

    def forward(self, maps):
        clips, frames = maps.shape[:2]
        x = maps.flatten(0, 1).permute(0, 3, 1, 2)  # (X·T, d, H, W)
        z = self.positions(F.adaptive_max_pool2d(x, self.grid).flatten(2).transpose(1, 2))  # (X·T, P, d)
        attention = torch.softmax(self.query(z) @ self.key(z).transpose(1, 2), dim=-1)  # (X·T, P, P)
        z = self.gamma * (attention @ self.value(z)) + z
        z = z + self.mlp(z)
        return z.mean(dim=1).unflatten(0, (clips, frames))  # (X, T, d)


class FrameEnrichment(nn.Module):
    """STRM's frame-level enrichment: sinusoid·0.1 + dropout, token MLP over the T frames
    (T→T, ReLU, T→T, residual), channel MLP (d→d, ReLU, d→d, residual): (X, T, d) -> (X, T, d)."""

    def __init__(self, dim, frames, position_scale, dropout):
        super().__init__()
        self.positions = PositionalEncoding(position_scale, dropout)
        self.token_mixing = nn.Sequential(nn.Linear(frames, frames), nn.ReLU(), nn.Linear(frames, frames))
        self.channel_mixing = ChannelMixing(dim)

    def forward(self, frames):
        x = self.positions(frames)
        x = self.token_mixing(x.transpose(1, 2)).transpose(1, 2) + x
        return self.channel_mixing(x)


class SubsequenceDistance(nn.Module):
    """STRM's query-class similarity for one tuple cardinality ω (the reference's DistanceLoss).

    Dropout on the frames, every ω-tuple embedded by ReLU(linear(ω·d -> d/2)); for each query
    tuple the euclidean distance to its nearest tuple among all K·U tuples of the class, averaged
    over the query's U tuples: (Q, T, d), (S, T, d) -> (Q, N).
    """

    def __init__(self, dim, cardinality, dropout):
        super().__init__()
        self.cardinality = cardinality
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Sequential(nn.Linear(cardinality * dim, dim // 2), nn.ReLU())

    def forward(self, query, support, support_labels, n_way):
        q = self.embed(frame_tuples(self.dropout(query), self.cardinality))  # (Q, U, d/2)
        s = self.embed(frame_tuples(self.dropout(support), self.cardinality))  # (S, U, d/2)
        s = stack_by_class(s, support_labels, n_way).flatten(1, 2)  # (N, K·U, d/2)
        nearest = torch.cdist(q[:, None], s[None]).amin(dim=-1)  # (Q, N, U)
        return nearest.mean(dim=-1)  # (Q, N)


@register_head("strm")
class STRM(FewShotHead):
    """STRM (Thatipelli et al., "Spatio-temporal Relation Modeling for Few-shot Action
    Recognition", CVPR 2022; reference code github.com/Anirudh257/strm, model.py and run.py).

    maps (X, T, 7, 7, d) --PatchEnrichment--> frames (X, T, d) --SubsequenceDistance--> y_patch
    frames --FrameEnrichment--> TRX cross-transformers (m3net.model.cross_transformer) --> y_frame
    y = y_frame + λ·y_patch (the reference's test logits); loss = CE(y_frame) + λ·CE(y_patch), λ = 0.1.

    Defaults follow the reference: 4×4 max-pooled patches, pairs only (the published scripts
    pass ``--temp_set 2``), d_k = 1152, positions ×0.1 and dropout 0.1 in each enrichment and
    cross-transformer, γ of the patch attention initialised to 0, unscaled patch attention.

    Deviations from the reference:
    - Its query-class layers (``DistanceLoss``: ``clsW`` and a dropout of 0.1) sit in a plain Python
      list (model.py: ``self.new_dist_loss_post_pat = [DistanceLoss(args, s) ...]``), so they are
      neither trained nor saved in checkpoints (random each run), and ``model.eval()`` does not reach
      their dropout, which stays on when the reference tests; here they are registered modules:
      trained, checkpointed, and without dropout in evaluation (m3net keeps that: a test score that
      changes from run to run is no score).
    - Frames are the cached ResNet-50 maps (d = C of the cache) instead of a backbone in the loop;
      the reference trains with plain SGD at lr 1e-3, one step per 16 tasks, 4 queries per class
      (run.py, scripts/run_strm_ssv2.sh), each task's loss the SUM of the cross-entropy over its
      queries (utils.py ``loss``, as TRX's): ``train-head --preset reference`` sets
      ``loss_reduction=sum``. Its logits are unnormalised distances: with momentum SGD on small caches
      the loss can blow up (the run stops with a NonFiniteError); ``--clip-grad`` or ``--optimizer
      adam`` keep it stable (the reference clips nothing).
    """

    train_views = ("y_frame", "y_patch")

    @settings
    class Config(HeadConfig):
        patch_grid: int = setting(4, "n: patches of the patch-level enrichment, max-pooled from 7x7 (the "
                                  "reference's 4x4).", minimum=1)
        cardinalities: tuple = setting((2,), "Tuple sizes of the TRX matching, each in 1..num_frames (the published "
                                       "scripts' --temp_set 2: pairs only).", minimum=1)
        attention_dim: int = setting(1152, "d_k of the cross-transformers (the reference's trans_linear_out_dim).",
                                     minimum=1)
        position_scale: float = setting(0.1, "Scale of the sinusoidal positions in each enrichment and "
                                        "cross-transformer.")
        dropout: float = setting(0.1, "Dropout in each enrichment and cross-transformer, below 1.", minimum=0)
        patch_weight: float = setting(0.1, "λ of the query-class sub-sequence view y_patch, in the loss and in y "
                                      "(the reference's 0.1).", minimum=0)

    def __init__(self, config):
        super().__init__(config)
        c = config
        if c.feature_dim < 2:  # the sub-sequence embedding halves it
            raise ConfigError(f"strm: feature_dim={c.feature_dim}; expected >= 2")
        self.transformers = cross_transformers("strm", c.feature_dim, c.cardinalities, c.num_frames, c.attention_dim,
                                               c.position_scale, c.dropout)
        self.patches = PatchEnrichment(c.feature_dim, c.patch_grid, c.position_scale, c.dropout)
        self.frames = FrameEnrichment(c.feature_dim, c.num_frames, c.position_scale, c.dropout)
        self.subsequences = nn.ModuleList(SubsequenceDistance(c.feature_dim, size, c.dropout)
                                          for size in c.cardinalities)

    def widths(self):
        return {**super().widths(), "attention_dim": self.config.attention_dim}  # d_k of the cross-transformers

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        n_support = support.shape[0]
        if support.shape[1] != self.config.num_frames:
            raise ValueError(f"strm: clips have {support.shape[1]} frames but the head was built with "
                             f"num_frames={self.config.num_frames} (its T×T frame-mixing layers fix T)")
        frames = self.patches(torch.cat([support, query]))  # (S+Q, T, d)
        s, q = frames[:n_support], frames[n_support:]
        y_patch = -torch.stack([m(q, s, support_labels, n_way) for m in self.subsequences]).mean(dim=0)  # (Q, N)
        enriched = self.frames(frames)
        y_frame = -mean_tuple_distance(self.transformers, enriched[n_support:], enriched[:n_support], support_labels,
                                       n_way)  # (Q, N)
        return {"y": y_frame + self.config.patch_weight * y_patch, "y_frame": y_frame, "y_patch": y_patch}

    def loss(self, outputs, query_labels):
        return (self.cross_entropy(outputs["y_frame"], query_labels)
                + self.config.patch_weight * self.cross_entropy(outputs["y_patch"], query_labels))
