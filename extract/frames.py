"""``m3net frames``: decode every clip once into JPEG frame folders, so finetune stops decoding video.

    OUT/<clip_id>/img_00001.jpg ...              gym99, gym288, diving48 (flat: clip ids are unique)
    OUT/<split>/<class>/<clip>/img_00001.jpg ... folder, synthetic (the root's own class folders)
    OUT/frames.json                              what was written and how (checked on every re-run)
    OUT/failures.csv                             clips that could not be decoded (clip_id, path, error)

Every frame the video decodes to is kept, in order: video frame i (0-based, as `Clip.read` counts
it) is ``img_{i+1:05d}.jpg``, so a frame folder has the video's frame count and TSN sampling
(`sample_indices`, which only sees that count) picks the same frames from it, at test time and
for every random training draw. A fixed fps would renumber the frames and change which frame a
segment's index lands on. Frames are stored resized to the square ``crop·8/7`` (256 for 224) the
extraction and finetune transforms resize to, with the same resize (`resize_frames`): those
transforms then find frames already at their size and only crop, so the result equals the video
path's up to JPEG loss (quality 95, no chroma subsampling by default).

A clip is written into a hidden folder beside its target (``.<clip>.partial``, never read as a
clip) and renamed to the target when its last frame is on disk. A re-run skips the clips whose
folder exists, writes the others again from scratch, and gives the same bytes as an uninterrupted
run (also after kill -9; decoding processes die with the command). ``--workers N`` decoding
processes share the clips; under torchrun (WORLD_SIZE, RANK) rank r takes clips r, r + WORLD_SIZE,
... of those present under --root (every rank lists the same root) and writes only its own clips
and ``failures-rank<r>.csv``. Under torchrun the ranks join a gloo group only to wait for each
other at the end: a rank that exits first with status 3 would make torchrun stop the others.
"""
import contextlib
import csv
import ctypes
import datetime
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time

import torch
from PIL import Image

from m3net import __version__
from m3net.config import from_group, setting, settings
from m3net.data.datasets import LISTED_DATASETS, VIDEO_EXTENSIONS, DatasetError, DatasetSettings, load_dataset
from m3net.errors import ConfigError
from m3net.extract.loop import ExtractConfig, view_transform
from m3net.extract.transforms import resize_frames
from m3net.extract.video import Clip
from m3net.locking import exclusive_lock
from m3net.progress import progress_bar
from m3net.runtime import git_sha, versions

MANIFEST = "frames.json"
FORMAT = "m3net-frames-1"
FRAME_NAME = "img_{:05d}.jpg"
SUBSAMPLING = "4:4:4"  # PIL's subsampling=0: chroma at full resolution, as the decoded RGB frames have it
CHUNK = 16  # frames decoded at a time: a 1080p chunk is 100 MB
FAILURE_FIELDS = ("clip_id", "path", "error")
# frames.json keys a re-run must agree with (the versions are a record of the first run, not checked)
CHECKED = ("format", "dataset", "source_root", "layout", "resize", "jpeg_quality", "jpeg_subsampling")


@settings
class FramesConfig(DatasetSettings):
    out: str = setting(help="Folder to write the frame folders into; an existing one is resumed. Then pass it as "
                       "--root to extract, finetune, dataset-info (and as predict's --support).", path="dir")
    crop: int = setting(224, "The --crop finetune and extract will use: frames are stored resized to crop*8/7 "
                        "square (256 for 224), the size their transforms resize to.", minimum=32)
    quality: int = setting(95, "JPEG quality.", minimum=1, maximum=100)
    workers: int = setting(2, "Decoding processes, one clip each at a time (0: this process); up to one per core.",
                           minimum=0)
    folder_split: str = from_group(ExtractConfig, "folder_split")
    progress: bool = setting(True, cli=False)  # a bar on a terminal, a log line every 30 s elsewhere


def _rank():
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} and WORLD_SIZE {world}: expected 0 <= RANK < WORLD_SIZE")
    return rank, world


@contextlib.contextmanager
def _ranks_finish_together(world):
    """Under torchrun (MASTER_ADDR set), no rank leaves before every rank's clips are written; ranks
    started by hand with WORLD_SIZE and RANK alone run independently."""
    if world == 1 or "MASTER_ADDR" not in os.environ:
        yield
        return
    import torch.distributed as dist

    # A rank may finish hours before another: the barrier must outwait any imbalance of the shards.
    dist.init_process_group("gloo", timeout=datetime.timedelta(days=30))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def target_folder(dataset, clip, out):
    """Where a clip's frames go: OUT/<clip_id> for the listed datasets, else the clip's path under the
    root without its video extension (class and split folders kept)."""
    if dataset.name in LISTED_DATASETS:
        return os.path.join(out, clip.clip_id)
    relative = os.path.relpath(clip.path, dataset.root)
    stem, ext = os.path.splitext(relative)
    return os.path.join(out, stem if ext.lower() in VIDEO_EXTENSIONS else relative)


def _partial(target):
    """The hidden folder a clip is written into until it is complete."""
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.partial")


