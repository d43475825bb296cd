"""``m3net bench-finetune``: episodes/s and peak GPU memory of end-to-end training.

Builds exactly what ``m3net finetune`` trains (ResNet-50 trunk + head, same freezing, AMP and
optimizer) and times optimizer steps on random uint8 frames of the episode's size, so decoding is
excluded (``m3net bench-extract`` measures that). One row per (shot, gradient checkpointing off/on);
a setting that does not fit in GPU memory is reported as such, not left out. On CUDA the peak is
``torch.cuda.max_memory_allocated`` over the timed steps, which is what the caching allocator
handed to tensors (the process's reserved memory is somewhat higher).
"""
import dataclasses
import time
import warnings

import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.episodes import EpisodeSettings
from m3net.extract.backbone import RandomWeightsWarning
from m3net.model.registry import HeadSettings
from m3net.runtime import resolve_device, synchronize
from m3net.train.finetune import FinetuneConfig, amp_dtype_for, build_training, forward_episode, set_train_mode


@settings
class FinetuneBenchConfig(HeadSettings, RecordSettings, RunSettings):
    way: int = from_group(EpisodeSettings, "way")
    shots: tuple = setting((1, 5), "Shots to measure.", minimum=1, option="--shot")
    queries: int = from_group(EpisodeSettings, "queries")
    frames: int = from_group(FinetuneConfig, "frames")
    crop: int = from_group(FinetuneConfig, "crop")
    amp: str = from_group(FinetuneConfig, "amp")
    checkpointing: tuple = setting((False, True), cli=False)  # --checkpointing both|off|on
    freeze_bn: bool = from_group(FinetuneConfig, "freeze_bn")
    steps: int = setting(5, "Timed optimizer steps (one episode each).", minimum=1)
    warmup: int = setting(2, "Untimed steps first.", minimum=0)

    def __post_init__(self):
        self.shots, self.checkpointing = tuple(self.shots), tuple(self.checkpointing)
        super().__post_init__()


def _measure(config, shot, checkpointing, device):
    """One row: optimizer steps/s (one episode each) and the peak memory of the timed steps."""
    finetune_config = FinetuneConfig(
        dataset="synthetic", root="", weights="random", head=config.head, head_options=config.head_options,
        way=config.way, shot=shot, queries=config.queries, frames=config.frames, crop=config.crop,
        amp=config.amp, checkpointing=checkpointing, freeze_bn=config.freeze_bn, seed=config.seed)
    amp_dtype = amp_dtype_for(finetune_config, device)
    row = {"shot": shot, "queries_per_class": config.queries, "checkpointing": checkpointing,
           "images_per_episode": config.way * (shot + config.queries) * config.frames,
           "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off"}
    generator = torch.Generator().manual_seed(config.seed)
    frames = (config.frames, 3, config.crop, config.crop)
    support = torch.randint(0, 256, (config.way * shot, *frames), dtype=torch.uint8, generator=generator)
    query = torch.randint(0, 256, (config.way * config.queries, *frames), dtype=torch.uint8, generator=generator)
    support_labels = torch.arange(config.way).repeat_interleave(shot)
    query_labels = torch.arange(config.way).repeat_interleave(config.queries)
    support, query = support.to(device), query.to(device)
    support_labels, query_labels = support_labels.to(device), query_labels.to(device)
    training = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # speed and memory do not depend on the values
            training = build_training(finetune_config, device, amp_dtype)
        set_train_mode(training.model, finetune_config)
        for step in range(config.warmup + config.steps):
            if step == config.warmup:
                synchronize(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
            outputs = forward_episode(training.model, support, support_labels, query, amp_dtype)
            training.scaler.scale(training.head.loss(outputs, query_labels)).backward()
            training.step(finetune_config, step + 1)  # one episode per step
        synchronize(device)
        seconds = time.perf_counter() - start
        row.update(status="ok", episodes_per_s=config.steps / seconds, seconds_per_episode=seconds / config.steps,
                   peak_gpu_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
    except torch.cuda.OutOfMemoryError:
        row.update(status="out of memory", episodes_per_s=None, seconds_per_episode=None, peak_gpu_mib=None)
    finally:
        del training
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_bench(config, progress=print):
    device = resolve_device(config.device)
    rows = []
    for shot in config.shots:
        for checkpointing in config.checkpointing:
            rows.append(_measure(config, shot, checkpointing, device))
            if progress:
                progress(format_row(rows[-1]))
    return benchmark_record("finetune", device, dataclasses.asdict(config), rows)


def format_row(row):
    head = (f"{row['shot']}-shot x {row['queries_per_class']} queries ({row['images_per_episode']} images), "
            f"checkpointing {'on ' if row['checkpointing'] else 'off'}, amp {row['amp']}: ")
    if row["status"] != "ok":
        return head + row["status"]
    memory = f", peak {row['peak_gpu_mib'] / 1024:.1f} GiB" if row["peak_gpu_mib"] is not None else ""
    return head + f"{row['episodes_per_s']:.3f} episodes/s{memory}"


def format_table(result):
    cfg = result["config"]
    lines = [f"finetune {cfg['head']} {cfg['way']}-way, T={cfg['frames']}, crop {cfg['crop']} on {result['device']}"
             + (" (CPU numbers; no GPU memory figures)" if result["cpu_numbers"] else "")
             + "; decoding excluded"]
    return "\n".join(lines + [format_row(r) for r in result["rows"]])


def write_results(result, out_dir):
    """CSV + JSON named after head, way, frames, crop, device and date."""
    cfg = result["config"]
    columns = {"head": cfg["head"], "way": cfg["way"], "frames": cfg["frames"], "crop": cfg["crop"]}
    return write_benchmark(result, out_dir, f"finetune_{cfg['head']}_{cfg['way']}w_t{cfg['frames']}_c{cfg['crop']}",
                           columns)
