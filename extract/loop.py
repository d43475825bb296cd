"""The extraction loop: every clip of a dataset through the ResNet-50 trunk into the HDF5 cache.

DataLoader workers open, sample, decode and crop clips (uint8, pinned); the main process runs the
backbone on batches of ``batch_size`` clips (all their views and frames in one forward,
channels_last, autocast fp16/bf16 on CUDA, fp32 on CPU); a writer thread stores rows while the
next batch computes.

Resumable and reproducible: only rows not ``done`` are computed. Every forward has the same
shape (a short last batch is padded with zero clips) and BatchNorm runs in eval mode, so a clip's
features do not depend on which clips share its batch; training-view randomness comes from
(seed, row, view). An interrupted run (Ctrl-C, kill -9) resumed with the same settings therefore
gives the same bytes as an uninterrupted one. ``batch_size`` and ``precision`` are stored as
attrs and checked on resume, since they can change the last bits of the features. So can the
number of CPU threads (oneDNN picks its blocking from it; seen here: 1 vs 2 threads differ in
float16 bits) and the GPU model: resume on the same kind of machine for identical bytes.

With ``views`` = K > 0 every row holds K views (V, K, T, 7, 7, C): view 0 is the test view
(segment centres, centre crop; evaluation reads it), views 1..K-1 are training views (random
frame within each segment, random crop 224 of the 256x256 frame, horizontal flip p=1/2).
"""
import dataclasses
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from m3net.cache import CacheWriter
from m3net.config import RunSettings, setting, settings
from m3net.data.datasets import DatasetSettings, load_dataset
from m3net.data.episodes import SPLITS
from m3net.errors import ConfigError
from m3net.extract.backbone import FEATURE_CHANNELS, build_backbone
from m3net.extract.sampling import sample_indices
from m3net.extract.transforms import TransformConfig, normalise, test_view, train_view
from m3net.extract.video import open_clip
from m3net.locking import cache_lock_path, exclusive_lock
from m3net.progress import progress_bar
from m3net.runtime import git_sha, resolve_device

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@settings
class ExtractConfig(DatasetSettings, RunSettings):
    out: str = setting(help="HDF5 cache to write; an existing one is resumed.", path="file")
    weights: str = setting("imagenet", "imagenet (torchvision V1, the paper's), imagenet-v2, random (tests/demo "
                           "only), or PATH to a state dict or a finetune checkpoint.")
    frames: int = setting(0, "Frames sampled per clip (T, TSN segment centres); 0: 8, or the frames of the "
                          "finetune checkpoint given as --weights.", minimum=0)
    crop: int = setting(0, "Crop size (frames resized to crop*8/7 first, 256 for 224); 0: 224, or the crop of the "
                        "finetune checkpoint given as --weights.", minimum=0)
    batch_size: int = setting(8, "Clips per backbone forward (x views x frames images).", minimum=1)
    workers: int = setting(2, "DataLoader processes decoding clips (0: main process).", minimum=0)
    views: int = setting(0, "0: one test view; K>0: K views per clip, view 0 the test view, 1..K-1 random "
                         "crop+flip training views.", minimum=0)
    precision: str = setting("auto", "Autocast dtype; auto = fp16 on CUDA, fp32 on CPU.",
                             choices=("auto", *PRECISIONS))
    splits: tuple = setting(SPLITS, "Splits whose clips to extract, comma-separated (evaluation reads test alone: "
                            "`reproduce` extracts only it). The cache lists every clip; the others stay not done "
                            "and a later run with other --splits fills them in.", choices=SPLITS)
    folder_split: str = setting("test", "Split given to every clip of a <root>/<class>/<clip> folder without "
                                "train/val/test subfolders.", choices=SPLITS)
    # Compute at most this many pending clips (0: all); for benchmarks and smoke runs.
    limit: int = setting(0, minimum=0, cli=False)
    progress: bool = setting(True, cli=False)


def resolve_precision(name, device):
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name}: expected auto, {', '.join(PRECISIONS)}")
    if device.type == "cpu" and name == "fp16":
        raise ConfigError("--precision fp16 needs CUDA; use fp32 or bf16 on CPU")
    return name


