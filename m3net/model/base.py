"""The head contract every few-shot head implements, and the episode arithmetic heads share.

    forward(support (S, T, H, W, C), support_labels (S,) in 0..N-1, query (Q, T, H, W, C))
        -> dict of logits (Q, N); every head returns "y" (its prediction), M3Net also y1, y2, y3.

A head's options live in its nested ``Config`` (a ``HeadConfig``), which checkpoints store as a dict
so m3net.model.registry.build_head rebuilds it.
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from m3net.config import Settings, setting, settings


@settings
class HeadConfig(Settings):
    """Base of every head's options (its nested ``Config``): ``setting()`` fields, so the checks, the
    help of `m3net heads NAME` and --head-opt parsing come from one declaration. feature_dim and
    num_frames are set from the cache, not by --head-opt."""

    head_name = None  # set by register_head: error messages name the head

    feature_dim: int = setting(2048, "C: channels of the cached maps (set from the cache).", minimum=1, cli=False)
    num_frames: int = setting(8, "T: frames per clip (set from the cache).", minimum=1, cli=False)
    loss_reduction: str = setting("mean", "How the training cross-entropy is reduced over an episode's queries: mean "
                                  "(m3net's), or sum (TRX's and STRM's reference code: with plain SGD a step Q times "
                                  "larger; --preset reference sets it for them).", choices=("mean", "sum"))

    @classmethod
    def option_label(cls, name, value):
        return f"--head-opt (head {cls.head_name!r}) {name}={value!r}"


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

    def cross_entropy(self, logits, query_labels):
        """Cross-entropy of (Q, N) logits, reduced over the queries as ``loss_reduction`` says."""
        return F.cross_entropy(logits, query_labels, reduction=self.config.loss_reduction)

    def loss(self, outputs, query_labels):
        return sum(self.cross_entropy(outputs[view], query_labels) for view in self.train_views if view in outputs)
