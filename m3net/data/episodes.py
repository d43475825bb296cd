"""Seeded N-way K-shot episodes over the clips of one split.

Episode ``i`` of a sampler is a pure function of (seed, split, i): every head is scored on the very
same episodes, and a resumed training run sees exactly the episodes it would have seen.
"""
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from m3net.config import Settings, setting, settings
from m3net.errors import EpisodeError  # noqa: F401 (re-exported)

SPLITS = ("train", "val", "test")  # a dataset's splits; episodes draw their classes from one


@settings
class EpisodeSettings(Settings):
    """The shape of an episode: N-way, K-shot, q queries per class."""

    way: int = setting(5, "Classes per episode (N).", minimum=2)
    shot: int = setting(1, "Supports per class (K).", minimum=1)
    queries: int = setting(5, "Queries per class in each training episode (evaluation: 1 unless set; 5 to compare "
                           "CIs with the paper's).", minimum=1)


@dataclass(frozen=True)
class Episode:
    support_rows: np.ndarray  # (S,) rows of the feature array, S = N·K, grouped by class
    support_labels: np.ndarray  # (S,) in 0..N-1
    query_rows: np.ndarray  # (Q,) Q = N·q
    query_labels: np.ndarray  # (Q,)
    classes: np.ndarray  # (N,) class ids (index into the cache's classes) of labels 0..N-1


# Extra entropy word that separates the view-choice stream from the episode draw.
VIEW_STREAM = 1


def episode_classes(clips_per_class, need):
    """The classes of ``clips_per_class`` ({class: clips}) that can fill an episode's slots for one class:
    ``need`` = shot + queries distinct clips. The one rule that both the sampler and a dataset's coverage
    (m3net.data.datasets.coverage) apply."""
    return sorted(c for c, n in clips_per_class.items() if n >= need)


class EpisodeSampler:
    def __init__(self, labels, split, split_name, way, shot, queries, seed=0, class_names=None):
        if way < 2 or shot < 1 or queries < 1:
            raise EpisodeError(f"need way >= 2, shot >= 1, queries >= 1; got way={way}, shot={shot}, queries={queries}")
        labels, split = np.asarray(labels), np.asarray(split)
        rows = np.flatnonzero(split == split_name)
        by_class = {int(c): rows[labels[rows] == c] for c in np.unique(labels[rows])}
        need = shot + queries
        name = (lambda c: class_names[c]) if class_names is not None else str
        eligible = episode_classes({c: len(r) for c, r in by_class.items()}, need)
        short = {c: len(r) for c, r in by_class.items() if c not in eligible}
        if len(by_class) < way:
            raise EpisodeError(f"split {split_name!r} has {len(by_class)} classes, fewer than --way {way}")
        if len(eligible) < way:
            listed = ", ".join(f"{name(c)} ({n} clips)" for c, n in sorted(short.items()))
            raise EpisodeError(
                f"split {split_name!r}: only {len(eligible)} classes have the {need} clips a {shot}-shot episode "
                f"with {queries} queries per class needs, fewer than --way {way}; too few clips: {listed}"
            )
        if short:
            listed = ", ".join(f"{name(c)} ({n} clips)" for c, n in sorted(short.items()))
            warnings.warn(f"split {split_name!r}: classes with fewer than {need} clips are left out of episodes: "
                          f"{listed}")
        self.by_class = {c: by_class[c] for c in eligible}
        self.classes = np.asarray(eligible)
        self.split_name, self.way, self.shot, self.queries, self.seed = split_name, way, shot, queries, seed
        self._split_code = zlib.crc32(split_name.encode())

    def view_rng(self, index):
        """The generator of episode ``index``'s augmented-view choice: a stream of its own, so which
        view a clip gets is independent of which classes and clips the episode drew."""
        return np.random.default_rng([self.seed, self._split_code, index, VIEW_STREAM])

    def episode(self, index):
        rng = np.random.default_rng([self.seed, self._split_code, index])
        chosen = rng.choice(self.classes, size=self.way, replace=False)
        support, query = [], []
        for c in chosen:
            picked = rng.choice(self.by_class[int(c)], size=self.shot + self.queries, replace=False)
            support.append(picked[: self.shot])
            query.append(picked[self.shot :])
        labels = np.arange(self.way)
        return Episode(
            support_rows=np.concatenate(support),
            support_labels=np.repeat(labels, self.shot),
            query_rows=np.concatenate(query),
            query_labels=np.repeat(labels, self.queries),
            classes=chosen,
        )
