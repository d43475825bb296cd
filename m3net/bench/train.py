"""``m3net bench-train``: episodes/s of a head's training and evaluation at the real sizes.

Random float16 features of the cache's shape (T x 7 x 7 x C) sit on the device like a loaded
cache; episodes come from the same seeded sampler the trainer uses. The rates are extrapolated
to the paper's 60 000 training and 6 000 test episodes.
"""
import dataclasses
import json
import time

import numpy as np
import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.cache.reader import CachedFeatures
from m3net.config import RunSettings, setting, settings
from m3net.data.episodes import EpisodeSampler, EpisodeSettings
from m3net.model import build_head
from m3net.model.registry import HeadSettings
from m3net.runtime import resolve_device, synchronize
from m3net.train.features import FeatureBank


@settings
class TrainBenchConfig(HeadSettings, EpisodeSettings, RecordSettings, RunSettings):
    frames: int = setting(8, "T of the cached maps.", minimum=1)
    channels: int = setting(2048, "C of the cached maps.", minimum=1)
    train_episodes: int = setting(20, "Timed training episodes.", minimum=1)
    eval_episodes: int = setting(50, "Timed evaluation episodes.", minimum=1)
    warmup: int = setting(3, "Untimed episodes first.", minimum=0)


def _random_bank(config, device):
    classes, per_class = 2 * config.way, config.shot + config.queries
    rng = np.random.default_rng(config.seed)
    features = rng.standard_normal((classes * per_class, config.frames, 7, 7, config.channels), dtype=np.float32)
    cached = CachedFeatures(features=features.astype(np.float16), labels=np.repeat(np.arange(classes), per_class),
                            classes=[str(c) for c in range(classes)], video_ids=[],
                            split=np.array(["x"] * len(features)), attrs={})
    return cached, FeatureBank(cached, device)


def run_bench(config):
    device = resolve_device(config.device)
    cached, bank = _random_bank(config, device)
    torch.manual_seed(config.seed)
    head = build_head(config.head, feature_dim=config.channels, num_frames=config.frames,
                      **config.head_options).to(device)
    rows = []
    if head.trainable:
        optimizer = torch.optim.SGD(head.parameters(), lr=1e-4, momentum=0.9)
        sampler = EpisodeSampler(cached.labels, cached.split, "x", config.way, config.shot, config.queries, config.seed)
        head.train()
        for step in range(config.warmup + config.train_episodes):
            if step == config.warmup:
                synchronize(device)
                start = time.perf_counter()
            support, support_labels, query, query_labels = bank.episode(sampler.episode(step))
            loss = head.loss(head(support, support_labels, query), query_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        rate = config.train_episodes / (time.perf_counter() - start)
        rows.append({"phase": "train", "queries_per_class": config.queries, "episodes_timed": config.train_episodes,
                     "episodes_per_s": rate, "projected_s": 60_000 / rate, "projected_for": "60000 training episodes"})
    sampler = EpisodeSampler(cached.labels, cached.split, "x", config.way, config.shot, 1, config.seed)
    head.eval()
    with torch.no_grad():
        for step in range(config.warmup + config.eval_episodes):
            if step == config.warmup:
                synchronize(device)
                start = time.perf_counter()
            support, support_labels, query, _ = bank.episode(sampler.episode(step))
            head(support, support_labels, query)
        synchronize(device)
    rate = config.eval_episodes / (time.perf_counter() - start)
    rows.append({"phase": "evaluate", "queries_per_class": 1, "episodes_timed": config.eval_episodes,
                 "episodes_per_s": rate, "projected_s": 6_000 / rate, "projected_for": "6000 test episodes"})
    return benchmark_record("train-head", device, dataclasses.asdict(config), rows)


def format_table(result):
    cfg = result["config"]
    lines = [f"{cfg['head']} {cfg['way']}-way {cfg['shot']}-shot, T={cfg['frames']}, C={cfg['channels']} "
             f"on {result['device']}"
             + (" (CPU numbers)" if result["cpu_numbers"] else "")]
    for r in result["rows"]:
        lines.append(f"{r['phase']:<9} {r['episodes_per_s']:>9.2f} episodes/s  -> {r['projected_for']} in "
                     f"{r['projected_s'] / 60:.1f} min")
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after head, its options, way/shot, device and date."""
    cfg = result["config"]
    options = "".join(f"_{k}-{v}" for k, v in sorted(cfg["head_options"].items()))
    columns = {"head": cfg["head"], "head_options": json.dumps(cfg["head_options"])}
    return write_benchmark(result, out_dir, f"train_{cfg['head']}{options}_{cfg['way']}w{cfg['shot']}s", columns)
