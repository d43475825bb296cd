"""Reads a cache into memory for the head stage: no HDF5 access on the training hot path."""
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from m3net.cache.schema import SCHEMA_VERSION, SPLITS, CacheError, check_provenance, normalise_attr


@dataclass
class CachedFeatures:
    """The done rows of a cache (optionally of some splits), resident in RAM."""

    features: np.ndarray  # (V, T, H, W, C) float16, or (V, K, T, H, W, C) with K views
    labels: np.ndarray  # (V,) int64, index into classes
    classes: list
    video_ids: list
    split: np.ndarray  # (V,) str
    attrs: dict
    path: str = ""
    failures: list = field(default_factory=list)

    def provenance(self):
        return {k: v for k, v in self.attrs.items() if k not in ("created",)}


def _open(path):
    if not os.path.isfile(path):
        raise CacheError(f"{path}: no such cache file (build one with `m3net extract`)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CacheError(f"{path}: not a readable HDF5 file ({err})") from err
    missing = [k for k in ("features", "labels", "classes", "video_ids", "split", "done") if k not in f]
    if missing or "schema_version" not in f.attrs:
        f.close()
        raise CacheError(f"{path}: not an m3net feature cache (missing {missing or ['schema_version']})")
    if int(f.attrs["schema_version"]) != SCHEMA_VERSION:
        version = f.attrs["schema_version"]
        f.close()
        raise CacheError(f"{path}: cache schema_version {version}, this m3net reads {SCHEMA_VERSION}")
    return f


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset):
    return [_text(v) for v in dataset[()]]


def _failures(f):
    return [(_text(r["video_id"]), _text(r["error"])) for r in f["failures"][()]] if "failures" in f else []


def load_cache(path, splits=None, expect=None):
    """The done rows of ``path`` (restricted to ``splits`` if given), checked against ``expect``."""
    with _open(path) as f:
        attrs = {k: normalise_attr(v) for k, v in f.attrs.items()}
        if expect:
            check_provenance(attrs, expect, path)
        split = np.asarray(_strings(f["split"]))
        keep = f["done"][()]
        if splits is not None:
            unknown = sorted(set(splits) - set(SPLITS))
            if unknown:
                raise ValueError(f"unknown split(s) {unknown}; expected some of {SPLITS}")
            keep &= np.isin(split, list(splits))
        rows = np.flatnonzero(keep)
        # One read per chunk in order: h5py's fancy indexing over sorted rows.
        features = f["features"][rows] if len(rows) else np.zeros((0, *f["features"].shape[1:]), np.float16)
        video_ids = _strings(f["video_ids"])
        return CachedFeatures(
            features=features,
            labels=f["labels"][()][rows].astype(np.int64),
            classes=_strings(f["classes"]),
            video_ids=[video_ids[i] for i in rows],
            split=split[rows],
            attrs=attrs,
            path=os.path.abspath(path),
            failures=_failures(f),
        )


def cache_info(path):
    """Provenance, per-split totals / done counts and the failures of a cache, without features."""
    with _open(path) as f:
        split = np.asarray(_strings(f["split"]))
        done = f["done"][()]
        labels = f["labels"][()]
        per_split = {}
        for name in SPLITS:
            rows = split == name
            per_split[name] = {"clips": int(rows.sum()), "done": int((done & rows).sum()),
                               "classes": int(len(np.unique(labels[rows])))}
        return {
            "path": os.path.abspath(path),
            "attrs": {k: normalise_attr(v) for k, v in f.attrs.items()},
            "feature_shape": list(f["features"].shape),
            "splits": per_split,
            "done": int(done.sum()),
            "total": int(len(done)),
            "failures": _failures(f),
        }
