"""``m3net bench-extract``: is decoding hidden behind the backbone?

Three numbers from one run, on the same clips and settings:
    decode-only    the DataLoader alone (workers open, sample, decode, crop): clips/s
    backbone-only  the trunk on ready uint8 batches (host -> device copy, normalise, forward,
                   float16 back to the host), no decoding: frames/s
    end-to-end     ``extract_dataset`` into a scratch cache (decode + backbone + HDF5 writes)
The target on one H100 is end-to-end >= 90% of backbone-only frames/s (decode fully hidden).
Results go to benchmarks/bench_extract_<device>_<date>.{csv,json} with device, versions, git SHA.
"""
import os
import tempfile
import time
from dataclasses import asdict

import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.datasets import load_dataset
from m3net.extract.backbone import build_backbone
from m3net.extract.loop import ExtractConfig, Extractor, extract_dataset, make_loader, resolve_precision
from m3net.runtime import resolve_device


@settings
class ExtractBenchConfig(RecordSettings, RunSettings):
    root: str = setting(help="Folder dataset to time (<root>/<class>/<clip>, e.g. from make-synthetic).",
                        path="dir")
    clips: int = setting(0, "Clips timed (0: all of the folder).", minimum=0)
    frames: int = setting(8, "Frames sampled per clip.", minimum=1)
    batch_size: int = from_group(ExtractConfig, "batch_size")
    workers: int = from_group(ExtractConfig, "workers")
    precision: str = from_group(ExtractConfig, "precision")
    weights: str = setting("random", "Speed does not depend on the weights' values.")
    backbone_batches: int = setting(0, "Timed forwards for backbone-only (0: as many as end-to-end needs, >= 3).",
                                    minimum=0)


def _decode_only(items, config, device):
    started, clips = time.perf_counter(), 0
    for rows, frames, failures in make_loader(items, config, device):
        clips += len(rows) + len(failures)
    return clips, time.perf_counter() - started


def _backbone_only(model, config, device, precision, batches):
    extractor = Extractor(model, device, precision, config.batch_size)
    # (clips, views, T, 3, crop, crop) uint8, pinned like the loader's batches
    frames = torch.randint(0, 256, (config.batch_size, 1, config.frames, 3, 224, 224), dtype=torch.uint8)
    if device.type == "cuda":
        frames = frames.pin_memory()
    extractor(frames)  # warm-up: CUDA context, cuDNN algorithm choice, oneDNN primitives
    started = time.perf_counter()
    for _ in range(batches):
        extractor(frames)  # returns host numpy: synchronised
    return batches * config.batch_size * config.frames, time.perf_counter() - started


def run_bench(config):
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    dataset = load_dataset("folder", config.root)
    clips = dataset.clips[: config.clips] if config.clips else dataset.clips
    items = [(row, c.clip_id, c.path) for row, c in enumerate(clips)]
    extract_config = ExtractConfig(dataset="folder", root=config.root, out="", weights=config.weights,
                                   frames=config.frames, batch_size=config.batch_size, workers=config.workers,
                                   device=config.device, precision=config.precision, limit=len(items), progress=False)
    model, _ = build_backbone(config.weights)
    batches = config.backbone_batches or max(3, -(-len(items) // config.batch_size))
    frames_done, backbone_s = _backbone_only(model, extract_config, device, precision, batches)
    decoded, decode_s = _decode_only(items, extract_config, device)
    with tempfile.TemporaryDirectory() as scratch:
        extract_config.out = os.path.join(scratch, "bench.h5")
        summary = extract_dataset(extract_config)
    end_frames_s = summary["frames_per_s"]
    backbone_frames_s = frames_done / backbone_s
    rows = [
        {"stage": "decode-only", "clips": decoded, "seconds": decode_s, "clips_per_s": decoded / decode_s,
         "frames_per_s": decoded * config.frames / decode_s},
        {"stage": "backbone-only", "clips": batches * config.batch_size, "seconds": backbone_s,
         "clips_per_s": backbone_frames_s / config.frames, "frames_per_s": backbone_frames_s},
        {"stage": "end-to-end", "clips": summary["computed"], "seconds": summary["seconds"],
         "clips_per_s": summary["clips_per_s"], "frames_per_s": end_frames_s},
    ]
    for row in rows:
        row["pct_of_backbone"] = 100.0 * row["frames_per_s"] / backbone_frames_s
    return benchmark_record("extract", device, asdict(config), rows, precision=precision,
                            failed_clips=summary["failed"])


def format_table(result):
    cfg = result["config"]
    lines = [f"extract: {cfg['frames']} frames/clip, {cfg['batch_size']} clips/batch, {cfg['workers']} workers, "
             f"{result['precision']} on {result['device']}"]
    if result["cpu_numbers"]:
        lines.append("(CPU numbers: no GPU here)")
    header = f"{'stage':<14} {'clips':>6} {'seconds':>9} {'clips/s':>9} {'frames/s':>10} {'% backbone':>11}"
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        lines.append(f"{r['stage']:<14} {r['clips']:>6} {r['seconds']:>9.2f} {r['clips_per_s']:>9.2f} "
                     f"{r['frames_per_s']:>10.1f} {r['pct_of_backbone']:>10.1f}%")
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after device, precision, frames, batch, workers and date."""
    cfg = result["config"]
    columns = {"precision": result["precision"], "frames": cfg["frames"], "batch_size": cfg["batch_size"],
               "workers": cfg["workers"]}
    return write_benchmark(result, out_dir, f"extract_{result['precision']}_t{cfg['frames']}_b{cfg['batch_size']}"
                                            f"_w{cfg['workers']}", columns)
