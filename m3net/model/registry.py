"""One contract for every few-shot head, and the registry the trainer, tests and CLI iterate.

    forward(support (S, T, H, W, C), support_labels (S,) in 0..N-1, query (Q, T, H, W, C))
        -> dict of logits (Q, N); every head returns "y" (its prediction), M3Net also y1, y2, y3.

A head's options live in its nested ``Config`` dataclass, which checkpoints store as a dict so
``build_head(name, **saved)`` rebuilds it. Parameter-free heads (``trainable = False``) are
scored straight from the cache.
"""
import dataclasses
import textwrap

import torch
import torch.nn.functional as F
from torch import nn

from m3net.config import Settings, coerce, describe, setting, settings
from m3net.errors import ConfigError

HEADS = {}


@settings
class HeadConfig(Settings):
    """Base of every head's options (its nested ``Config``): ``setting()`` fields, so the checks, the
    help of `m3net heads NAME` and --head-opt parsing come from one declaration. feature_dim and
    num_frames are set from the cache, not by --head-opt."""

    head_name = None  # set by register_head: error messages name the head

    feature_dim: int = setting(2048, "C: channels of the cached maps (set from the cache).", minimum=1, cli=False)
    num_frames: int = setting(8, "T: frames per clip (set from the cache).", minimum=1, cli=False)

    @classmethod
    def option_label(cls, name, value):
        return f"--head-opt (head {cls.head_name!r}) {name}={value!r}"


@settings
class HeadSettings(Settings):
    """The head a command trains or benchmarks, and its options."""

    head: str = setting("m3net", "Head from the registry (see `m3net heads`).")
    head_options: dict = setting(cli=False, default_factory=dict)  # typed by the head's Config (--head-opt)


def register_head(name):
    """Class decorator: make the head buildable as ``build_head(name, ...)``."""

    def decorate(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice ({HEADS[name].__name__}, {cls.__name__})")
        cls.name = name
        if "Config" not in vars(cls):  # a head without options of its own gets its own Config to carry its name
            cls.Config = settings(type("Config", (cls.Config,), {"__module__": cls.__module__,
                                                                 "__qualname__": f"{cls.__qualname__}.Config"}))
        cls.Config.head_name = name
        HEADS[name] = cls
        return cls

    return decorate


def list_heads():
    return sorted(HEADS)


def head_class(name):
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; choose from {', '.join(list_heads())}")
    return HEADS[name]


def head_options(name, options):
    """``options`` checked against head ``name``'s Config: unknown keys, values that are not of the field's
    type, out of range or not among its choices are a ConfigError naming the option; text values ("false",
    "off", "0.5", "2,3") are parsed. Checked here, before any cache is loaded or model built."""
    config_class = head_class(name).Config
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"head {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    typed = {key: coerce(config_class, fields[key], value) for key, value in options.items()}
    config_class(**typed)  # the Config's own checks: type, range, choices
    return typed


def parse_head_options(name, pairs):
    """--head-opt KEY=VALUE texts -> typed options of head ``name`` (dashes in KEY read as underscores)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--head-opt {pair!r}: expected KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return head_options(name, options)


def parse_named_head_options(heads, pairs):
    """evaluate's --head-opt HEAD.KEY=VALUE texts -> {head: typed options}, for the parameter-free ``heads``
    it scores (a trained head's options are in its checkpoint)."""
    grouped = {}
    for pair in pairs:
        name, dot, rest = pair.partition(".")
        if not dot or "=" not in rest:
            raise ConfigError(f"--head-opt {pair!r}: expected HEAD.KEY=VALUE (e.g. otam.gamma=0.01)")
        if name not in heads:
            raise ConfigError(f"--head-opt {pair!r}: {name!r} is not a --head of this evaluation "
                              f"({', '.join(heads) or 'none given'})")
        grouped.setdefault(name, []).append(rest)
    return {name: parse_head_options(name, texts) for name, texts in grouped.items()}


def _options(config_class):
    """The fields a user sets (feature_dim and num_frames come from the cache)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)]


def head_table():
    """One line per registered head: name, trained or parameter-free, options with their defaults."""
    lines = []
    for name in list_heads():
        cls = HEADS[name]
        options = ", ".join(f"{f.name}={f.default!r}" for f in _options(cls.Config))
        lines.append(f"{name:<12} {'trained' if cls.trainable else 'parameter-free':<15} {options}")
    return "\n".join(lines + ["", "`m3net heads NAME` explains each option of one head."])


def describe_head(name):
    """Head ``name``: the first paragraph of its docstring, then every option with its type, default,
    range or choices and its help."""
    cls = head_class(name)
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    kind = "trained" if cls.trainable else "parameter-free (scored straight from the cache)"
    lines = [f"{name}: {kind}", textwrap.fill(summary, 100), "", "options (--head-opt KEY=VALUE):"]
    for f in _options(cls.Config):
        lines.append(f"  {f.name}  ({describe(f)})")
        lines += textwrap.wrap(f.metadata.get("help", ""), 96, initial_indent="      ", subsequent_indent="      ")
    if not _options(cls.Config):
        lines.append("  (none)")
    return "\n".join(lines)


def build_head(name, **options):
    """The head ``name`` built from its Config fields (unknown options and mistyped values are errors)."""
    cls = head_class(name)
    return cls(cls.Config(**head_options(name, options)))


def num_classes(support_labels):
    return int(support_labels.max().item()) + 1


def class_means(values, support_labels, n_way):
    """Mean of the supports of each class: values (S, ...) -> (N, ...)."""
    one_hot = F.one_hot(support_labels, n_way).to(values.dtype)  # (S, N)
    counts = one_hot.sum(dim=0).clamp(min=1)  # (N,)
    flat = values.reshape(values.shape[0], -1)
    return ((one_hot.t() @ flat) / counts[:, None]).reshape(n_way, *values.shape[1:])


class FewShotHead(nn.Module):
    """Base class: holds the config, casts inputs, and provides the training loss."""

    name = None
    trainable = True
    train_views = ("y",)  # output keys whose cross-entropy is summed into the training loss
    # n when the head's first operation on the maps is adaptive average pooling to n x n (1: the
    # spatial mean of every frame), so a cache can be pooled on load with the same result; else None.
    first_pool = None

    Config = HeadConfig

    def __init__(self, config):
        super().__init__()
        self.config = config

    def config_dict(self):
        return dataclasses.asdict(self.config)

    def cast(self, *tensors):
        """Cache features are float16: compute in the head's parameter dtype (float32 if none)."""
        param = next(self.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        return tuple(t.to(dtype) for t in tensors)

    def widths(self):
        """{"channels": C of the maps it reads, "width": d its encoders and matchers work at} (heads with
        other widths add them): what a comparison of heads states beside their accuracies."""
        return {"channels": self.config.feature_dim, "width": self.config.feature_dim}

    def input_pool(self):
        """The pooling on load that gives the head's own result (``first_pool``), or None."""
        return self.first_pool

    def probabilities(self, outputs):
        """Class probabilities (Q, N) of the prediction "y" (logits here; heads whose "y" is
        already a fused probability override this)."""
        return torch.softmax(outputs["y"], dim=-1)

    def loss(self, outputs, query_labels):
        return sum(F.cross_entropy(outputs[view], query_labels) for view in self.train_views if view in outputs)


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
