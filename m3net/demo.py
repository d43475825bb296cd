"""``m3net demo``: the whole pipeline, offline, on the generated fine-grained benchmark.

generate clips -> extract ResNet-50 maps into the cache -> train the M3Net head briefly ->
evaluate M3Net and the baselines on the same seeded test episodes -> table + report folder.
Every step reuses what an earlier run finished (the clips, the cache rows, the training run),
so re-running after an interruption continues instead of starting over.
"""
import json
import os
import time
import warnings
from dataclasses import asdict, field, replace

import click
import numpy as np

from m3net.config import RunSettings, Settings, from_group, setting, settings
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.errors import ConfigError
from m3net.extract.backbone import IMAGENET_FILES, RandomWeightsWarning, WeightsError, resolve_weights_file
from m3net.train.loop import OptimizerSettings


@settings
class DemoBenchmarkSettings(Settings):
    """The generated benchmark's options `m3net demo` takes (the others keep SyntheticConfig's defaults)."""

    train_classes: int = from_group(SyntheticConfig, "train_classes")
    val_classes: int = from_group(SyntheticConfig, "val_classes")
    test_classes: int = from_group(SyntheticConfig, "test_classes")
    clips_per_class: int = from_group(SyntheticConfig, "clips_per_class")


@settings
class DemoConfig(RunSettings):
    out: str = setting("m3net-demo", "Everything goes here: synthetic/ clips, cache.h5, runs/, report/. Re-running "
                       "reuses it.", path="dir")
    synthetic: SyntheticConfig = setting(cli=False, default_factory=SyntheticConfig)
    weights: str = setting("auto", "auto (ImageNet if in the torch hub cache, else random), imagenet, random or "
                           "a PATH.")
    frames: int = 8
    way: int = 5
    shot: int = 1
    extra_shots: tuple = (5,)  # also evaluated (report/shot-K/), for the accuracy-vs-shot picture
    train_queries: int = 2
    # ~50 s on 2 cores once the cache exists (extraction dominates the demo); at 300 the slowest view
    # (C-M) was still far behind on some seeds and dragged the fused Y below the best single view
    train_episodes: int = setting(900, "M3Net head training episodes.", minimum=1)
    val_every: int = 100
    val_episodes: int = 50
    eval_episodes: int = setting(600, "Seeded 5-way test episodes per shot.", minimum=1)
    lr: float = 1e-3  # the paper's 1e-4 is for 60 000 episodes; the demo trains a few hundred
    head: str = "m3net"
    # Options of the M3Net head that real runs leave at the paper's defaults:
    # proj_dim=128: d = 128 instead of 2048 (a learned projection of the cached maps), so the head
    #   trains in minutes on a 2-core CPU.
    # input_norm="standardize": random-weight ResNet maps are nearly collinear (cosine costs ~1e-3);
    #   standardising the channels with training-split statistics spreads them, and every view learns.
    # temperature_init="data": each view's τ starts at 1 / the spread of its distances (unit-spread
    #   logits), instead of τ = 10, which leaves a view with distances 1e-3 apart flat.
    head_options: dict = field(default_factory=lambda: {"proj_dim": 128, "input_norm": "standardize",
                                                        "temperature_init": "data"})
    baselines: tuple = ("protonet", "tsn-cosine", "otam")
    # Trained heads from the registry (e.g. the rest of the paper's Table 1: trx, strm, hyrsm, pal) trained
    # on the same cache with the same protocol as M3Net, at each head's own defaults, and scored on the
    # same episodes (--compare; empty in the default demo: they add tens of minutes on a CPU).
    compare: tuple = ()
    clip_grad: float = from_group(OptimizerSettings, "clip_grad")  # the --compare heads trx, strm diverge without
    batch_size: int = 16
    workers: int = 2


def choose_weights(requested):
    """'imagenet' if its checkpoint is already in the torch hub cache, else 'random' (and say so)."""
    if requested != "auto":
        return requested
    try:
        resolve_weights_file("imagenet")
        return "imagenet"
    except WeightsError:
        filename = IMAGENET_FILES["imagenet-v1"][0]
        click.echo(f"[demo] no ImageNet weights ({filename}) in the torch hub cache: using random backbone "
                   "weights. The temporal matchers still beat mean pooling on order-only classes, but absolute "
                   "accuracies are lower than with ImageNet features.")
        return "random"


def _step(title):
    click.echo(f"\n[demo] {title}")


