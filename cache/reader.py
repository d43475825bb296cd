"""Reads a cache into memory for the head stage: no HDF5 access on the training hot path."""
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from m3net.cache.schema import SCHEMA_VERSION, SPLITS, CacheError, check_provenance, normalise_attr
from m3net.locking import cache_lock_path, check_not_being_written


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
    rows: np.ndarray = None  # (V,) row of each clip in the file
    feature_shape: tuple = ()  # shape of one clip's features: (T, H, W, C) or (K, T, H, W, C)

    def provenance(self):
        return {k: v for k, v in self.attrs.items() if k not in ("created",)}


def _open(path):
    if not os.path.isfile(path):
        raise CacheError(f"{path}: no such cache file (build one with `m3net extract`)")
    check_not_being_written(cache_lock_path(path), path)
    try:
        f = h5py.File(path, "r", locking=False)
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
    try:
        _check_layout(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _check_layout(f, path):
    """Every dataset agrees with the others and with the attributes, or the error names what does not."""
    shape = f["features"].shape
    views = int(f.attrs.get("views", 0))
    rank = 6 if views else 5
    if len(shape) != rank:
        raise CacheError(f"{path}: /features has shape {shape}; expected rank {rank} "
                         f"({'(V, K, T, H, W, C)' if views else '(V, T, H, W, C)'} for views={views})")
    if views and shape[1] != views:
        raise CacheError(f"{path}: /features holds {shape[1]} views per clip, the views attribute says {views}")
    frames = shape[2 if views else 1]
    if "num_frames" in f.attrs and frames != int(f.attrs["num_frames"]):
        raise CacheError(f"{path}: /features holds T={frames} frames per clip, num_frames says {f.attrs['num_frames']}")
    lengths = {name: len(f[name]) for name in ("labels", "video_ids", "split", "done")}
    wrong = {name: n for name, n in lengths.items() if n != shape[0]}
    if wrong:
        raise CacheError(f"{path}: /features has {shape[0]} rows but "
                         + ", ".join(f"/{name} has {n}" for name, n in wrong.items()))
    labels, classes = f["labels"][()], len(f["classes"])
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise CacheError(f"{path}: /labels range over {labels.min()}..{labels.max()}; /classes has {classes} "
                         f"entries (expected 0..{classes - 1})")
    unknown = sorted(set(_strings(f["split"])) - set(SPLITS))
    if unknown:
        raise CacheError(f"{path}: /split holds {unknown}; expected {', '.join(SPLITS)}")


def pooled_shape(shape, pool):
    """A clip's feature shape (..., H, W, C) after adaptive average pooling of H x W to pool x pool."""
    return shape if not pool else (*shape[:-3], pool, pool, shape[-1])


def pool_maps(maps, pool):
    """Adaptive average pooling of float16 maps (..., H, W, C) to (..., pool, pool, C), in float32."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(maps))
    lead, (h, w, c) = x.shape[:-3], x.shape[-3:]
    x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()  # (B, C, H, W)
    x = torch.nn.functional.adaptive_avg_pool2d(x, pool).permute(0, 2, 3, 1)
    return x.reshape(*lead, pool, pool, c).to(torch.float16).numpy()


def _finite_rows(dataset, rows, path, block=64, pool=None):
    """dataset[rows] read block by block (pooled to pool x pool when ``pool``), refusing NaN/inf values
    (they would train or score silently)."""
    out = np.empty((len(rows), *pooled_shape(dataset.shape[1:], pool)), dtype=dataset.dtype)
    for start in range(0, len(rows), block):
        part = dataset[rows[start:start + block]]
        if not np.isfinite(part).all():
            bad = start + int(np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(axis=1))[0])
            raise CacheError(f"{path}: the features of row {rows[bad]} hold NaN or inf values; re-extract that "
                             "clip (delete the cache or build a new one) before training or evaluating on it")
        out[start:start + len(part)] = pool_maps(part, pool) if pool else part
    return out


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset):
    return [_text(v) for v in dataset[()]]


def _failures(f):
    return [(_text(r["video_id"]), _text(r["error"])) for r in f["failures"][()]] if "failures" in f else []


def load_cache(path, splits=None, expect=None, features=True, pool=None):
    """The done rows of ``path`` (restricted to ``splits`` if given), checked against ``expect``.

    features=False reads everything but the features (``features`` is None; RowReader reads them on
    demand): for caches larger than memory. pool=n stores each map adaptively average-pooled to n x n
    (read block by block: the unpooled split is never in memory at once).
    """
    with _open(path) as f:
        attrs = {k: normalise_attr(v) for k, v in f.attrs.items()}
        if expect:
            check_provenance(attrs, expect, path)
        split = np.asarray(_strings(f["split"]))
        keep = f["done"][()]
        if splits is not None:
            unknown = sorted(set(splits) - set(SPLITS))
            if unknown:
                raise CacheError(f"{path}: unknown split(s) {unknown}; expected some of {SPLITS}")
            keep &= np.isin(split, list(splits))
        rows = np.flatnonzero(keep)
        # One read per chunk in order: h5py's fancy indexing over sorted rows.
        data = _finite_rows(f["features"], rows, path, pool=pool) if features else None
        video_ids = _strings(f["video_ids"])
        return CachedFeatures(
            features=data,
            labels=f["labels"][()][rows].astype(np.int64),
            classes=_strings(f["classes"]),
            video_ids=[video_ids[i] for i in rows],
            split=split[rows],
            attrs=attrs,
            path=os.path.abspath(path),
            failures=_failures(f),
            rows=rows,
            feature_shape=pooled_shape(tuple(f["features"].shape[1:]), pool),
        )


class RowReader:
    """Reads rows of a cache's /features on demand (for caches larger than memory); NaN/inf refused."""

    def __init__(self, path, pool=None):
        self.path, self.pool = path, pool
        self.file = _open(path)
        self.features = self.file["features"]

    def read(self, rows):
        """features[rows] for any row order and repeats, in one sorted read."""
        rows = np.asarray(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        return _finite_rows(self.features, unique, self.path, pool=self.pool)[inverse]

    def close(self):
        self.file.close()


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


def format_cache_info(info, max_failures=10):
    """Text for `m3net cache-info`: provenance attrs, per-split done/total, failures."""
    lines = [f"{info['path']}  features {tuple(info['feature_shape'])}  done {info['done']}/{info['total']}"]
    lines += [f"  {key:<15} {value}" for key, value in sorted(info["attrs"].items())]
    for split, entry in info["splits"].items():
        lines.append(f"  {split:<5} {entry['classes']:>4} classes  {entry['done']:>6}/{entry['clips']:<6} clips done")
    failures = info["failures"]
    lines.append(f"  failures: {len(failures)}")
    lines += [f"    {clip_id}: {reason}" for clip_id, reason in failures[:max_failures]]
    if len(failures) > max_failures:
        lines.append(f"    ... and {len(failures) - max_failures} more")
    return "\n".join(lines)