def build_manifest(config, dataset):
    size = view_transform(config.crop).resize
    decoders = {}
    for name in ("decord", "av"):
        try:
            decoders[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return {
        "format": FORMAT,
        "dataset": config.dataset,
        "source_root": os.path.abspath(config.root),
        "layout": ("<clip_id>/" if dataset.name in LISTED_DATASETS else "<path under the root>/")
        + FRAME_NAME.format(1),
        "frames": "every decoded frame, in order: video frame i (0-based) is img_<i+1 in 5 digits>.jpg",
        "resize": list(size),
        "crop": config.crop,
        "resize_method": "bilinear, antialiased, rounded to uint8 (m3net.extract.transforms.resize_frames)",
        "jpeg_quality": config.quality,
        "jpeg_subsampling": SUBSAMPLING,
        "m3net_version": __version__,
        "code_version": git_sha(),
        "versions": {**versions(), "pillow": Image.__version__, **decoders},
    }


def _write_atomically(path, write):
    """``write(file)`` into a hidden temporary file beside ``path`` (never taken for a clip, one per process:
    torchrun ranks may write the same file at once), then renamed to ``path``."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        write(fh)
    os.replace(tmp, path)


def _write_json(path, data):
    _write_atomically(path, lambda fh: fh.write(json.dumps(data, indent=1) + "\n"))


def _check_or_write_manifest(out, manifest):
    """Write OUT/frames.json, or refuse an OUT written with other settings (naming each difference)."""
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        if not any(not name.startswith(".") for name in os.listdir(out)):
            _write_json(path, manifest)
            return
        if not os.path.exists(path):  # (another rank may have written it since the first look)
            raise ConfigError(f"--out {out}: the folder holds files but no {MANIFEST}; choose a new or empty folder")
    try:
        with open(path) as fh:
            there = json.load(fh)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--out {out}: {MANIFEST} is unreadable ({err}); choose a new or empty folder") from None
    differences = [f"{key}: {there.get(key)!r} there, {manifest[key]!r} asked" for key in CHECKED
                   if there.get(key) != manifest[key]]
    if differences:
        raise ConfigError(f"--out {out}: holds frames written differently ({'; '.join(differences)}); "
                          "use another --out, or the settings it was written with")


def _write_synthetic_manifest(dataset, out):
    """OUT/manifest.json for --dataset synthetic --root OUT: the generator's manifest with every clip's
    path pointing at its frame folder (target_folder's rule)."""
    with open(os.path.join(dataset.root, "manifest.json")) as fh:
        manifest = json.load(fh)
    for entry in manifest["clips"]:
        stem, ext = os.path.splitext(entry["path"])
        entry["path"] = stem if ext.lower() in VIDEO_EXTENSIONS else entry["path"]
    _write_json(os.path.join(out, "manifest.json"), manifest)


def _check_disjoint(root, out):
    root, out = os.path.realpath(root), os.path.realpath(out)
    if os.path.commonpath([root, out]) in (root, out):
        raise ConfigError(f"--out {out} and --root {root}: one lies inside the other; the frame folders would be "
                          "listed as clips of --root (or the videos as clips of --out): use separate folders")


def _resized(source, size):
    """uint8 (size, size, 3) frames of the clip at ``source``, every frame in order, resized as the
    extraction and finetune transforms resize them."""
    for chunk in Clip(source).chunks(CHUNK):  # (n, H, W, 3)
        yield from resize_frames(chunk, (size, size)).permute(0, 2, 3, 1).numpy()  # (n, size, size, 3)


def write_clip(job):
    """(index, frames, bytes, None) when the clip's folder is complete, (index, 0, 0, reason) when the
    clip cannot be decoded (nothing of it is left on disk). A write error (disk full, permissions)
    raises: it is no fault of the clip."""
    index, source, target, size, quality = job
    partial = _partial(target)
    if os.path.exists(partial):  # left by a killed run
        shutil.rmtree(partial)
    os.makedirs(partial)
    frames, written, count = _resized(source, size), 0, 0
    while True:
        try:
            frame = next(frames, None)
        except Exception as err:  # decord, PyAV and PIL raise their own types; ClipError carries the reason
            shutil.rmtree(partial)
            return index, 0, 0, str(err).strip() or type(err).__name__
        if frame is None:
            break
        count += 1
        path = os.path.join(partial, FRAME_NAME.format(count))
        Image.fromarray(frame).save(path, format="JPEG", quality=quality, subsampling=0)
        written += os.path.getsize(path)
    os.rename(partial, target)
    return index, count, written, None


def _init_worker(parent):
    """A decoding process: one torch thread, no Ctrl-C of its own (the command stops it), and it dies
    with the command (also on kill -9), so no orphan renames a clip behind a re-run's back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the command died before prctl took effect
        os._exit(1)


def _results(jobs, workers):
    """write_clip over ``jobs`` in ``workers`` processes (0: here), in completion order."""
    if workers == 0 or not jobs:
        yield from map(write_clip, jobs)
        return
    pool = multiprocessing.get_context("fork").Pool(min(workers, len(jobs)), _init_worker, (os.getpid(),))
    try:
        yield from pool.imap_unordered(write_clip, jobs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _write_failures(path, failures):
    """The clips this run could not decode, in clip order; no file when there are none."""
    if not failures:
        if os.path.exists(path):
            os.remove(path)
        return

    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=FAILURE_FIELDS)
        writer.writeheader()
        writer.writerows(failures)

    _write_atomically(path, write)


def _present(dataset, config):
    clips = [c for c in dataset.clips if c.path is not None]
    if not clips:
        example = dataset.clips[0].clip_id if dataset.clips else "<clip_id>"
        raise DatasetError(f"--root {config.root}: none of the {len(dataset.clips)} {config.dataset} clips is there; "
                           f"expected video files named like {example}.mp4 (flat or in class folders) or frame "
                           f"folders {example}/img_00001.jpg (`m3net dataset-info --dataset {config.dataset} "
                           f"--root {config.root}` lists them)")
    return clips


def _make_out(out):
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the folder is not writable")


def write_frames(config):
    """Write the frame folders of every clip of this rank's shard that is not yet there; returns a summary."""
    rank, world = _rank()
    with _ranks_finish_together(world):
        return _write_shard(config, rank, world)


def _write_shard(config, rank, world):
    dataset = load_dataset(config.dataset, config.root, config.folder_split)
    present = _present(dataset, config)
    _check_disjoint(config.root, config.out)
    _make_out(config.out)
    size = view_transform(config.crop).resize[0]
    lock = os.path.join(config.out, ".lock" if world == 1 else f".lock-rank{rank}")
    failures_path = os.path.join(config.out, "failures.csv" if world == 1 else f"failures-rank{rank}.csv")
    with exclusive_lock(lock, f"--out {config.out}"):
        _check_or_write_manifest(config.out, build_manifest(config, dataset))
        if dataset.name == "synthetic":
            _write_synthetic_manifest(dataset, config.out)
        shard = present[rank::world]
        targets = [target_folder(dataset, clip, config.out) for clip in shard]
        pending = [(i, clip.path, target, size, config.quality) for i, (clip, target) in enumerate(zip(shard, targets))
                   if not os.path.isdir(target)]
        for parent in sorted({os.path.dirname(job[2]) for job in pending}):
            os.makedirs(parent, exist_ok=True)
        started, frames, written, failures = time.perf_counter(), 0, 0, []
        desc = f"frames {config.dataset}" + (f" rank {rank}/{world}" if world > 1 else "")
        with progress_bar(total=len(pending), unit="clip", desc=desc, enabled=config.progress) as bar, \
                contextlib.closing(_results(pending, config.workers)) as results:
            try:
                for index, count, nbytes, error in results:
                    frames, written = frames + count, written + nbytes
                    if error is not None:
                        failures.append((index, {"clip_id": shard[index].clip_id, "path": shard[index].path,
                                                 "error": error}))
                    bar.update(1)
                    bar.set_postfix(frames_s=f"{frames / max(time.perf_counter() - started, 1e-9):.0f}",
                                    failed=len(failures))
            except OSError as err:  # writing, not decoding: the clip is not at fault
                raise ConfigError(f"--out {config.out}: cannot write frames ({err}); the clips finished so far are "
                                  "kept, re-run the same command to resume") from None
        seconds = time.perf_counter() - started
        failed = [failure for _, failure in sorted(failures, key=lambda f: f[0])]
        _write_failures(failures_path, failed)
    return {"out": config.out, "dataset": config.dataset, "rank": rank, "world_size": world,
            "listed": len(dataset.clips), "missing": len(dataset.clips) - len(present), "shard": len(shard),
            "done": len(pending) - len(failed), "skipped": len(shard) - len(pending), "failed": len(failed),
            "failures": failed, "failures_path": failures_path if failed else "", "frames": frames,
            "bytes": written, "seconds": seconds, "frames_per_s": frames / seconds if seconds else 0.0,
            "resize": [size, size], "jpeg_quality": config.quality}


def format_summary(summary, max_failures=10):
    s = summary
    who = f" (rank {s['rank']} of {s['world_size']}: {s['shard']} clips)" if s["world_size"] > 1 else ""
    per_frame = f", {s['bytes'] / s['frames'] / 1024:.1f} KiB/frame" if s["frames"] else ""
    lines = [f"{s['out']}{who}: {s['done']} clips done, {s['skipped']} skipped (already there), {s['failed']} failed, "
             f"{s['missing']} of {s['listed']} listed clips not under --root; {s['frames']} frames "
             f"({s['bytes'] / 2**20:.1f} MiB{per_frame}) at {s['resize'][0]}x{s['resize'][1]} in {s['seconds']:.1f} s "
             f"({s['frames_per_s']:.0f} frames/s)"]
    if s["failed"]:
        lines.append(f"{s['failed']} clips could not be decoded (listed in {s['failures_path']}; a re-run tries "
                     "them again):")
        lines += [f"  {f['clip_id']}: {f['error']}" for f in s["failures"][:max_failures]]
        if s["failed"] > max_failures:
            lines.append(f"  ... and {s['failed'] - max_failures} more")
    return "\n".join(lines)