class ClipViews(torch.utils.data.Dataset):
    """Item i: (row, uint8 (V, T, 3, crop, crop) views or None, failure reason or None)."""

    def __init__(self, items, frames, views, seed, transform=TransformConfig()):
        self.items = items  # [(row, clip id, path or uint8 (T, H, W, 3) frames)]
        self.frames, self.views, self.seed, self.transform = frames, views, seed, transform

    def __len__(self):
        return len(self.items)

    def views_of(self, row, source):
        clip = open_clip(source)
        total = len(clip)
        plans = [(sample_indices(total, self.frames), None)]
        for view in range(1, self.views):
            rng = np.random.default_rng([self.seed, row, view])
            plans.append((sample_indices(total, self.frames, train=True, rng=rng), rng))
        wanted = sorted({int(i) for indices, _ in plans for i in indices})
        decoded = clip.read(wanted)  # (U, H, W, 3): every wanted frame decoded once
        position = {index: k for k, index in enumerate(wanted)}
        out = []
        for indices, rng in plans:
            frames = decoded[[position[int(i)] for i in indices]]  # (T, H, W, 3)
            out.append(test_view(frames, self.transform) if rng is None else train_view(frames, rng, self.transform))
        return torch.stack(out)  # (V, T, 3, crop, crop)

    def __getitem__(self, i):
        row, clip_id, source = self.items[i]
        try:
            return row, self.views_of(row, source), None
        except Exception as err:  # any reason a clip cannot be read is recorded, never fatal
            reason = str(err) or type(err).__name__
            where = clip_id if isinstance(source, np.ndarray) else str(source)  # frames have no path: their id
            return row, None, reason if where and where in reason else f"{reason} ({where})"


def collate(items):
    """-> (rows, uint8 (n, V, T, 3, crop, crop) or None, [(row, reason)])."""
    good = [(row, views) for row, views, reason in items if reason is None]
    failed = [(row, reason) for row, _, reason in items if reason is not None]
    frames = torch.stack([v for _, v in good]) if good else None
    return [row for row, _ in good], frames, failed


def clip_loader(clip_views, batch_size, workers, device):
    """DataLoader over a ClipViews yielding collate()'s batches of ``batch_size`` clips."""
    return torch.utils.data.DataLoader(
        clip_views, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
    )


def make_loader(items, config, device):
    """clip_loader over [(row, clip id, path)] with the extraction's frames, views and transform."""
    clip_views = ClipViews(items, config.frames, max(config.views, 1), config.seed, view_transform(config.crop))
    return clip_loader(clip_views, config.batch_size, config.workers, device)


class BackgroundWriter:
    """Runs CacheWriter calls in one thread so HDF5 writes overlap the next forward."""

    def __init__(self, writer, depth=16):
        self.writer, self.queue, self.error = writer, queue.Queue(depth), None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job[0](*job[1:])
                except Exception as err:  # re-raised in the main thread
                    self.error = err

    def submit(self, fn, *args):
        if self.error is not None:
            raise self.error
        self.queue.put((fn, *args))

    def close(self):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


class Extractor:
    """The backbone on one device: uint8 clip views -> float16 (n, V, T, 7, 7, C) numpy."""

    def __init__(self, model, device, precision, batch_size, transform=TransformConfig()):
        self.device, self.batch_size, self.transform = device, batch_size, transform
        self.amp_dtype = PRECISIONS[precision]
        self.model = model.to(device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def __call__(self, frames):
        n, views, t = frames.shape[:3]
        x = frames.to(self.device, non_blocking=True).flatten(0, 2)  # (n*V*T, 3, crop, crop) uint8
        pad = (self.batch_size - n) * views * t
        if pad > 0:  # fixed forward shape: a clip's features never depend on its batch
            x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
        x = normalise(x, self.transform).contiguous(memory_format=torch.channels_last)
        # Same cuDNN algorithms every run (bit-identical rows after a resume), set for this forward
        # only, not for the rest of the process.
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True), \
                torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                               enabled=self.amp_dtype is not None):
            y = self.model(x)  # (B*V*T, C, 7, 7)
        y = y[: n * views * t].permute(0, 2, 3, 1).to(torch.float16)  # (n*V*T, 7, 7, C)
        return y.reshape(n, views, t, *y.shape[1:]).cpu().numpy()  # (n, V, T, 7, 7, C)


