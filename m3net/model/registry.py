"""One contract for every few-shot head, and the registry the trainer, tests and CLI iterate.

    forward(support (S, T, H, W, C), support_labels (S,) in 0..N-1, query (Q, T, H, W, C))
        -> dict of logits (Q, N); every head returns "y" (its prediction), M3Net also y1, y2, y3.

A head's options live in its nested ``Config`` dataclass, which checkpoints store as a dict so
``build_head(name, **saved)`` rebuilds it. Parameter-free heads (``trainable = False``) are
scored straight from the cache.
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

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


def build_head(name, **options):
    """The head ``name`` built from its Config fields (unknown options are an error)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {', '.join(list_heads())}")
    cls = HEADS[name]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"head {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    return cls(cls.Config(**options))


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

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        s = support.mean(dim=(1, 2, 3))  # (S, C)
        q = query.mean(dim=(1, 2, 3))  # (Q, C)
        prototypes = class_means(s, support_labels, n_way)  # (N, C)
        return {"y": -torch.cdist(q, prototypes).pow(2)}  # (Q, N)
