"""``--plan`` (``reproduce``, ``finetune``, ``extract``): what a run will take, before it takes it.

Trains nothing and writes nothing. For the clips present under --root it gives
    clips       present per split out of those listed (the coverage every command uses)
    frames      to decode: finetune, episodes x way x (shot + queries) x frames plus the validations;
                extract, clips x views x frames
    disk        frame folders (every frame of a clip, decoded once as JPEG), the feature cache, checkpoints
    time        an estimate from a short probe on this machine, which says what it timed: a few present
                clips decoded at the run's frames and crop, one training step of an episode of the run's
                size (random frames), one clip through the backbone, one evaluation episode through the head

Counts are exact for the settings; disk and time are estimates. The counting functions are those of
m3net.footprint (finetune_frames, extract_frames, cache_bytes, frame_folder_bytes), which the figures of
docs/reproducing.md come from too.
"""
import dataclasses
import io
import time
import warnings

import numpy as np
import torch

from m3net.data.episodes import SPLITS
from m3net.errors import DatasetError
from m3net.extract.backbone import FEATURE_CHANNELS, RandomWeightsWarning
from m3net.footprint import cache_bytes, extract_frames, finetune_frames, frame_folder_bytes

CHECKPOINTS = ("last.pt", "best.pt")
PROBE_CLIPS = 4
JPEG = {"quality": 95, "subsampling": 0}  # how frame folders store frames (4:4:4, no chroma subsampling)
# A validation episode runs the forward alone: about a third of a training step's forward + backward.
FORWARD_SHARE = 1 / 3


@dataclasses.dataclass
class Probe:
    """What was timed and measured on this machine (None: not probed for this plan)."""

    device: str
    decoded: int  # clips decoded
    failed: list  # (clip id, reason) of probed clips that did not decode
    decode_seconds: float  # per clip: open, sample and decode the run's frames, crop (training view)
    frames_per_clip: float  # mean frame count of the decoded clips
    jpeg_bytes: float  # per frame, resized to crop·8/7 and stored as a frame folder stores it
    step_seconds: float = None  # one optimizer step of one training episode (random frames)
    checkpoint_bytes: int = None  # one checkpoint: backbone, head and optimizer state
    clip_seconds: float = None  # one clip's frames through the backbone (extract)
    head_seconds: float = None  # one evaluation episode through the head, from cached-size features


def _jpeg_bytes(frame, size):
    from PIL import Image

    from m3net.extract.transforms import resize_frames

    resized = resize_frames(frame[None], size)[0].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    buffer = io.BytesIO()
    Image.fromarray(resized).save(buffer, format="JPEG", **JPEG)
    return buffer.tell()