def map_side(crop):
    """H = W of the trunk's feature maps for ``crop`` pixels (stride 32): 7 for 224, 2 for 64."""
    return -(-crop // 32)


def view_transform(crop):
    """The extraction transform at ``crop``: resize to crop·8/7 (256 for 224), centre or random crop."""
    return TransformConfig(resize=(crop * 8 // 7,) * 2, crop=crop)


def finetuned_view(weights):
    """(frames, crop) a finetune checkpoint passed as --weights was trained at, or None for other weights."""
    if not os.path.isfile(weights):
        return None
    try:  # mmap: the settings without reading the tensors
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None  # not a checkpoint; build_backbone reports what is wrong with the file
    train = state.get("train_config") if isinstance(state, dict) and "backbone" in state else None
    return (int(train["frames"]), int(train["crop"])) if isinstance(train, dict) and "crop" in train else None


def resolve_view(config):
    """``config`` with frames and crop filled in: as given, else the finetune checkpoint's, else 8 and 224.
    A finetune checkpoint's head expects its own frames and crop: other values are refused here, not
    after hours of extraction by `evaluate`."""
    tuned = finetuned_view(config.weights)
    frames, crop = config.frames or (tuned[0] if tuned else 8), config.crop or (tuned[1] if tuned else 224)
    if tuned and (frames, crop) != tuned:
        raise ConfigError(f"--weights {config.weights} was finetuned with --frames {tuned[0]} --crop {tuned[1]}; "
                          f"extracting with --frames {frames} --crop {crop} would give a cache its head refuses "
                          "(leave --frames and --crop out to follow the checkpoint)")
    return dataclasses.replace(config, frames=frames, crop=crop)


def cache_attrs(config, provenance, precision, transform=TransformConfig()):
    return {
        "dataset": config.dataset, "backbone": "resnet50", **provenance,
        "num_frames": config.frames,
        "sampling": "tsn-centre+random-crop-flip" if config.views else "tsn-centre",
        "resize": list(transform.resize), "crop": transform.crop,
        "mean": list(transform.mean), "std": list(transform.std),
        "dtype": "float16", "views": config.views, "precision": precision,
        "batch_size": config.batch_size, "code_version": git_sha(),
    }


def _recorded_failures(writer):
    return {(f["video_id"].decode() if isinstance(f["video_id"], bytes) else f["video_id"],
             f["error"].decode() if isinstance(f["error"], bytes) else f["error"]) for f in writer.failures[()]}


@dataclass
class Prepared:
    """What every process of a run needs before it computes rows."""

    dataset: object  # m3net.data.datasets.Dataset
    model: torch.nn.Module
    provenance: dict
    device: torch.device
    precision: str
    attrs: dict
    splits: tuple  # the splits whose clips this run extracts

    def wanted(self, rows):
        """The ``rows`` this run computes: clips of its splits that are present under --root (a missing clip is
        coverage, shown by `m3net dataset-info`, not a failure)."""
        clips = self.dataset.clips
        return [row for row in rows if clips[row].split in self.splits and clips[row].path is not None]

    def open_writer(self, path):
        clips = self.dataset.clips
        side = map_side(int(self.attrs["crop"]))
        return CacheWriter(path, [c.clip_id for c in clips], [c.label for c in clips], self.dataset.classes,
                           [c.split for c in clips], self.attrs, feature_shape=(side, side, FEATURE_CHANNELS))


def checked_dataset(config):
    """The dataset, refused (before any file is written) when no listed clip of --splits is under --root."""
    if config.views == 1:
        raise ConfigError("--views 1 would store the test view alone; use --views 0 (test view) "
                         "or --views K >= 2 (test view + K-1 random crop+flip training views)")
    dataset = load_dataset(config.dataset, config.root, config.folder_split)
    dataset.require_present(config.splits)
    return dataset


def prepare(config, device=None):
    """Weights (first: a weights problem fails fast), dataset and device; writes nothing."""
    model, provenance = build_backbone(config.weights, seed=config.seed)
    dataset = checked_dataset(config)
    device = device or resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    return Prepared(dataset, model, provenance, device, precision,
                    cache_attrs(config, provenance, precision, view_transform(config.crop)), tuple(config.splits))


def compute_rows(config, prepared, writer, rows):
    """Features of ``rows`` into ``writer`` (failures recorded once); returns (computed, [(id, reason)])."""
    clips, device = prepared.dataset.clips, prepared.device
    started, computed, failed = time.perf_counter(), 0, []
    recorded = _recorded_failures(writer)
    background = BackgroundWriter(writer)

    def fail(row, reason):
        failed.append((clips[row].clip_id, reason))
        if (clips[row].clip_id, reason) not in recorded:
            background.submit(writer.add_failure, clips[row].clip_id, reason)

    try:
        items = [(row, clips[row].clip_id, clips[row].path) for row in rows]
        loader = make_loader(items[:config.limit] if config.limit else items, config, device)
        extractor = Extractor(prepared.model, device, prepared.precision, config.batch_size,
                              view_transform(config.crop))
        views = max(config.views, 1)
        with progress_bar(total=len(loader.dataset), unit="clip", enabled=config.progress,
                          desc=f"extract {config.dataset}") as bar:
            for batch_rows, frames, failures in loader:
                for row, reason in failures:
                    fail(row, reason)
                if frames is not None:
                    features = extractor(frames)  # (n, V, T, 7, 7, C)
                    for row, row_features in zip(batch_rows, features):
                        background.submit(writer.write, row, row_features if config.views else row_features[0])
                    computed += len(batch_rows)
                bar.update(len(batch_rows) + len(failures))
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(clips_s=f"{computed / elapsed:.2f}",
                                frames_s=f"{computed * views * config.frames / elapsed:.1f}", failed=len(failed))
    finally:
        background.close()  # drains the queue: every computed row lands before the file closes
    return computed, failed


def summarise(config, prepared, pending, computed, failed, done_rows, seconds):
    """done_rows: (V,) bool, the cache's /done after the run."""
    clips, views = prepared.dataset.clips, max(config.views, 1)
    in_splits = [row for row, clip in enumerate(clips) if clip.split in prepared.splits]
    present = prepared.wanted(in_splits)
    return {
        "out": config.out, "config": asdict(config), "device": str(prepared.device), "precision": prepared.precision,
        "weights": prepared.provenance["weights"], "clips": len(clips), "splits": list(prepared.splits),
        "listed": len(in_splits), "present": len(present), "missing": len(in_splits) - len(present),
        "pending_before": pending, "computed": computed, "failed": len(failed), "failures": failed,
        "done": int(np.count_nonzero(done_rows[in_splits])), "not_done": int(np.count_nonzero(~done_rows[present])),
        "seconds": seconds, "clips_per_s": computed / seconds if seconds else 0.0,
        "frames_per_s": computed * views * config.frames / seconds if seconds else 0.0,
    }


def extract_dataset(config):
    """Fill ``config.out`` with the features of every clip; returns a summary dict.

    Under ``torchrun`` (WORLD_SIZE > 1) every process takes a share of the clips; see
    m3net.extract.distributed.
    """
    config = resolve_view(config)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from m3net.extract.distributed import extract_sharded

        return extract_sharded(config)
    prepared = prepare(config)  # before the lock file or the cache is created
    os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
    with exclusive_lock(cache_lock_path(config.out), config.out):
        started = time.perf_counter()
        with prepared.open_writer(config.out) as writer:
            pending = prepared.wanted(writer.pending())
            computed, failed = compute_rows(config, prepared, writer, pending)
            done = writer.done[()]
    return summarise(config, prepared, len(pending), computed, failed, done, time.perf_counter() - started)


def format_summary(summary, max_failures=10):
    lines = [
        f"{summary['out']}: {summary['done']:,} of the {summary['present']:,} {'/'.join(summary['splits'])} clips "
        f"present under --root done ({summary['computed']} computed now in {summary['seconds']:.1f} s: "
        f"{summary['clips_per_s']:.2f} clips/s, {summary['frames_per_s']:.1f} frames/s on {summary['device']}, "
        f"{summary['precision']})",
    ]
    if summary["missing"]:
        lines.append(f"{summary['missing']:,} of the {summary['listed']:,} listed clips are not under --root and were "
                     "left out (`m3net dataset-info` shows the coverage per split)")
    if summary["failed"]:
        lines.append(f"{summary['failed']} clips failed to decode; their reasons are in /failures (m3net cache-info):")
        lines += [f"  {clip_id}: {reason}" for clip_id, reason in summary["failures"][:max_failures]]
        if summary["failed"] > max_failures:
            lines.append(f"  ... and {summary['failed'] - max_failures} more")
    return "\n".join(lines)