def run_demo(config):
    """Runs (or continues) the demo; returns the evaluation summary written to <out>/report."""
    from m3net.extract.loop import ExtractConfig, extract_dataset
    from m3net.train.evaluate import EvalConfig, evaluate, format_table, write_summary

    start = time.perf_counter()
    os.makedirs(config.out, exist_ok=True)
    clips = os.path.join(config.out, "synthetic")
    cache = os.path.join(config.out, "cache.h5")
    report = os.path.join(config.out, "report")

    _step(f"1/4 generated benchmark -> {clips}")
    manifest, status = generate_synthetic(clips, config.synthetic)
    click.echo(f"[demo] {status}: {len(manifest['clips'])} clips")

    weights = choose_weights(config.weights)
    _step(f"2/4 extract ResNet-50 features ({weights} weights, {config.frames} frames/clip) -> {cache}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said above, in the demo's own words
        extract_dataset(ExtractConfig(dataset="folder", root=clips, out=cache, frames=config.frames,
                                      weights=weights, batch_size=config.batch_size, workers=config.workers,
                                      device=config.device, seed=config.seed))

    runs = {}
    for number, head in enumerate((config.head, *config.compare), start=1):
        options = config.head_options if head == config.head else {}
        step = f"3/4 ({number}/{1 + len(config.compare)})" if config.compare else "3/4"
        runs[head] = train_or_reuse(config, cache, head, options, step)
    run = runs[config.head]

    _step(f"4/4 evaluate on {config.eval_episodes} seeded test episodes -> {report}")

    def score(shot):
        return evaluate(EvalConfig(cache=cache, checkpoints=tuple(os.path.join(r, "best.pt") for r in runs.values()),
                                   heads=config.baselines,
                                   way=config.way, shot=shot, queries=1, episodes=config.eval_episodes,
                                   seed=config.seed, device=config.device))

    summary = score(config.shot)
    summary["demo"] = {**asdict(config), "weights_used": weights}
    write_summary(summary, report)
    summaries = {config.shot: summary}
    for shot in config.extra_shots:
        click.echo(f"[demo] and {config.way}-way {shot}-shot (same head, same seed)")
        summaries[shot] = score(shot)
        write_summary(summaries[shot], os.path.join(report, f"shot-{shot}"))
    # this run's time: a re-run that reuses the clips, cache and head is much shorter than a fresh one
    with open(os.path.join(report, "demo_config.json"), "w") as fh:
        json.dump({**summary["demo"], "wall_s": time.perf_counter() - start}, fh, indent=2, default=str)
    for shown in summaries.values():
        click.echo("\n" + format_table(shown))
    from m3net.report import draw_report

    pictures = draw_report(report, run_dir=run, clips_root=clips)
    click.echo(f"\n[demo] report: {report}/results.json, results.csv and "
               + ", ".join(os.path.basename(p) for p in pictures))
    return summaries


def train_or_reuse(config, cache, head, head_options, step):
    """Trains ``head`` on the demo's cache into <out>/runs/<head> with the demo's protocol, or reuses
    the finished run there (a run of other settings is refused); returns the run folder."""
    from m3net.train.checkpoint import load_checkpoint, trained_episodes
    from m3net.train.loop import check_resumed_config
    from m3net.train.train_head import TrainConfig, train_head

    run = os.path.join(config.out, "runs", head)
    _step(f"{step} train the {head} head ({config.train_episodes} episodes) -> {run}")
    last = os.path.join(run, "last.pt")
    train_config = TrainConfig(cache=cache, out=run, head=head, head_options=head_options, way=config.way,
                               shot=config.shot, queries=config.train_queries, episodes=config.train_episodes,
                               lr=config.lr, clip_grad=config.clip_grad, lr_step=max(config.train_episodes // 3, 1),
                               val_every=config.val_every, val_episodes=config.val_episodes,
                               checkpoint_every=config.val_every, log_every=10, seed=config.seed,
                               device=config.device, resume=os.path.exists(last))
    saved = load_checkpoint(last) if os.path.exists(last) else None
    if saved is not None:
        try:  # a run of another demo version (other head options, lr, ...) is not this demo's result
            check_resumed_config(saved["train_config"], train_config, last)
        except ConfigError as err:
            raise ConfigError(f"{run} holds a head trained with other settings; remove it or choose another "
                              f"--out ({err})") from None
    if saved is not None and trained_episodes(saved) >= config.train_episodes:
        click.echo(f"[demo] reusing the finished run in {run}")
    else:
        train_head(train_config)
    return run


def parse_compare(text):
    """"trx,strm" -> ("trx", "strm"): trainable registry heads other than the demo's own."""
    from m3net.model import list_heads
    from m3net.model.registry import head_class

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in list_heads():
            raise ConfigError(f"--compare {name}: not a registered head (see `m3net heads`)")
        if name == "m3net":
            raise ConfigError("--compare m3net: the demo trains M3Net already")
        if not head_class(name).trainable:
            raise ConfigError(f"--compare {name}: a parameter-free head; the demo scores it as a baseline already")
    if len(set(names)) != len(names):
        raise ConfigError(f"--compare {text}: a head is named twice")
    return names


def parse_seeds(text):
    """"0,1,2" -> (0, 1, 2): distinct non-negative integers."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"seeds={text!r}: expected comma-separated integers such as 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"seeds={text!r}: expected distinct non-negative integers")
    return seeds


def seeded(config, seed):
    """The demo of one seed (its own benchmark, head initialisation and episodes) in <out>/seed-<seed>."""
    return replace(config, seed=seed, out=os.path.join(config.out, f"seed-{seed}"),
                   synthetic=replace(config.synthetic, seed=seed))


def seed_checks(shot_summary):
    """What the demo claims for one seed and shot: M3Net's Y ahead of each baseline with the paired
    95% CI above zero, and Y at least its best single view."""
    rows = shot_summary["results"]
    m3net = next(r["head"] for r in rows if r["head"].startswith("m3net"))  # the trained head comes first
    accuracy = {r["view"]: r["accuracy"] for r in rows if r["head"] == m3net}
    margins = {p["head"]: -p["difference"] - p["ci95"] for p in shot_summary["paired"]}  # paired: baseline − M3Net
    best_view = max(v for k, v in accuracy.items() if k != "y")
    return {"ci_margin_over": margins, "leads_every_baseline": all(m > 0 for m in margins.values()),
            "y_minus_best_view": accuracy["y"] - best_view, "y_at_least_best_view": accuracy["y"] >= best_view}


def mean_and_sd(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def aggregate(per_seed):
    """Mean ± sd over seeds of every accuracy and paired difference, per shot.

    per_seed[seed][shot] = {"results", "paired", "checks"} of that seed's run (``seed_checks``)."""
    out = {}
    for shot in next(iter(per_seed.values())):
        runs = [by_shot[shot] for by_shot in per_seed.values()]
        accuracy, m3net_minus = {}, {}
        for run in runs:
            for r in run["results"]:
                accuracy.setdefault((r["head"], r["view"]), []).append(r["accuracy"])
            for p in run["paired"]:  # paired differences are baseline − M3Net
                m3net_minus.setdefault(p["head"], []).append(-p["difference"])
        out[shot] = {
            "accuracy": [{"head": head, "view": view, **mean_and_sd(values)}
                         for (head, view), values in accuracy.items()],
            "m3net_minus": [{"baseline": baseline, **mean_and_sd(values),
                             "seeds_with_ci_above_zero": sum(run["checks"]["ci_margin_over"][baseline] > 0
                                                             for run in runs)}
                            for baseline, values in m3net_minus.items()],
            "seeds_y_at_least_best_view": sum(run["checks"]["y_at_least_best_view"] for run in runs),
        }
    return out


def seeds_record(config, seeds):
    """The record of finished demos of ``seeds`` (``seeded`` folders under config.out): every seed's
    tables with the checks of ``seed_checks``, and the mean ± sd over seeds (``aggregate``)."""
    from m3net.bench.record import benchmark_record
    from m3net.runtime import resolve_device

    per_seed, wall, weights = {}, {}, {}
    for seed in seeds:
        report = os.path.join(seeded(config, seed).out, "report")
        with open(os.path.join(report, "demo_config.json")) as fh:
            ran = json.load(fh)
        wall[str(seed)], weights[str(seed)] = ran["wall_s"], ran["weights_used"]
        runs = {}
        for shot in (config.shot, *config.extra_shots):
            folder = report if shot == config.shot else os.path.join(report, f"shot-{shot}")
            with open(os.path.join(folder, "results.json")) as fh:
                summary = json.load(fh)
            runs[f"{shot}-shot"] = {key: summary[key] for key in ("task", "results", "paired")}
            runs[f"{shot}-shot"]["checks"] = seed_checks(summary)
        per_seed[str(seed)] = runs
    return benchmark_record("demo_synthetic", resolve_device(config.device), asdict(config), rows=[],
                            seeds=list(seeds), demo_wall_s=wall, weights_used=weights, per_seed=per_seed,
                            over_seeds=aggregate(per_seed))


def run_demo_seeds(config, seeds):
    """Runs (or continues) the demo of each seed, then returns their ``seeds_record``."""
    for seed in seeds:
        run_demo(seeded(config, seed))
    return seeds_record(config, seeds)
