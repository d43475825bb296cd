"""Head-stage test helpers: small generated caches whose classes differ only in temporal order,
and a tiny trainable head ("test-aligned", registered by the aligned_head fixture)."""
import contextlib
import dataclasses
import itertools

import numpy as np
import torch

from m3net.cache import write_cache_arrays
from m3net.model.base import FewShotHead, class_means, num_classes
from m3net.model.registry import HEADS

ORDER_ATTRS = {"dataset": "order-only", "weights": "none", "weights_sha256": "", "backbone": "none"}


def order_only_cache(path, channels=16, frames=4, clips_per_class=8, classes=(8, 5, 5), noise=0.3, seed=0):
    """Each class is one ordering of the same ``frames`` patterns, so every class has the same
    mean-pooled feature (ProtoNet is at chance) while frame order tells them apart."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((frames, channels)) * 2
    orders = list(itertools.permutations(range(frames)))
    rng.shuffle(orders)
    feats, labels, split, ids, names = [], [], [], [], []
    for split_name, count in zip(("train", "val", "test"), classes):
        for _ in range(count):
            order = orders[len(names)]
            cls = len(names)
            names.append("-".join(map(str, order)))
            for k in range(clips_per_class):
                clip = patterns[list(order)][:, None, None, :] + noise * rng.standard_normal((frames, 7, 7, channels))
                feats.append(clip)
                labels.append(cls)
                split.append(split_name)
                ids.append(f"{names[-1]}_{k}")
    return write_cache_arrays(path, np.asarray(feats, np.float16), labels, names, ids, split,
                              {**ORDER_ATTRS, "num_frames": frames})


class AlignedHead(FewShotHead):
    """A tiny trainable temporal head for the trainer's tests: per-frame projection, distance
    to the class prototype frame by frame (order-aware, unlike ProtoNet)."""

    @dataclasses.dataclass
    class Config(FewShotHead.Config):
        hidden: int = 8

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.feature_dim, config.hidden)

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        s = self.proj(support.mean(dim=(2, 3)))  # (S, T, h)
        q = self.proj(query.mean(dim=(2, 3)))  # (Q, T, h)
        protos = class_means(s, support_labels, num_classes(support_labels))  # (N, T, h)
        return {"y": -((q[:, None] - protos[None]) ** 2).sum(-1).mean(-1)}  # (Q, N)


@contextlib.contextmanager
def aligned_head_registered():
    """"test-aligned" in the head registry only while a test needs it, so tests that iterate the
    registry see the package's heads whatever the collection order."""
    HEADS["test-aligned"] = AlignedHead
    AlignedHead.name = "test-aligned"
    try:
        yield AlignedHead
    finally:
        del HEADS["test-aligned"]


def train_aligned(cache, out, **overrides):
    """A short CPU train-head run of the "test-aligned" head (3-way 1-shot, 8 episodes, validation and
    checkpoints every 4); ``overrides`` replace any of these settings."""
    from m3net.train.train_head import TrainConfig, train_head

    settings = dict(cache=cache, out=str(out), head="test-aligned", way=3, shot=1, queries=2, episodes=8, lr=0.05,
                    val_every=4, val_episodes=3, checkpoint_every=4, log_every=4, device="cpu")
    return train_head(TrainConfig(**{**settings, **overrides}), progress=False)
