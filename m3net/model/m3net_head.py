"""The M3Net head (paper §3): multi-view encoding, matching and fusion on cached frame maps.

    maps (X, T, 7, 7, d) --IFCE--> patch tokens (X, T, P, d) --spatial mean--> frames (X, T, d)
        frames                      -> I-M (DTW)               -> D1 -> y1
        patch tokens --IVCE-->      -> C-M (cross-attention)   -> D2 -> y2
        frames --IECE-->            -> T-M (nearest frame)     -> D3 -> y3
    (which encoder feeds which matcher is configurable for Table 3; the default is the paper's.)

A switched-off encoder passes its input through (IFCE off: the unpooled 7×7 map is the patch
set; IVCE off: the spatial mean of the patches; IECE off: the frames unchanged). A switched-off
matcher's view is absent from the outputs and from y.

Table 3 also feeds one matcher from several encoders (``cm_features=ifce,ivce,iece``): every
(encoder, matcher) pair is then a view of its own, named ``y2.ifce``, ``y2.ivce``, ``y2.iece`` (a
matcher with one encoder keeps ``y1``/``y2``/``y3``), with its own temperature and, for C-M, its own
W_Q/W_K/W_V; the views fuse like the paper's three. ``views`` lists them in order (I-M, C-M, T-M,
each in the order its encoders are given); ``log_temperature[i]`` belongs to ``views[i]``.

Fusion (§3.5): y_i = -τ_i · D_i; training loss Σ CE(y_i) over the enabled views (train_views);
inference y = Σ softmax(y_i): ``y`` holds summed class probabilities (in [0, number of views]),
not logits — use it for argmax / accuracy, not for a further softmax. Each τ_i is learnable
(a log-parameter, initialised to ``temperature``) by default: the three distances live on
different scales and the sum of softmaxes weighs each view by how peaked it is, so each view
learns its own sharpness; ``learn_temperature=False`` keeps τ fixed.
"""
import math

import torch
from torch import nn

from m3net.config import setting, settings
from m3net.errors import ConfigError
from m3net.model.base import FewShotHead, HeadConfig, num_classes
from m3net.model.encoders import IECE, IFCE, IVCE, TrainingChannelStatistics, pool_positions
from m3net.model.episode_ops import autocast_off
from m3net.model.matchers import DTW_MODES, CategoryMatching, instance_matching, task_matching
from m3net.model.registry import register_head

ENCODERS = ("ifce", "ivce", "iece")
INPUT_NORMS = ("none", "center", "standardize")
TEMPERATURE_INITS = ("fixed", "data")
MATCHERS = (("im", "y1"), ("cm", "y2"), ("tm", "y3"))


def check_sources(option, sources):
    """A matcher's encoders: one or more distinct names of ENCODERS, else a ConfigError naming the option."""
    if not isinstance(sources, tuple) or not sources:
        raise ConfigError(f"m3net: {option}={sources!r}; expected one or more of {', '.join(ENCODERS)} "
                          f"(comma-separated)")
    for source in sources:
        if source not in ENCODERS:
            raise ConfigError(f"m3net: {option}={','.join(map(str, sources))}: {source!r} is not an encoder; "
                              f"expected one or more of {', '.join(ENCODERS)}")
    if len(set(sources)) < len(sources):
        raise ConfigError(f"m3net: {option}={','.join(sources)} names an encoder twice; name each once")


