"""TSN/TRX frame sampling: ``t`` equal segments, one frame from each.

Test time takes each segment's centre, training views a uniformly random frame of the segment.
A clip shorter than ``t`` frames gets repeated frames (segments then span less than a frame).
"""
import numpy as np


def sample_indices(total, t, train=False, rng=None):
    """int64 (t,) frame indices in [0, total), non-decreasing."""
    if total <= 0:
        raise ValueError(f"cannot sample {t} frames from a clip of {total} frames")
    if t <= 0:
        raise ValueError(f"--frames {t}: expected a positive number of frames")
    bounds = np.arange(t + 1) * total / t  # segment i spans [bounds[i], bounds[i+1])
    if not train:
        centres = (bounds[:-1] + bounds[1:]) / 2
        return np.minimum(centres.astype(np.int64), total - 1)
    if rng is None:
        raise ValueError("training sampling needs an rng (derive it from the seed and the clip)")
    start = np.floor(bounds[:-1]).astype(np.int64)
    stop = np.maximum(start + 1, np.floor(bounds[1:]).astype(np.int64))
    return np.minimum(rng.integers(start, stop), total - 1)
