"""Reads a cache for the head stage: into memory (load_cache: no HDF5 access on the training hot path),
or row by row for caches larger than memory (RowReader; PrefetchingReader reads planned rows ahead in a
background thread)."""
import collections
import os
import threading
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


def convert_maps(maps, pool=None, normalise=None):
    """float16 maps (..., H, W, C) adaptively average-pooled to (..., pool, pool, C) when ``pool``, then
    normalised by ``normalise`` (a callable on float32 (..., C) tensors) when given: in float32, rounded
    to float16 once at the end. Pooling is a weighted mean of positions and the normalisation is affine
    per channel, so both orders agree up to float32 rounding."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(maps)).float()
    if pool:
        lead, (h, w, c) = x.shape[:-3], x.shape[-3:]
        x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = torch.nn.functional.adaptive_avg_pool2d(x, pool).permute(0, 2, 3, 1).reshape(*lead, pool, pool, c)
    if normalise is not None:
        x = normalise(x)
    return x.to(torch.float16).numpy()


def _direct_chunks(dataset):
    """True when each row is one unfiltered chunk of native-order values, as the writer makes them: a row
    is then read with H5Dread_chunk straight into its place in the output, bypassing HDF5's selection and
    conversion machinery (h5py's fancy selection ``dataset[rows]`` walks an irregular hyperslab union and
    was the bulk of a streamed episode's cost)."""
    return (dataset.chunks == (1, *dataset.shape[1:]) and dataset.dtype.isnative
            and dataset.id.get_create_plist().get_nfilters() == 0)


def _read_rows(dataset, rows, out, path, direct):
    """dataset[rows] into ``out``, one chunk read per row, issued in file order (rows may come in any order)."""
    for k in np.argsort(rows, kind="stable"):
        row = rows[k]
        if not direct:
            out[k] = dataset[int(row)]
            continue
        try:
            dataset.id.read_direct_chunk((int(row),) + (0,) * (dataset.ndim - 1), out=out[k].view(np.uint8).reshape(-1))
        except (RuntimeError, OSError, ValueError) as err:
            raise CacheError(f"{path}: cannot read the features of row {row} ({err}); the cache is damaged: "
                             "re-extract it") from err


def _finite(values):
    """No NaN/inf in ``values``; float16 by its bits (exponent all ones), integer work that numpy vectorises
    where np.isfinite converts each half to float."""
    if values.dtype == np.float16:
        bits = values.view(np.uint16)
        return bool(((bits & 0x7C00) != 0x7C00).all())
    return bool(np.isfinite(values).all())


def _finite_rows(dataset, rows, path, block=64, pool=None, normalise=None):
    """dataset[rows] read block by block (pooled to pool x pool when ``pool``, normalised by ``normalise``:
    ``convert_maps``), refusing NaN/inf values (they would train or score silently)."""
    out = np.empty((len(rows), *pooled_shape(dataset.shape[1:], pool)), dtype=dataset.dtype)
    direct = _direct_chunks(dataset)
    converting = bool(pool) or normalise is not None
    staging = np.empty((min(block, len(rows)), *dataset.shape[1:]), dtype=dataset.dtype) if converting else None
    for start in range(0, len(rows), block):
        part_rows = rows[start:start + block]
        part = (staging if converting else out[start:])[:len(part_rows)]
        _read_rows(dataset, part_rows, part, path, direct)
        if not _finite(part):
            bad = start + next(k for k in range(len(part)) if not _finite(part[k]))
            raise CacheError(f"{path}: the features of row {rows[bad]} hold NaN or inf values; re-extract that "
                             "clip (delete the cache or build a new one) before training or evaluating on it")
        if converting:
            converted = out[start:start + len(part)]
            converted[...] = convert_maps(part, pool, normalise)
            if not _finite(converted):
                raise CacheError(f"{path}: normalised with the training rows' channel statistics, the features "
                                 f"of rows {part_rows.tolist()} exceed float16's range (a channel that barely "
                                 "varies in the training rows varies here); use --input-norm center or none")
    return out


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset):
    return [_text(v) for v in dataset[()]]