@register_head("m3net")
class M3Net(FewShotHead):
    """M3Net (Tang et al., ACM MM 2023): IFCE/IVCE/IECE encoders, I-M/C-M/T-M matchers, fusion."""

    @settings
    class Config(HeadConfig):
        patch_grid: int = setting(4, "n: IFCE pools the 7x7 maps to n x n patches (paper: n = 4).", minimum=1)
        proj_dim: int = setting(0, "d of the head: 0 keeps d = C (the paper's 2048); > 0 first projects the cached "
                                "maps to this width with a learned linear layer (~(C/d)^2 cheaper; the offline CPU "
                                "demo uses 128).", minimum=0)
        input_norm: str = setting("none", "Per-channel centring or standardising of the cached maps with "
                                  "training-split statistics learned by the head. Not in the paper (none); kept so "
                                  "that older checkpoints load and score the same: use the run-level --input-norm, "
                                  "which gives every head the same input.", choices=INPUT_NORMS)
        use_ifce: bool = setting(True, "IFCE, the intra-frame context encoder (§3.2); off: the unpooled 7x7 map is "
                                 "the patch set.")
        use_ivce: bool = setting(True, "IVCE, the intra-video context encoder (§3.2); off: the spatial mean of the "
                                 "patches passes through.")
        use_iece: bool = setting(True, "IECE, the intra-episode context encoder (§3.2); off: the frames pass through.")
        use_im: bool = setting(True, "I-M, instance matching by DTW (§3.3), view y1.")
        use_cm: bool = setting(True, "C-M, category matching by cross-attention reconstruction (§3.3), view y2.")
        use_tm: bool = setting(True, "T-M, task matching by nearest frames (§3.3), view y3.")
        im_features: tuple = setting(("ifce",), "Encoder(s) feeding I-M (Table 3; paper: ifce); several, comma-"
                                     "separated, make one view each (y1.ifce, ...).", choices=ENCODERS)
        cm_features: tuple = setting(("ivce",), "Encoder(s) feeding C-M (Table 3; paper: ivce).", choices=ENCODERS)
        tm_features: tuple = setting(("iece",), "Encoder(s) feeding T-M (Table 3; paper: iece).", choices=ENCODERS)
        dtw_mode: str = setting("hard", "I-M's alignment: hard = the paper's DTW; soft = soft-DTW divided by the hard "
                                "path length.", choices=DTW_MODES)
        dtw_gamma: float = setting(0.1, "γ of soft-DTW (dtw_mode=soft).", minimum=0, exclusive=True)
        cm_dim: int = setting(0, "d_k of C-M's projections W_Q, W_K, W_V; 0 = the head's d.", minimum=0)
        iece_transductive: bool = setting(False, "One IECE set of all supports and queries of the episode "
                                          "(transductive); default: the supports and each query alone.")
        temperature: float = setting(10.0, "τ of every view, y_i = -τ_i·D_i (§3.5); the initial value when learned.",
                                     minimum=0, exclusive=True)
        learn_temperature: bool = setting(True, "Learn each view's τ (a log-parameter): the three distances live on "
                                          "different scales; off keeps τ fixed.")
        temperature_init: str = setting("fixed", "fixed: start at --temperature (the paper's); data: on the first "
                                        "training episode set each τ to 1 / the spread of its distances over the "
                                        "classes, so every view starts with unit-spread logits (not in the paper).",
                                        choices=TEMPERATURE_INITS)

        def __post_init__(self):
            # Python callers and checkpoints written before several encoders per matcher give one name.
            for matcher, _ in MATCHERS:
                sources = getattr(self, f"{matcher}_features")
                if isinstance(sources, str):
                    setattr(self, f"{matcher}_features", tuple(sources.split(",")))
                check_sources(f"{matcher}_features", getattr(self, f"{matcher}_features"))
            if not any(getattr(self, f"use_{matcher}") for matcher, _ in MATCHERS):
                raise ConfigError("m3net: every matcher is switched off (use_im, use_cm, use_tm); enable at least one")
            super().__post_init__()

    def __init__(self, config):
        super().__init__(config)
        c = config
        # (view, matcher, encoder) of every view, in the order of views and of log_temperature.
        self.branches = tuple((view if len(getattr(c, f"{matcher}_features")) == 1 else f"{view}.{source}",
                               matcher, source)
                              for matcher, view in MATCHERS if getattr(c, f"use_{matcher}")
                              for source in getattr(c, f"{matcher}_features"))
        self.views = tuple(view for view, _, _ in self.branches)
        self.train_views = self.views  # the training loss sums the cross-entropy of every view
        needed = {source for _, _, source in self.branches}
        dim = c.proj_dim or c.feature_dim
        self.input_norm = (TrainingChannelStatistics(c.feature_dim, scale=c.input_norm == "standardize")
                           if c.input_norm != "none" else None)
        self.project = nn.Linear(c.feature_dim, dim) if c.proj_dim else None
        self.ifce = IFCE(dim, c.patch_grid) if c.use_ifce else None
        self.ivce = IVCE(dim, c.num_frames) if c.use_ivce and "ivce" in needed else None
        self.iece = IECE(dim, c.iece_transductive) if c.use_iece and "iece" in needed else None
        # One C-M per encoder it reads (own W_Q, W_K, W_V). A single one keeps its parameters at cm.*
        # (the paper's head; checkpoints rely on those keys), several sit at cm.<encoder>.*.
        category = {source: CategoryMatching(dim, c.cm_dim or dim) for source in (c.cm_features if c.use_cm else ())}
        self.cm = nn.ModuleDict(category) if len(category) > 1 else next(iter(category.values()), None)
        log_tau = torch.full((len(self.views),), math.log(c.temperature))
        if c.learn_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)
        # Whether the data-driven initialisation still has to run; a buffer, so checkpoints keep it.
        self.register_buffer("temperature_pending", torch.tensor(c.temperature_init == "data"))

    @torch.no_grad()
    def initialise_temperature(self, distances):
        """τ_i = 1 / (mean over queries of the std over classes of D_i): unit-spread logits per view."""
        for i, distance in enumerate(distances):
            spread = distance.std(dim=-1).mean().clamp(min=1e-12)
            self.log_temperature[i] = -spread.log()
        self.temperature_pending.fill_(False)

    def probabilities(self, outputs):
        """Class probabilities (Q, N) from the fused prediction: the mean of the views' softmaxes."""
        return outputs["y"] / len(self.views)

    def encode(self, maps, n_support):
        """{encoder: (support (G, S, T, d), query (Q, T, d))} for the encoders the matchers use, from the
        maps (X = S+Q, T, H, W, d) of the supports followed by the queries."""
        patches = self.ifce(maps) if self.ifce is not None else maps.flatten(2, 3)  # (X, T, P, d)
        frames = patches.mean(dim=2)  # (X, T, d)
        return {source: self.encode_for(source, patches, frames, n_support)
                for source in dict.fromkeys(source for _, _, source in self.branches)}

    def encode_for(self, source, patches, frames, n_support):
        if source == "iece" and self.iece is not None:
            return self.iece(frames[:n_support], frames[n_support:])
        if source == "ivce" and self.ivce is not None:
            frames = self.ivce(patches)
        return frames[None, :n_support], frames[n_support:]  # a switched-off encoder passes frames through

    def match(self, matcher, source, support, query, support_labels, n_way):
        """D (Q, N) of one view: ``matcher`` on encoder ``source``'s support (G, S, T, d) and query (Q, T, d)."""
        if matcher == "im":
            return instance_matching(query, support, support_labels, n_way, self.config.dtw_mode,
                                     self.config.dtw_gamma)
        if matcher == "cm":
            return (self.cm[source] if isinstance(self.cm, nn.ModuleDict) else self.cm)(
                query, support, support_labels, n_way)
        return task_matching(query, support, support_labels, n_way)

    def widths(self):
        return {"channels": self.config.feature_dim, "width": self.config.proj_dim or self.config.feature_dim}

    def input_pool(self):
        """IFCE's n x n pooling comes first (the projection and per-position ops commute with it);
        input_norm's statistics are taken over the unpooled positions, so it rules pooling on load out."""
        return self.config.patch_grid if self.config.use_ifce and self.config.input_norm == "none" else None

    def matcher_inputs(self, support, query):
        """{encoder: (support (G, S, T, d), query (Q, T, d))} from the cached maps, in the head's dtype.

        With IFCE on, its n x n pooling runs first: input_norm and the projection act on each position
        alone and commute with the pooling's means, so this is the paper's order of operations at
        (n/7)² of the cost. input_norm's training statistics are still taken over the unpooled maps."""
        support, query = self.cast(support, query)
        n_support = support.shape[0]
        maps = torch.cat([support, query])  # (X = S+Q, T, H, W, C)
        if self.input_norm is not None and self.training:
            self.input_norm.update(maps)
        if self.ifce is not None:
            maps = pool_positions(maps, self.config.patch_grid)  # (X, T, n, n, C)
        if self.input_norm is not None:
            maps = self.input_norm.apply_statistics(maps)
        if self.project is not None:
            maps = self.project(maps)  # (X, T, n, n, proj_dim)
        dtype = self.log_temperature.dtype  # the head's own dtype, also under AMP
        return {source: (s.to(dtype), q.to(dtype)) for source, (s, q) in self.encode(maps, n_support).items()}

    def forward(self, support, support_labels, query):
        n_way = num_classes(support_labels)
        features = self.matcher_inputs(support, query)
        with autocast_off(support):
            distances = [self.match(matcher, source, *features[source], support_labels, n_way)
                         for _, matcher, source in self.branches]  # (Q, N) each
            if self.training and self.temperature_pending:
                self.initialise_temperature(distances)
            temperature = self.log_temperature.exp()
            outputs = {view: -tau * d for view, tau, d in zip(self.views, temperature, distances)}  # (Q, N) each
            outputs["y"] = sum(torch.softmax(outputs[view], dim=-1) for view in self.views)  # summed probabilities
        return outputs
