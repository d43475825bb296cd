"""The cache (m3net.cache) and the extraction that writes it: inconsistent files are refused naming what is
wrong, readers are told while a writer holds it, a full disk stops cleanly and resumes; datasets and frames
that would silently give wrong rows are errors or handled."""
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_cache import order_only_cache
from helpers_locks import hold_lock

from m3net.cache import CacheError, load_cache
from m3net.cli import main
from m3net.data.datasets import load_dataset
from m3net.errors import DatasetError, LockError

pytestmark = pytest.mark.usefixtures("aligned_head")


def _rewrite(path, name, transform):
    with h5py.File(path, "r+", locking=False) as f:
        data = transform(f[name][()])
        del f[name]
        f.create_dataset(name, data=data)


@pytest.mark.parametrize("name,transform,message", [
    ("labels", lambda a: np.concatenate([a, a[:1]]), "/labels has"),
    ("labels", lambda a: np.where(np.arange(len(a)) == 3, 99, a), "/labels range over"),
    ("labels", lambda a: np.where(np.arange(len(a)) == 3, -1, a), "/labels range over"),
    ("done", lambda a: a[:-1], "/done has"),
    ("features", lambda a: a[:, :2], "T=2 frames per clip, num_frames says 4"),
    ("features", lambda a: a[..., 0], "expected rank 5"),
    ("features", lambda a: np.where(np.arange(len(a))[:, None, None, None, None] == 5, np.nan, a).astype(a.dtype),
     "row 5 hold NaN or inf"),
])
def test_inconsistent_caches_are_refused_naming_what_is_wrong(tmp_path, name, transform, message):
    path = str(order_only_cache(tmp_path / "c.h5"))
    _rewrite(path, name, transform)
    with pytest.raises(CacheError, match=message):
        load_cache(path)


def test_readers_are_told_when_a_cache_is_being_written(cache, tmp_path):
    holder = hold_lock(cache + ".lock")
    try:
        with pytest.raises(LockError, match="another m3net process .* is writing"):
            load_cache(cache)
        result = CliRunner().invoke(main, ["cache-info", cache])
        assert result.exit_code == 75 and "wait for it to finish or stop it" in result.output
        assert "delete" not in result.output and "remove" not in result.output
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    load_cache(cache)


def test_a_full_disk_stops_extraction_cleanly_and_the_cache_resumes(tmp_path, monkeypatch):
    import shutil as real_shutil

    from m3net.cache import CacheWriter, cache_info

    path = str(tmp_path / "c.h5")
    features = np.zeros((4, 2, 7, 7, 8), np.float16)
    attrs = {"dataset": "x", "backbone": "none", "weights": "none", "weights_sha256": "", "num_frames": 2,
             "sampling": "tsn-centre", "resize": [8, 8], "crop": 7, "mean": [0, 0, 0], "std": [1, 1, 1],
             "dtype": "float16", "views": 0, "code_version": "test"}
    args = (path, ["a", "b", "c", "d"], [0, 0, 1, 1], ["p", "q"], ["train"] * 4, attrs)
    written = []
    usage = real_shutil.disk_usage

    def shrinking_disk(folder):  # room for two rows, then full
        total, used, free = usage(folder)
        return type(usage(folder))(total, used, 10**9 if len(written) < 2 else 1000)

    monkeypatch.setattr("m3net.cache.writer.shutil.disk_usage", shrinking_disk)
    with pytest.raises(CacheError, match="MiB free.*re-run the same command to resume"):
        with CacheWriter(*args, feature_shape=(7, 7, 8)) as writer:
            for row in writer.pending():
                writer.write(row, features[row])
                written.append(row)
    assert cache_info(path)["done"] == 2
    monkeypatch.setattr("m3net.cache.writer.shutil.disk_usage", usage)
    with CacheWriter(*args, feature_shape=(7, 7, 8)) as writer:
        assert writer.pending() == [2, 3]


def test_a_class_named_like_a_split_beside_other_classes_is_an_error(tmp_path):
    for folder in ("test", "dive", "vault"):
        (tmp_path / folder / "clip_0").mkdir(parents=True)
        (tmp_path / folder / "clip_0" / "img_00001.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"mixes split folders \(test\) with class folders \(dive, vault\)"):
        load_dataset("folder", str(tmp_path))


def test_huge_frames_are_resized_one_at_a_time_with_the_batched_result(tmp_path):
    import torch.nn.functional as F

    from m3net.extract.transforms import resize_frames

    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    batched = F.interpolate(torch.as_tensor(frames).permute(0, 3, 1, 2).float(), size=(64, 64), mode="bilinear",
                            align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
    assert torch.equal(resize_frames(frames, (64, 64)), batched)
    code = ("import resource, numpy as np\nfrom m3net.extract.transforms import resize_frames\n"
            "frames = np.zeros((8, 4000, 4000, 3), np.uint8)\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "resize_frames(frames, (256, 256))\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    extra_mib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.strip())
    assert extra_mib < 600, extra_mib  # all 8 frames in float32 at once took ~3 GB
