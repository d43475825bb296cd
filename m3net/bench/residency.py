"""Feature residency benchmark: train-head and evaluate episodes/s with the cache's features held in
memory vs streamed from the HDF5 file, on a generated cache about 1.5x the memory the bank may use.

    m3net bench-residency [--clips 940 --memory-limit 1.0 --prefetch 0 --prefetch 4 --pool-on-load ...]

The in-memory row runs without a limit (the reference speed); the streamed rows run with
``--memory-limit`` GiB, so ``--resident auto`` has to stream, once per ``--prefetch`` depth (0: each
episode read when it is needed), on the same cache and the same episodes. ``--pool-on-load`` adds the
same rows with maps pooled on load (compared with the pooled in-memory row). Page-cache state matters
for streaming: the script tries to drop the page cache before each streamed run (needs root) and
records whether it could. Writes benchmarks/bench_residency_<device>_<date>.{json,csv}.
"""
import csv
import dataclasses
import os
import time

import numpy as np

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.cache import write_cache_arrays
from m3net.config import RunSettings, setting, settings
from m3net.runtime import resolve_device
from m3net.train.checkpoint import load_checkpoint, trained_episodes
from m3net.train.evaluate import EvalConfig, evaluate
from m3net.train.train_head import TrainConfig, train_head


@settings
class ResidencyBenchConfig(RecordSettings, RunSettings):
    clips: int = setting(940, "Clips of the generated cache (~1.5 GiB at T=8, C=2048).", minimum=10)
    classes: int = setting(25, "Classes of the generated cache (60/20/20 into train/val/test: 25 give 5-way val "
                           "and test episodes).", minimum=25)
    frames: int = setting(8, "T of the generated maps.", minimum=1)
    channels: int = setting(2048, "C of the generated maps.", minimum=1)
    memory_limit: float = setting(1.0, "GiB the streamed runs' feature bank may use (below the cache's size, so "
                                  "--resident auto has to stream).", minimum=0, exclusive=True)
    train_episodes: int = setting(60, "Timed train-head episodes per setting.", minimum=1)
    eval_episodes: int = setting(200, "Timed evaluation episodes per setting.", minimum=1)
    prefetch: tuple = setting((0, 4), "Episodes read ahead in the streamed runs, one run per value (0: off).",
                              minimum=0)
    pool_on_load: bool = setting(False, "Also run every setting with maps pooled on load (m3net's IFCE pooling).",
                                 option="--pool-on-load")
    work: str = setting("/tmp/m3net-residency", "Folder of the generated cache and the runs.", path="dir")


def build_cache(path, clips, frames, channels, classes, seed=0):
    """Random float16 maps (clips, T, 7, 7, C), classes split 60/20/20 into train/val/test."""
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((clips, frames, 7, 7, channels), dtype=np.float32).astype(np.float16)
    labels = np.arange(clips) % classes
    split = np.where(labels < 0.6 * classes, "train", np.where(labels < 0.8 * classes, "val", "test"))
    write_cache_arrays(path, features, labels, [f"class{c}" for c in range(classes)],
                       [f"clip{i}" for i in range(clips)], split, {"dataset": "residency-bench"})
    return path


def drop_page_cache():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def timed_runs(args, cache, device, out, limit, prefetch, pool_on_load):
    """(train episodes/s of the one logged window, train wall s, evaluate wall s) of one residency setting."""
    for name in ("last.pt", "train_log.csv", "val_log.csv"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    started = time.perf_counter()
    train_head(TrainConfig(cache=cache, out=out, head="m3net", head_options={"proj_dim": 128},
                           episodes=args.train_episodes, val_episodes=0, log_every=args.train_episodes,
                           checkpoint_every=args.train_episodes, device=str(device), memory_limit=limit,
                           prefetch=prefetch, pool_on_load=pool_on_load), progress=False)
    train_seconds = time.perf_counter() - started
    with open(os.path.join(out, "train_log.csv"), newline="") as fh:
        train_rate = float(list(csv.DictReader(fh))[-1]["episodes_per_s"])  # of the one window
    assert trained_episodes(load_checkpoint(os.path.join(out, "last.pt"))) == args.train_episodes
    started = time.perf_counter()
    evaluate(EvalConfig(cache=cache, checkpoints=(os.path.join(out, "last.pt"),), episodes=args.eval_episodes,
                        device=str(device), memory_limit=limit, prefetch=prefetch, pool_on_load=pool_on_load),
             progress=False)
    return train_rate, train_seconds, time.perf_counter() - started


def run_bench(args):
    device = resolve_device(args.device)
    os.makedirs(args.work, exist_ok=True)
    cache = build_cache(os.path.join(args.work, "cache.h5"), args.clips, args.frames, args.channels, args.classes,
                        seed=args.seed)
    size_gib = os.path.getsize(cache) / 2**30
    rows = []
    for pool_on_load in (False, True) if args.pool_on_load else (False,):
        pooled = ", pooled on load" if pool_on_load else ""
        settings = [("in memory" + pooled, 0.0, 0)]
        settings += [(f"streamed, prefetch {depth}{pooled}", args.memory_limit, depth) for depth in args.prefetch]
        for label, limit, prefetch in settings:
            dropped = drop_page_cache() if limit else None
            out = os.path.join(args.work, f"run-{'stream' if limit else 'memory'}")
            train_rate, train_seconds, eval_seconds = timed_runs(args, cache, device, out, limit, prefetch,
                                                                 pool_on_load)
            rows.append({"residency": label, "memory_limit_gib": limit, "prefetch": prefetch if limit else None,
                         "pool_on_load": pool_on_load, "cache_gib": round(size_gib, 3),
                         "page_cache_dropped": dropped, "train_episodes_per_s": train_rate,
                         "train_wall_s": train_seconds, "eval_wall_s": eval_seconds,
                         "eval_episodes_per_s_incl_load": args.eval_episodes / eval_seconds})
    for row in rows:  # against the in-memory row with the same pooling
        memory = next(r for r in rows if r["memory_limit_gib"] == 0 and r["pool_on_load"] == row["pool_on_load"])
        row["train_vs_memory"] = row["train_episodes_per_s"] / memory["train_episodes_per_s"]
        row["eval_vs_memory"] = row["eval_episodes_per_s_incl_load"] / memory["eval_episodes_per_s_incl_load"]
    return benchmark_record("residency", device, dataclasses.asdict(args), rows)


def format_table(result):
    lines = []
    for row in result["rows"]:
        lines.append(f"{row['residency']:<38} train {row['train_episodes_per_s']:.2f} ep/s "
                     f"({row['train_vs_memory']:.0%})  evaluate {row['eval_episodes_per_s_incl_load']:.2f} ep/s "
                     f"incl. load ({row['eval_vs_memory']:.0%})")
    return "\n".join(lines)


def write_results(result, out_dir):
    return write_benchmark(result, out_dir, "residency", {"cache_gib": result["rows"][0]["cache_gib"]})
