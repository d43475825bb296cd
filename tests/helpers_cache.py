"""Small generated caches for head-stage tests: classes that differ only in temporal order."""
import itertools

import numpy as np

from m3net.cache import write_cache_arrays

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