def _failures(f):
    return [(_text(r["video_id"]), _text(r["error"])) for r in f["failures"][()]] if "failures" in f else []


def load_cache(path, splits=None, expect=None, features=True, pool=None, normalise=None):
    """The done rows of ``path`` (restricted to ``splits`` if given), checked against ``expect``.

    features=False reads everything but the features (``features`` is None; RowReader reads them on
    demand): for caches larger than memory. pool=n stores each map adaptively average-pooled to n x n
    (read block by block: the unpooled split is never in memory at once); normalise (a callable on float32
    (..., C) tensors, m3net.train.features.InputNorm) is applied to every map before it is stored
    (``convert_maps``).
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
        data = _finite_rows(f["features"], rows, path, pool=pool, normalise=normalise) if features else None
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
    """Reads rows of a cache's /features on demand (for caches larger than memory); NaN/inf refused. Each
    row is pooled and normalised as ``load_cache`` does it (``convert_maps``), so both give the same bits."""

    def __init__(self, path, pool=None, normalise=None):
        self.path, self.pool, self.normalise = path, pool, normalise
        self.file = _open(path)
        self.features = self.file["features"]

    def read(self, rows):
        """features[rows] for any row order and repeats, read in file order."""
        return _finite_rows(self.features, np.asarray(rows), self.path, pool=self.pool, normalise=self.normalise)

    def close(self):
        self.file.close()


class _Plan:
    """Reads known in advance: ``rows_of(i)`` for i in start..stop-1, handed over in that order."""

    def __init__(self, rows_of, start, stop, depth, order):
        self.rows_of, self.stop, self.depth, self.order = rows_of, stop, depth, order
        self.next_read = self.next_take = start
        self.ready = collections.deque()  # (index, tensor or the exception its read raised)
        self.waiting = False  # the consumer is blocked on this plan: read it first
        self._expected = (None, None)  # (index, rows) of the next hand-over, computed once

    def expects(self, rows):
        """The plan's next hand-over is ``rows`` (so a caller asking for those rows takes it)."""
        if self.next_take >= self.stop:
            return False
        if self._expected[0] != self.next_take:
            self._expected = (self.next_take, np.asarray(self.rows_of(self.next_take)))
        return np.array_equal(self._expected[1], rows)


