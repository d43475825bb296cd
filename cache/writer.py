"""Writes the cache row by row so an interrupted extraction resumes where it stopped.

Every row is written, the file flushed, and only then its ``done`` flag set and flushed again,
so a crash (Ctrl-C, kill -9) loses at most the row in flight: on disk the file is consistent
after every flush, and the extraction spends its time in the backbone, not in a flush.
The file uses HDF5's default (oldest compatible) format on purpose: the newer one marks a file
"open for writing" in its superblock, and after a kill -9 HDF5 then refuses to reopen it
until an external `h5clear` is run.
"""
import datetime
import os
import shutil

import h5py
import numpy as np

from m3net.cache.schema import REQUIRED_ATTRS, SCHEMA_VERSION, CacheError, ProvenanceError, check_provenance

STR = h5py.string_dtype()
FAILURE_DTYPE = np.dtype([("video_id", STR), ("error", STR)])
# Free space kept for HDF5 metadata and the failures table beyond a row's features.
SPACE_MARGIN = 16 * 2**20


def _str_list(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class CacheWriter:
    """Creates a cache or reopens one for resuming (same provenance and clip list only).

    features per row: (T, H, W, C), or (K, T, H, W, C) when ``views`` = K > 0.
    """

    def __init__(self, path, video_ids, labels, classes, split, attrs, feature_shape=(7, 7, 2048)):
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise ValueError(f"cache attrs lack {missing}")
        self.path = path
        self.attrs = dict(attrs)
        self.broken = ""
        num_frames, views = int(attrs["num_frames"]), int(attrs["views"])
        self.row_shape = ((views,) if views else ()) + (num_frames, *feature_shape)
        if os.path.exists(path):
            self.file = self._reopen(path, video_ids)
        else:
            self.file = self._create(path, video_ids, labels, classes, split)
        self.features, self.done, self.failures = self.file["features"], self.file["done"], self.file["failures"]

    def _create(self, path, video_ids, labels, classes, split):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        f = h5py.File(path, "w", locking=False)
        count = len(video_ids)
        f.create_dataset("features", shape=(count, *self.row_shape), dtype=np.float16,
                         chunks=(1, *self.row_shape))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("classes", data=_str_list(classes), dtype=STR)
        f.create_dataset("video_ids", data=_str_list(video_ids), dtype=STR)
        f.create_dataset("split", data=_str_list(split), dtype=STR)
        f.create_dataset("done", shape=(count,), dtype=bool, fillvalue=False)
        f.create_dataset("failures", shape=(0,), maxshape=(None,), dtype=FAILURE_DTYPE, chunks=(64,))
        for key, value in self.attrs.items():
            f.attrs[key] = value
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.flush()
        return f

    def _reopen(self, path, video_ids):
        try:
            f = h5py.File(path, "r+", locking=False)
        except OSError as err:
            raise CacheError(f"{path}: exists but cannot be opened for resuming ({err}); "
                             "remove it or choose another --out") from err
        try:
            if int(f.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
                raise CacheError(f"{path}: schema_version {f.attrs.get('schema_version')} "
                                 f"is not {SCHEMA_VERSION}")
            check_provenance(dict(f.attrs), {k: self.attrs[k] for k in self.attrs if k != "code_version"}, path)
            existing = _str_list(f["video_ids"][()])
            if existing != _str_list(video_ids):
                raise ProvenanceError(f"{path}: holds {len(existing)} clips in a different list/order than "
                                      f"the {len(video_ids)} asked for; use a new --out file")
        except Exception:
            f.close()
            raise
        return f

    def pending(self):
        """Row indices whose features are not written yet."""
        return np.flatnonzero(~self.done[()]).tolist()

    def _check_space(self, need):
        """Stop before the disk is full: HDF5 meeting ENOSPC mid-write leaves a file it cannot close
        cleanly (a segfault at exit), while stopping here keeps every finished row resumable."""
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        if free < need + SPACE_MARGIN:
            raise CacheError(f"{self.path}: its disk has {free / 2**20:.1f} MiB free, the next row needs "
                             f"{need / 2**20:.1f} MiB (+{SPACE_MARGIN // 2**20} MiB margin); the rows written so "
                             "far are kept: free space and re-run the same command to resume")

    def _guarded(self, action):
        """Run an HDF5 write; a failing one (I/O error, disk full) becomes a CacheError and the file is
        closed without a further flush."""
        try:
            action()
        except (OSError, RuntimeError) as err:
            self.broken = " ".join(str(err).split())[:300]
            raise CacheError(f"{self.path}: writing failed ({self.broken}); the rows written before are kept: "
                             "fix the cause and re-run the same command to resume") from None

    def write(self, row, features):
        features = np.asarray(features, dtype=np.float16)
        if features.shape != self.row_shape:
            raise ValueError(f"row {row}: features of shape {features.shape}, expected {self.row_shape}")
        self._check_space(features.nbytes)

        def store():
            self.features[row] = features
            self.file.flush()
            self.done[row] = True
            self.file.flush()

        self._guarded(store)

    def add_failure(self, video_id, error):
        def store():
            n = self.failures.shape[0]
            self.failures.resize((n + 1,))
            self.failures[n] = (str(video_id), str(error))
            self.file.flush()

        self._guarded(store)

    def close(self):
        if not self.file.id.valid:
            return
        if self.broken:
            try:
                self.file.close()
            except (OSError, RuntimeError):
                pass  # the error was reported when the write failed
            return
        self.file.flush()
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_cache_arrays(path, features, labels, classes, video_ids, split, attrs):
    """A complete cache (every row done) from arrays in memory: for tests and generated data.

    features: (V, T, H, W, C) (or with a views axis after V when attrs["views"] > 0).
    """
    features = np.asarray(features)
    views = int(attrs.get("views", 0))
    full = {"backbone": "none", "weights": "none", "weights_sha256": "", "sampling": "tsn-centre",
            "resize": [256, 256], "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "dtype": "float16", "code_version": "arrays", "views": views,
            "num_frames": features.shape[2 if views else 1], **attrs}
    with CacheWriter(path, video_ids, labels, classes, split, full, feature_shape=features.shape[-3:]) as writer:
        for row in writer.pending():
            writer.write(row, features[row])
    return path
