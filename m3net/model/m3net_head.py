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
import dataclasses
import math

import torch
from torch import nn

from m3net.errors import ConfigError
from m3net.model.encoders import IECE, IFCE, IVCE, TrainingChannelStatistics, pool_positions
from m3net.model.episode_ops import autocast_off
from m3net.model.matchers import DTW_MODES, CategoryMatching, instance_matching, task_matching
from m3net.model.registry import FewShotHead, num_classes, register_head

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

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048  # d = C
        num_frames: int = 8  # t (IVCE's T×T layers fix it)
        patch_grid: int = 4  # n: IFCE pools 7×7 to n×n patches
        # d of the head: 0 keeps d = C as in the paper; > 0 first projects the cached C-channel maps
        # to proj_dim with a learned linear layer (~(C/d)² cheaper; the offline CPU demo uses it).
        proj_dim: int = 0
        # Not in the paper: per-channel centring ("center") or standardising ("standardize") of the
        # cached maps with training-split statistics (TrainingChannelStatistics); the offline demo
        # uses it because random-weight ResNet maps are nearly collinear. "none" is the paper's.
        input_norm: str = "none"
        use_ifce: bool = True
        use_ivce: bool = True
        use_iece: bool = True
        use_im: bool = True
        use_cm: bool = True
        use_tm: bool = True
        # Encoder(s) feeding each matcher (Table 3): ifce | ivce | iece, or several ("ifce,ivce,iece"),
        # each (encoder, matcher) pair then a view of its own. A plain name is read as a 1-tuple.
        im_features: tuple = ("ifce",)
        cm_features: tuple = ("ivce",)
        tm_features: tuple = ("iece",)
        dtw_mode: str = "hard"  # I-M: hard = the paper's DTW; soft = soft-DTW over the hard path length
        dtw_gamma: float = 0.1
        cm_dim: int = 0  # d_k of C-M's projections; 0 = feature_dim
        iece_transductive: bool = False  # True: one IECE set of all supports + queries
        temperature: float = 10.0
        learn_temperature: bool = True
        # Not in the paper: "data" replaces ``temperature`` on the first training episode by
        # 1 / (the spread of each view's distances over the classes), so every view starts with
        # logits of unit spread whatever its distance scale (random-weight features give I-M
        # distances ~1e-3 apart, where τ = 10 leaves its softmax flat). "fixed" is the paper's.
        temperature_init: str = "fixed"

        def __post_init__(self):
            # Python callers and checkpoints written before several encoders per matcher give one name.
            for matcher, _ in MATCHERS:
                sources = getattr(self, f"{matcher}_features")
                if isinstance(sources, str):
                    setattr(self, f"{matcher}_features", tuple(sources.split(",")))

    def __init__(self, config):
        super().__init__(config)
        c = config
        if not any(getattr(c, f"use_{matcher}") for matcher, _ in MATCHERS):
            raise ConfigError("m3net: every matcher is switched off (use_im, use_cm, use_tm); enable at least one")
        for matcher, _ in MATCHERS:
            check_sources(f"{matcher}_features", getattr(c, f"{matcher}_features"))
        # (view, matcher, encoder) of every view, in the order of views and of log_temperature.
        self.branches = tuple((view if len(getattr(c, f"{matcher}_features")) == 1 else f"{view}.{source}",
                               matcher, source)
                              for matcher, view in MATCHERS if getattr(c, f"use_{matcher}")
                              for source in getattr(c, f"{matcher}_features"))
        self.views = tuple(view for view, _, _ in self.branches)
        self.train_views = self.views  # the training loss sums the cross-entropy of every view
        if c.dtw_mode not in DTW_MODES:
            raise ConfigError(f"m3net: dtw_mode={c.dtw_mode!r}; expected one of {', '.join(DTW_MODES)}")
        if c.input_norm not in INPUT_NORMS:
            raise ConfigError(f"m3net: input_norm={c.input_norm!r}; expected one of {', '.join(INPUT_NORMS)}")
        if c.temperature_init not in TEMPERATURE_INITS:
            raise ConfigError(f"m3net: temperature_init={c.temperature_init!r}; expected one of "
                              f"{', '.join(TEMPERATURE_INITS)}")
        if c.temperature <= 0:
            raise ConfigError(f"m3net: temperature={c.temperature}; expected > 0")
        needed = {source for _, _, source in self.branches}
        if c.proj_dim < 0:
            raise ConfigError(f"m3net: proj_dim={c.proj_dim}; expected 0 (d = C) or a positive width")
        if c.patch_grid < 1:
            raise ConfigError(f"m3net: patch_grid={c.patch_grid}; expected n >= 1 (n x n patches)")
        if c.cm_dim < 0:
            raise ConfigError(f"m3net: cm_dim={c.cm_dim}; expected 0 (d_k = d) or a positive width")
        if c.dtw_gamma <= 0:
            raise ConfigError(f"m3net: dtw_gamma={c.dtw_gamma}; expected > 0")
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
