"""One contract for every few-shot head, and the registry the trainer, tests and CLI iterate.

    forward(support (S, T, H, W, C), support_labels (S,) in 0..N-1, query (Q, T, H, W, C))
        -> dict of logits (Q, N); every head returns "y" (its prediction), M3Net also y1, y2, y3.

A head's options live in its nested ``Config`` dataclass, which checkpoints store as a dict so
``build_head(name, **saved)`` rebuilds it. Parameter-free heads (``trainable = False``) are
scored straight from the cache.
"""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from m3net.config import parse_value
from m3net.errors import ConfigError

HEADS = {}


def register_head(name):
    """Class decorator: make the head buildable as ``build_head(name, ...)``."""

    def decorate(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice ({HEADS[name].__name__}, {cls.__name__})")
        cls.name = name
        HEADS[name] = cls
        return cls

    return decorate


def list_heads():
    return sorted(HEADS)


def head_class(name):
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; choose from {', '.join(list_heads())}")
    return HEADS[name]


def _as_kind(owner, key, value, kind):
    """``value`` as ``kind``: text (from --head-opt) is parsed, a typed value is checked."""
    if isinstance(value, str) and kind is not str:
        return parse_value(owner, key, value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind in (bool, int, float, str):
        if type(value) is not kind:
            raise ConfigError(f"{owner} {key}={value!r}: expected {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{owner} {key}={value!r}: expected a finite number")
    return value


def _typed(name, field, value):
    """``value`` as the type of the Config field; a tuple field takes "2,3" or a sequence."""
    owner = f"--head-opt (head {name!r})"
    kind = type(field.default) if field.default is not dataclasses.MISSING else field.type
    if kind is not tuple:
        return _as_kind(owner, field.name, value, kind)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{owner} {field.name}={value!r}: expected comma-separated values")
    element = type(field.default[0]) if field.default else str
    return tuple(_as_kind(owner, field.name, item, element) for item in items)


def head_options(name, options):
    """``options`` checked against head ``name``'s Config: unknown keys and values that are not
    of the field's type are a ConfigError; text values ("false", "off", "0.5", "2,3") are parsed."""
    fields = {f.name: f for f in dataclasses.fields(head_class(name).Config)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"head {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    return {key: _typed(name, fields[key], value) for key, value in options.items()}


def parse_head_options(name, pairs):
    """--head-opt KEY=VALUE texts -> typed options of head ``name`` (dashes in KEY read as underscores)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--head-opt {pair!r}: expected KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return head_options(name, options)


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

    @dataclasses.dataclass
    class Config:
        feature_dim: int = 2048
        num_frames: int = 8

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
