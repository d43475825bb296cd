"""Per-channel statistics of a cache's training rows, stored in the cache (``m3net cache-stats``).

    /channel_stats/mean  (C,) float64   mean of every value of the channel in the rows (frames, positions, views)
    /channel_stats/std   (C,) float64   their standard deviation (population: divided by the count)
    /channel_stats/rows  (R,) int64     the rows they summarise: every done row of the split, in file order
    attrs: split ("train"), values_per_channel, created, code_version

They are what ``--input-norm center|standardize`` applies to every head alike (m3net.train.features.
InputNorm). The group sits beside the schema's datasets and changes none of them, so schema_version stays 1
and a reader that does not know the group ignores it. Statistics belong to the rows they list: once
``m3net extract`` has finished more rows of the split they are stale and ``channel_statistics`` refuses
them, naming the command that recomputes them. The group is written under a temporary name and renamed,
so a crash never leaves half of it behind.
"""
import datetime
import os
from dataclasses import dataclass

import h5py
import numpy as np

from m3net.cache.reader import _direct_chunks, _open, _read_rows, _strings
from m3net.cache.schema import CacheError
from m3net.locking import cache_lock_path, exclusive_lock

GROUP = "channel_stats"
SPLIT = "train"
# Values per block of rows reduced in float64 (~64 MiB), merged exactly across blocks (Chan et al.).
BLOCK_VALUES = 2**23


@dataclass(frozen=True)
class ChannelStatistics:
    """Per-channel mean and standard deviation of one split's rows of a cache, and where they come from."""

    mean: np.ndarray  # (C,) float64
    std: np.ndarray  # (C,) float64
    rows: np.ndarray  # (R,) int64, the rows summarised
    values_per_channel: int
    split: str = SPLIT
    created: str = ""
    code_version: str = ""
    source: str = ""  # the cache file

    def provenance(self):
        """What a checkpoint or a record says about these statistics (the rows by count and range)."""
        return {"source": self.source, "split": self.split, "rows": int(len(self.rows)),
                "first_row": int(self.rows[0]), "last_row": int(self.rows[-1]),
                "values_per_channel": int(self.values_per_channel), "created": self.created,
                "code_version": self.code_version}


def _split_rows(f, split):
    """The done rows of ``split``, in file order."""
    return np.flatnonzero(f["done"][()] & (np.asarray(_strings(f["split"])) == split)).astype(np.int64)


def _merge(count, mean, m2, part):
    """Running (count, mean, sum of squared deviations) merged with a block ``part`` (n, C) in float64."""
    n = part.shape[0]
    part_mean = part.mean(axis=0)
    part_m2 = ((part - part_mean) ** 2).sum(axis=0)
    total = count + n
    delta = part_mean - mean
    return total, mean + delta * (n / total), m2 + part_m2 + delta**2 * (count * n / total)


def compute_channel_statistics(path, split=SPLIT, progress=True):
    """ChannelStatistics of every done row of ``split`` (all frames, positions and views of each channel),
    exact in float64 whatever the cache's size (read block by block, with a progress bar)."""
    from m3net.progress import progress_bar

    with _open(path) as f:
        rows = _split_rows(f, split)
        if not len(rows):
            raise CacheError(f"{path}: no done {split} rows to compute channel statistics from (`m3net "
                             f"cache-info {path}` shows what extract finished)")
        dataset = f["features"]
        channels = dataset.shape[-1]
        per_row = int(np.prod(dataset.shape[1:-1]))  # values of one channel in one row
        block = max(1, BLOCK_VALUES // (per_row * channels))
        staging = np.empty((min(block, len(rows)), *dataset.shape[1:]), dtype=dataset.dtype)
        direct = _direct_chunks(dataset)
        count, mean, m2 = 0, np.zeros(channels), np.zeros(channels)
        bar = progress_bar(total=len(rows), enabled=progress, desc="cache-stats", unit="row")
        for start in range(0, len(rows), block):
            part_rows = rows[start:start + block]
            part = staging[:len(part_rows)]
            _read_rows(dataset, part_rows, part, path, direct)
            values = part.reshape(-1, channels).astype(np.float64)
            if not np.isfinite(values).all():
                raise CacheError(f"{path}: rows {part_rows.tolist()} hold NaN or inf values; re-extract them "
                                 "before computing channel statistics")
            count, mean, m2 = _merge(count, mean, m2, values)
            bar.update(len(part_rows))
        bar.close()
    from m3net.runtime import git_sha

    return ChannelStatistics(mean=mean, std=np.sqrt(m2 / count), rows=rows, values_per_channel=count, split=split,
                             created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             code_version=git_sha(), source=os.path.abspath(path))


def write_channel_statistics(path, split=SPLIT, progress=True):
    """Computes the split's ChannelStatistics and stores them in the cache (replacing older ones); returns them.

    The rows are read as any reader reads them (refused while extract writes the file); the group is then
    written under the cache's write lock, after checking that no row was finished meanwhile.
    """
    stats = compute_channel_statistics(path, split, progress)
    with exclusive_lock(cache_lock_path(path), path):
        try:
            f = h5py.File(path, "r+", locking=False)
        except OSError as err:
            raise CacheError(f"{path}: cannot be opened for writing the channel statistics ({err})") from None
        with f:
            if not np.array_equal(_split_rows(f, split), stats.rows):
                raise CacheError(f"{path}: rows of the {split} split were finished while the statistics were "
                                 "computed; run `m3net cache-stats` again once extract is done")
            temporary = f"{GROUP}.tmp"
            if temporary in f:
                del f[temporary]  # left by a crash
            group = f.create_group(temporary)
            group.create_dataset("mean", data=stats.mean)
            group.create_dataset("std", data=stats.std)
            group.create_dataset("rows", data=stats.rows)
            group.attrs.update({"split": split, "values_per_channel": stats.values_per_channel,
                                "created": stats.created, "code_version": stats.code_version})
            if GROUP in f:
                del f[GROUP]
            f.move(temporary, GROUP)
            f.flush()
    return read_channel_statistics(path)[0]


def _stored(f, path):
    """The ChannelStatistics stored in an open cache, or None."""
    if GROUP not in f:
        return None
    group = f[GROUP]
    return ChannelStatistics(mean=group["mean"][()], std=group["std"][()], rows=group["rows"][()],
                             values_per_channel=int(group.attrs["values_per_channel"]),
                             split=str(group.attrs["split"]), created=str(group.attrs["created"]),
                             code_version=str(group.attrs["code_version"]), source=os.path.abspath(path))


def read_channel_statistics(path):
    """(ChannelStatistics stored in the cache or None, whether they are stale: the split's done rows differ)."""
    with _open(path) as f:
        stats = _stored(f, path)
        return stats, stats is not None and not np.array_equal(_split_rows(f, stats.split), stats.rows)


def channel_statistics(path, option):
    """The cache's current ChannelStatistics; missing or stale ones are a CacheError naming ``option`` (what
    needs them) and the command that computes them."""
    stats, stale = read_channel_statistics(path)
    fix = f"run `m3net cache-stats {path}` (once: it reads the training rows and stores their statistics)"
    if stats is None:
        raise CacheError(f"{path}: holds no channel statistics, which {option} needs; {fix}")
    if stale:
        raise CacheError(f"{path}: its channel statistics cover {len(stats.rows)} {stats.split} rows, but extract has "
                         f"finished other rows since ({option} would normalise with outdated statistics); {fix}")
    return stats
