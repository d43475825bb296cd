"""The HDF5 cache: schema, resumable writer, crash safety, provenance refusal, reader."""
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from m3net.cache import (
    CacheError,
    CacheWriter,
    ProvenanceError,
    cache_info,
    check_provenance,
    load_cache,
    write_cache_arrays,
)

ATTRS = {"dataset": "unit", "backbone": "resnet50", "weights": "random", "weights_sha256": "random-seed-0",
         "num_frames": 3, "sampling": "tsn-centre", "resize": [256, 256], "crop": 224,
         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dtype": "float16", "views": 0,
         "code_version": "test"}


def _arrays(v=6, t=3, c=8, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((v, t, 7, 7, c)).astype(np.float16)
    labels = np.arange(v) % 3
    ids = [f"clip_{i:03d}" for i in range(v)]
    split = ["train", "train", "train", "val", "test", "test"][:v]
    return feats, labels, ["a", "b", "c"], ids, split


def test_write_and_load_roundtrip(tmp_path):
    feats, labels, classes, ids, split = _arrays()
    path = write_cache_arrays(tmp_path / "c.h5", feats, labels, classes, ids, split, ATTRS)
    cached = load_cache(path)
    assert np.array_equal(cached.features, feats) and cached.features.dtype == np.float16
    assert cached.labels.tolist() == labels.tolist() and cached.classes == classes
    assert cached.video_ids == ids and cached.split.tolist() == split
    only_test = load_cache(path, splits=["test"])
    assert only_test.video_ids == ids[4:] and np.array_equal(only_test.features, feats[4:])
    with h5py.File(path, "r") as f:  # the schema of docs/design.md
        assert f["features"].chunks == (1, 3, 7, 7, 8)
        assert f["done"][()].all() and f["failures"].shape == (0,)
        for key in ("schema_version", "dataset", "weights_sha256", "num_frames", "code_version", "created"):
            assert key in f.attrs


def test_provenance_mismatch_names_the_key(tmp_path):
    feats, labels, classes, ids, split = _arrays()
    path = write_cache_arrays(tmp_path / "c.h5", feats, labels, classes, ids, split, ATTRS)
    with pytest.raises(ProvenanceError, match=r"num_frames: cache has 3, expected 8"):
        load_cache(path, expect={"num_frames": 8})
    load_cache(path, expect={"num_frames": 3, "resize": [256, 256]})  # equal values pass
    with pytest.raises(ProvenanceError, match="weights"):
        CacheWriter(path, ids, labels, classes, split, {**ATTRS, "weights": "imagenet-v1"}, feature_shape=(7, 7, 8))
    with pytest.raises(ProvenanceError, match="different list"):
        CacheWriter(path, ids[::-1], labels, classes, split, ATTRS, feature_shape=(7, 7, 8))
    with pytest.raises(ProvenanceError, match="crop"):
        check_provenance({"crop": 224}, {"crop": 112}, "x.h5")


def test_resume_computes_only_pending_rows_and_records_failures(tmp_path):
    feats, labels, classes, ids, split = _arrays()
    path = tmp_path / "c.h5"
    with CacheWriter(path, ids, labels, classes, split, ATTRS, feature_shape=(7, 7, 8)) as w:
        for row in (0, 2):
            w.write(row, feats[row])
        w.add_failure("clip_005", "zero-byte file")
    with CacheWriter(path, ids, labels, classes, split, ATTRS, feature_shape=(7, 7, 8)) as w:
        assert w.pending() == [1, 3, 4, 5]
        with pytest.raises(ValueError, match="expected"):
            w.write(1, feats[1][:2])
    info = cache_info(path)
    assert info["done"] == 2 and info["total"] == 6
    assert info["splits"]["train"] == {"clips": 3, "done": 2, "classes": 3}
    assert info["failures"] == [("clip_005", "zero-byte file")]
    assert load_cache(path).video_ids == ["clip_000", "clip_002"]


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CacheError, match="no such cache"):
        load_cache(tmp_path / "missing.h5")
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("hello")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        load_cache(not_h5)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not an m3net feature cache"):
        load_cache(other)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from m3net.cache import CacheWriter
    path, attrs = sys.argv[1], eval(sys.argv[2])
    ids = [f"clip_{i:03d}" for i in range(40)]
    with CacheWriter(path, ids, np.zeros(40, int), ["a"], ["train"] * 40, attrs, feature_shape=(7, 7, 8)) as w:
        for row in w.pending():
            w.write(row, np.full((3, 7, 7, 8), row, np.float16))  # deterministic per row
            print(row, flush=True)
            time.sleep(0.02)
    """
)


@pytest.mark.slow
def test_kill_9_then_resume_is_identical(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), repr(ATTRS)],
                            stdout=subprocess.PIPE, text=True)
    for _ in range(10):  # let some rows land, then kill without any cleanup
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = cache_info(path)
    assert 0 < partial["done"] < 40
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), repr(ATTRS)], check=True, capture_output=True)
    clean = tmp_path / "clean.h5"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(clean), repr(ATTRS)], check=True, capture_output=True)
    resumed, uninterrupted = load_cache(path), load_cache(clean)
    assert len(resumed.video_ids) == 40
    assert resumed.features.tobytes() == uninterrupted.features.tobytes()


@pytest.mark.parametrize("layout", [dict(chunks=(2, 3, 7, 7, 8)), dict(compression="gzip", chunks=(1, 3, 7, 7, 8)),
                                    dict(chunks=None)])
def test_caches_with_other_layouts_read_the_same_features(tmp_path, layout):
    """Rows are read straight from their chunk only when each row is one unfiltered chunk (the writer's
    layout); any other layout (several rows per chunk, compression, contiguous) goes through HDF5 and
    must give the same values, in the order asked for."""
    from m3net.cache import RowReader

    feats, labels, classes, ids, split = _arrays()
    path = write_cache_arrays(tmp_path / "c.h5", feats, labels, classes, ids, split, ATTRS)
    other = tmp_path / "other.h5"
    with h5py.File(path, "r") as src, h5py.File(other, "w") as dst:
        for name in src:
            if name != "features":
                src.copy(name, dst)
        dst.attrs.update(src.attrs)
        dst.create_dataset("features", data=src["features"][()], **layout)
    for cache in (path, other):
        assert np.array_equal(load_cache(cache).features, feats)
        reader = RowReader(str(cache))
        rows = np.array([4, 0, 5, 0, 2])
        assert np.array_equal(reader.read(rows), feats[rows])
        reader.close()