def probe_decoding(clips, frames, crop, count=PROBE_CLIPS, seed=0):
    """Decodes ``count`` of ``clips`` (spread over the list) as finetune does; returns the Probe's decoding fields."""
    from m3net.extract.loop import view_transform
    from m3net.extract.sampling import sample_indices
    from m3net.extract.transforms import train_view
    from m3net.extract.video import Clip

    transform = view_transform(crop)
    picked = clips[:: max(1, len(clips) // count)][:count]
    seconds, lengths, sizes, failed = [], [], [], []
    for k, clip in enumerate(picked):
        rng = np.random.default_rng([seed, k])
        started = time.perf_counter()
        try:
            video = Clip(clip.path)
            decoded = video.read(sample_indices(len(video), frames, train=True, rng=rng))  # (T, H, W, 3)
            train_view(decoded, rng, transform)
        except Exception as err:  # any reason the run would record as a failure
            failed.append((clip.clip_id, str(err) or type(err).__name__))
            continue
        seconds.append(time.perf_counter() - started)
        lengths.append(len(video))
        sizes.append(_jpeg_bytes(decoded[0], transform.resize))
    if not seconds:
        raise DatasetError(f"none of the {len(picked)} clips probed could be decoded (e.g. {failed[0][0]}: "
                           f"{failed[0][1]}); the run would skip every clip")
    return dict(decoded=len(seconds), failed=failed, decode_seconds=float(np.mean(seconds)),
                frames_per_clip=float(np.mean(lengths)), jpeg_bytes=float(np.mean(sizes)))


def _timed(device, run, warmup):
    from m3net.runtime import synchronize

    for _ in range(warmup):
        run()
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def _state_bytes(*states):
    """Bytes of the tensors in (nested) state dicts."""
    total = 0
    for state in states:
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
            elif isinstance(value, dict):
                total += _state_bytes(value)
    return total


def probe_training(config, device, warmup):
    """(seconds of one optimizer step on one random episode of ``config``'s size, bytes of one checkpoint, the built
    training, what was timed). The models are built as finetune builds them (so its weights are checked too). On a
    CPU the step is timed on a 1-shot episode with 1 query per class and scaled by the clips (the time grows about
    linearly with the images; a full episode's activations take tens of GB there)."""
    from m3net.train.finetune import amp_dtype_for, build_training, forward_episode, set_train_mode

    shot, queries = (config.shot, config.queries) if device.type == "cuda" else (1, 1)
    amp_dtype = amp_dtype_for(config, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the time does not depend on the values
        training = build_training(config, device, amp_dtype)
    set_train_mode(training.model, config)
    generator = torch.Generator().manual_seed(config.seed)
    shape = (config.frames, 3, config.crop, config.crop)
    support = torch.randint(0, 256, (config.way * shot, *shape), dtype=torch.uint8, generator=generator)
    query = torch.randint(0, 256, (config.way * queries, *shape), dtype=torch.uint8, generator=generator)
    support, query = support.to(device), query.to(device)
    support_labels = torch.arange(config.way, device=device).repeat_interleave(shot)
    query_labels = torch.arange(config.way, device=device).repeat_interleave(queries)

    def step():
        outputs = forward_episode(training.model, support, support_labels, query, amp_dtype)
        training.scaler.scale(training.head.loss(outputs, query_labels)).backward()
        training.step(config, 1)

    scale = (config.shot + config.queries) / (shot + queries)
    seconds = _timed(device, step, warmup) * scale
    size = _state_bytes(training.backbone.state_dict(), training.head.state_dict(), training.optimizer.state_dict())
    images = config.way * (shot + queries) * config.frames
    what = (f"one training step of a random {config.way}-way {shot}-shot episode with {queries} "
            f"quer{'y' if queries == 1 else 'ies'} per class ({images} images at {config.crop})"
            + (f", scaled x{scale:g} to {config.shot} + {config.queries} clips per class" if scale != 1 else ""))
    return seconds, size, training, what


@torch.no_grad()
def probe_extraction(backbone, frames, crop, device, warmup):
    """Seconds of one clip's ``frames`` (test view) through the backbone as extract runs it."""
    from m3net.extract.loop import Extractor, resolve_precision, view_transform

    extractor = Extractor(backbone, device, resolve_precision("auto", device), 1, view_transform(crop))
    clip = torch.randint(0, 256, (1, 1, frames, 3, crop, crop), dtype=torch.uint8)  # (n, V, T, 3, crop, crop)
    return _timed(device, lambda: extractor(clip), warmup)


@torch.no_grad()
def probe_head(head, way, shot, queries, frames, crop, device, warmup):
    """Seconds of one evaluation episode through ``head`` from features of the cache's shape."""
    side = -(-crop // 32)
    maps = torch.randn(way * (shot + queries), frames, side, side, FEATURE_CHANNELS, device=device).half()
    labels = torch.arange(way, device=device).repeat_interleave(shot)
    head = head.eval()
    return _timed(device, lambda: head(maps[:way * shot], labels, maps[way * shot:]), warmup)


def _gb(n):
    return f"{n / 1e9:.2f} GB"


def _hours(seconds):
    hours = seconds / 3600
    if hours >= 48:
        return f"{hours:,.0f} h ({hours / 24:,.0f} days)"
    return f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.1f} min"


def _millions(n):
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _decode_per_episode(probe, clips, workers):
    """(seconds, how) of decoding ``clips`` clips with ``workers`` DataLoader processes beside the training."""
    seconds = clips * probe.decode_seconds
    if workers:
        return seconds / workers, f"{clips} clips x {probe.decode_seconds:.2f} s over {workers} workers"
    return seconds, f"{clips} clips x {probe.decode_seconds:.2f} s in the training process"


def finetune_estimate(config, probe):
    """(seconds, lines) of a finetune with ``config`` on one process like this one."""
    counts = finetune_frames(config)
    decode, how = _decode_per_episode(probe, config.way * (config.shot + config.queries), config.workers)
    per_episode = max(probe.step_seconds, decode) if config.workers else probe.step_seconds + decode
    bound = "decode-bound" if decode > probe.step_seconds else "compute-bound"
    val_decode, _ = _decode_per_episode(probe, config.way * (config.shot + config.val_queries), config.workers)
    val_step = probe.step_seconds * FORWARD_SHARE * (config.shot + config.val_queries) / (config.shot + config.queries)
    per_validation = config.val_episodes * (max(val_step, val_decode) if config.workers else val_step + val_decode)
    seconds = config.episodes * per_episode + counts["validations"] * per_validation
    lines = [f"frames    finetune {config.episodes:,} episodes x {config.way}-way x ({config.shot} + {config.queries}) "
             f"clips x {config.frames} frames = {_millions(counts['train'])} frames; validation "
             f"{counts['validations']:,} x {config.val_episodes} episodes x {config.way} x ({config.shot} + "
             f"{config.val_queries}) x {config.frames} = {_millions(counts['validation'])} frames",
             f"time      finetune ~{_hours(seconds)}: per episode {probe.step_seconds:.2f} s training step, "
             f"{decode:.2f} s decoding ({how}): {bound}; validations ~{_hours(counts['validations'] * per_validation)}"]
    return seconds, lines


def extract_estimate(clips, frames, views, workers, probe):
    """(seconds, how) of extracting ``clips`` clips on one process like this one (decoding overlaps the backbone)."""
    decode = probe.decode_seconds * max(views, 1)
    decode_share = decode / workers if workers else decode
    per_clip = max(probe.clip_seconds * max(views, 1), decode_share) if workers else probe.clip_seconds + decode
    return clips * per_clip, (f"per clip {probe.clip_seconds * max(views, 1):.2f} s backbone, {decode:.2f} s "
                              f"decoding{f' over {workers} workers' if workers else ''}")


def coverage_line(covered, splits):
    return "clips     " + "; ".join(covered.splits[s].describe() for s in splits)


def timed_line(probe, extra=()):
    parts = [f"{probe.decoded} present clips decoded (training view: {probe.decode_seconds:.2f} s each, "
             f"{probe.frames_per_clip:.0f} frames per clip on average)"]
    if probe.failed:
        parts.append(f"{len(probe.failed)} probed clips did not decode (e.g. {probe.failed[0][0]}: "
                     f"{probe.failed[0][1]}); the run records and skips such clips")
    return f"timed     on {probe.device}: " + "; ".join(parts + list(extra))


def format_plan(title, lines):
    return "\n".join([f"plan: {title} (nothing trained, nothing written)", *("  " + line for line in lines)])


def _ranks_note():
    return ("under torchrun with G ranks like this one, finetune and extract take about 1/G of this (the same "
            "--episodes, shared out); evaluate runs in one process")


def plan_finetune(config):
    """The plan of ``m3net finetune``: (text, Probe)."""
    from m3net.data.datasets import coverage
    from m3net.runtime import resolve_device
    from m3net.train.finetune import checked_dataset

    dataset = checked_dataset(config)
    covered = coverage(dataset, config.way, config.shot, config.episode_queries())
    device = resolve_device(config.device)
    clips = dataset.present(config.episode_splits())
    probe = Probe(str(device), **probe_decoding(clips, config.frames, config.crop, seed=config.seed))
    probe.step_seconds, probe.checkpoint_bytes, _, timed = probe_training(config, device, int(device.type == "cuda"))
    seconds, lines = finetune_estimate(config, probe)
    folders = frame_folder_bytes(len(clips), probe.frames_per_clip, probe.jpeg_bytes)
    lines = [coverage_line(covered, config.episode_splits()), lines[0],
             f"disk      frame folders of the {len(clips):,} present clips (decoded once) ~{_gb(folders)}; "
             f"checkpoints {' + '.join(CHECKPOINTS)} {len(CHECKPOINTS)} x {_gb(probe.checkpoint_bytes)}", lines[1],
             f"note      {_ranks_note()}",
             timed_line(probe, [timed])]
    return format_plan(f"finetune {config.dataset} {config.head} {config.shot}-shot under {config.root}", lines), probe


def plan_extract(config):
    """The plan of ``m3net extract``: (text, Probe)."""
    from m3net.data.datasets import coverage
    from m3net.extract.backbone import build_backbone
    from m3net.extract.loop import checked_dataset, resolve_view
    from m3net.runtime import resolve_device

    config = resolve_view(config)
    dataset = checked_dataset(config)
    covered = coverage(dataset, 2, 1, 1)  # the episode size does not matter here: clips and classes do
    device = resolve_device(config.device)
    clips = dataset.present(config.splits)
    probe = Probe(str(device), **probe_decoding(clips, config.frames, config.crop, seed=config.seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        backbone, _ = build_backbone(config.weights, seed=config.seed)
    probe.clip_seconds = probe_extraction(backbone, config.frames, config.crop, device, int(device.type == "cuda"))
    seconds, how = extract_estimate(len(clips), config.frames, config.views, config.workers, probe)
    every = len(dataset.present())
    lines = [coverage_line(covered, config.splits),
             f"frames    extract {len(clips):,} clips x {max(config.views, 1)} views x {config.frames} frames = "
             f"{_millions(extract_frames(len(clips), config.frames, config.views))} frames",
             f"disk      cache ~{_gb(cache_bytes(len(clips), config.frames, config.crop, config.views))} for "
             f"--splits {','.join(config.splits)} (every split's {every:,} present clips: "
             f"{_gb(cache_bytes(every, config.frames, config.crop, config.views))}); frame folders of these clips "
             f"(decoded once) ~{_gb(frame_folder_bytes(len(clips), probe.frames_per_clip, probe.jpeg_bytes))}",
             f"time      extract ~{_hours(seconds)} ({how})", f"note      {_ranks_note()}",
             timed_line(probe, [f"one clip of {config.frames} frames at {config.crop} through the backbone"])]
    return format_plan(f"extract {config.dataset} under {config.root}", lines), probe


def plan_reproduce(config):
    """The plan of ``m3net reproduce``: its finetune, the test split's extraction and the evaluation: (text, Probe)."""
    from m3net.data.datasets import load_dataset
    from m3net.reproduce import checked_coverage, finetune_config, scoring_config
    from m3net.runtime import resolve_device

    tuning, scoring = finetune_config(config), scoring_config(config, "")
    dataset = load_dataset(config.dataset, config.root)
    covered = checked_coverage(dataset, tuning, scoring)
    device = resolve_device(config.device)
    warmup = int(device.type == "cuda")
    present = {split: len(dataset.present((split,))) for split in SPLITS}
    clips = dataset.present()
    probe = Probe(str(device), **probe_decoding(clips, tuning.frames, tuning.crop, seed=config.seed))
    probe.step_seconds, probe.checkpoint_bytes, training, timed = probe_training(tuning, device, warmup)
    probe.head_seconds = probe_head(training.head, scoring.way, scoring.shot, scoring.queries, tuning.frames,
                                    tuning.crop, device, warmup)
    probe.clip_seconds = probe_extraction(training.backbone, tuning.frames, tuning.crop, device, warmup)
    tune_seconds, tune_lines = finetune_estimate(tuning, probe)
    extract_seconds, how = extract_estimate(present["test"], tuning.frames, 0, config.workers, probe)
    eval_seconds = scoring.episodes * probe.head_seconds
    folders = frame_folder_bytes(len(clips), probe.frames_per_clip, probe.jpeg_bytes)
    test_cache = cache_bytes(present["test"], tuning.frames, tuning.crop)
    lines = [coverage_line(covered, SPLITS), tune_lines[0],
             f"frames    extract {present['test']:,} test clips x {tuning.frames} frames = "
             f"{_millions(extract_frames(present['test'], tuning.frames))} frames (--splits test)",
             f"disk      frame folders of the {len(clips):,} present clips (decoded once) ~{_gb(folders)}; cache "
             f"(test split only) ~{_gb(test_cache)}, every split's would be "
             f"~{_gb(cache_bytes(len(clips), tuning.frames, tuning.crop))}; checkpoints "
             f"{' + '.join(CHECKPOINTS)} {len(CHECKPOINTS)} x {_gb(probe.checkpoint_bytes)}",
             tune_lines[1], f"time      extract ~{_hours(extract_seconds)} ({how}); evaluate {scoring.episodes:,} "
             f"episodes ~{_hours(eval_seconds)} ({probe.head_seconds:.3f} s each); the cell ~"
             f"{_hours(tune_seconds + extract_seconds + eval_seconds)} on this machine",
             f"note      {_ranks_note()}",
             timed_line(probe, [timed, "one clip through the backbone", f"one {scoring.way}-way {scoring.shot}-shot "
                                f"evaluation episode with {scoring.queries} queries through the head"])]
    if not covered.as_row()["complete"]:
        lines.insert(1, "partial   this copy lacks listed clips: the cell will not be the paper's setting (row.json "
                        "records the coverage)")
    title = f"reproduce {config.dataset} {config.shot}-shot {config.head} ({config.variant}) under {config.root}"
    return format_plan(title, lines), probe