class PrefetchingReader:
    """A RowReader driven by one background thread, the only user of its file handle, that reads the rows
    of planned episodes ahead of use (up to ``depth`` per plan) so the caller's compute overlaps the reads.

    h5py serialises every HDF5 call behind one global lock but releases the GIL inside H5Dread_chunk, so
    the reads overlap the caller's Python and torch work; one owning thread keeps concurrent h5py calls on
    the same file (which have crashed h5py, h5py#2920) out of the picture. ``convert`` turns each read
    array into what the caller hands on (torch tensor, pinned memory) in that thread too. A read that fails
    is raised in the caller when it takes that read, as a CacheError naming the file.
    """

    def __init__(self, reader, depth, convert=lambda array: array):
        self.reader, self.depth, self.convert = reader, depth, convert
        self._cond = threading.Condition()
        self._plans, self._count, self._closed, self._crash = [], 0, False, None
        self._thread = threading.Thread(target=self._run, name=f"m3net prefetch {reader.path}", daemon=True)
        self._thread.start()

    def plan(self, rows_of, start, stop, depth=None):
        """Start reading ``rows_of(start)``, ``rows_of(start + 1)``, ... (``rows_of`` must be thread-safe)."""
        with self._cond:
            self._count += 1
            plan = _Plan(rows_of, start, stop, depth or self.depth, self._count)
            self._plans.append(plan)
            self._cond.notify_all()
        return plan

    def cancel(self, plan):
        with self._cond:
            if plan in self._plans:
                self._plans.remove(plan)
            self._cond.notify_all()

    def take(self, plan):
        """The next planned read of ``plan`` (blocks until the thread has it)."""
        with self._cond:
            plan.waiting = True
            self._cond.notify_all()
            try:
                while not plan.ready:
                    if self._crash is not None or not self._thread.is_alive():
                        raise CacheError(f"{self.reader.path}: the background reader stopped "
                                         f"({self._crash or 'closed'}); no more features can be read") from self._crash
                    if plan not in self._plans:
                        raise ValueError("take() on a plan that is finished or cancelled")
                    self._cond.wait(timeout=1.0)  # woken by the thread; the timeout only re-checks it is alive
                index, data = plan.ready.popleft()
            finally:
                plan.waiting = False
            plan.next_take = plan.stop if isinstance(data, Exception) else index + 1  # nothing past a failure
            if plan.next_take >= plan.stop and plan in self._plans:
                self._plans.remove(plan)
            self._cond.notify_all()
        if isinstance(data, CacheError):
            raise data
        if isinstance(data, Exception):
            raise CacheError(f"{self.reader.path}: reading features in the background failed ({data})") from data
        return data

    def read(self, rows):
        """``rows`` read through the thread, ahead of any planned read (for reads no plan foresaw)."""
        return self.take(self.plan(lambda _: rows, 0, 1, depth=1))

    def _next_plan(self):
        open_plans = [p for p in self._plans if p.next_read < p.stop and len(p.ready) < p.depth]
        return min(open_plans, key=lambda p: (not p.waiting, len(p.ready), p.order), default=None)

    def _run(self):
        try:
            while True:
                with self._cond:
                    plan = self._next_plan()
                    while plan is None and not self._closed:
                        self._cond.wait()
                        plan = self._next_plan()
                    if self._closed:
                        return
                    index = plan.next_read
                    plan.next_read += 1
                try:
                    data = self.convert(self.reader.read(plan.rows_of(index)))
                except Exception as err:  # handed to the caller, raised when it takes this read
                    data = err
                with self._cond:
                    plan.ready.append((index, data))
                    if isinstance(data, Exception):
                        plan.next_read = plan.stop  # nothing past a failed read
                    self._cond.notify_all()
        except BaseException as err:  # a bug in this loop: wake the caller instead of leaving it waiting
            with self._cond:
                self._crash = err
                self._cond.notify_all()
        finally:
            self.reader.close()

    def close(self):
        """Stop the thread (after the read it is in, if any) and wait for it; the file is closed."""
        with self._cond:
            self._closed = True
            self._plans.clear()
            self._cond.notify_all()
        self._thread.join()


def cache_info(path):
    """Provenance, per-split totals / done counts, the failures and the channel statistics (what they cover,
    whether stale; cache.stats) of a cache, without features."""
    from m3net.cache.stats import read_channel_statistics

    stats, stale = read_channel_statistics(path)
    channel_stats = {**stats.provenance(), "stale": stale} if stats is not None else None
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
            "channel_stats": channel_stats,
        }


def format_cache_info(info, max_failures=10):
    """Text for `m3net cache-info`: provenance attrs, per-split done/total, failures."""
    lines = [f"{info['path']}  features {tuple(info['feature_shape'])}  done {info['done']}/{info['total']}"]
    lines += [f"  {key:<15} {value}" for key, value in sorted(info["attrs"].items())]
    for split, entry in info["splits"].items():
        lines.append(f"  {split:<5} {entry['classes']:>4} classes  {entry['done']:>6}/{entry['clips']:<6} clips done")
    stats = info.get("channel_stats")
    lines.append(f"  channel statistics: over {stats['rows']} {stats['split']} rows, {stats['created']}"
                 + (" (STALE: rows were extracted since; run `m3net cache-stats`)" if stats["stale"] else "")
                 if stats else "  channel statistics: none (`m3net cache-stats` computes them for --input-norm)")
    failures = info["failures"]
    lines.append(f"  failures: {len(failures)}")
    lines += [f"    {clip_id}: {reason}" for clip_id, reason in failures[:max_failures]]
    if len(failures) > max_failures:
        lines.append(f"    ... and {len(failures) - max_failures} more")
    return "\n".join(lines)
