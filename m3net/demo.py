"""``m3net demo``: the whole pipeline, offline, on the generated fine-grained benchmark.

generate clips -> extract ResNet-50 maps into the cache -> train the M3Net head briefly ->
evaluate M3Net and the baselines on the same seeded test episodes -> table + report folder.
Every step reuses what an earlier run finished (the clips, the cache rows, the training run),
so re-running after an interruption continues instead of starting over.
"""
import json
import os
import warnings
from dataclasses import asdict, dataclass, field

import click

from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.extract.backbone import IMAGENET_FILES, WeightsError, resolve_weights_file


@dataclass
class DemoConfig:
    out: str = "m3net-demo"
    seed: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    weights: str = "auto"  # imagenet when its file is in the torch hub cache, else random
    frames: int = 8
    way: int = 5
    shot: int = 1
    extra_shots: tuple = (5,)  # also evaluated (report/shot-K/), for the accuracy-vs-shot picture
    train_queries: int = 2
    train_episodes: int = 300
    val_every: int = 100
    val_episodes: int = 50
    eval_episodes: int = 600
    lr: float = 1e-3  # the paper's 1e-4 is for 60 000 episodes; the demo trains a few hundred
    head: str = "m3net"
    # d = 128 instead of the paper's 2048 (a learned projection of the cached maps): the head then
    # trains in minutes on a 2-core CPU. Real runs keep the default (proj_dim=0, d = C).
    head_options: dict = field(default_factory=lambda: {"proj_dim": 128})
    baselines: tuple = ("protonet", "tsn-cosine", "otam")
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"


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
    from m3net.train.checkpoint import load_checkpoint
    from m3net.train.evaluate import EvalConfig, evaluate, format_table, write_summary
    from m3net.train.loop import TrainConfig, train_head

    os.makedirs(config.out, exist_ok=True)
    clips = os.path.join(config.out, "synthetic")
    cache = os.path.join(config.out, "cache.h5")
    run = os.path.join(config.out, "runs", config.head)
    report = os.path.join(config.out, "report")

    _step(f"1/4 generated benchmark -> {clips}")
    manifest, status = generate_synthetic(clips, config.synthetic)
    click.echo(f"[demo] {status}: {len(manifest['clips'])} clips")

    weights = choose_weights(config.weights)
    _step(f"2/4 extract ResNet-50 features ({weights} weights, {config.frames} frames/clip) -> {cache}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning was given above
        extract_dataset(ExtractConfig(dataset="folder", root=clips, out=cache, frames=config.frames,
                                      weights=weights, batch_size=config.batch_size, workers=config.workers,
                                      device=config.device, seed=config.seed))

    _step(f"3/4 train the {config.head} head ({config.train_episodes} episodes) -> {run}")
    last = os.path.join(run, "last.pt")
    done = os.path.exists(last) and load_checkpoint(last)["step"] >= config.train_episodes
    if done:
        click.echo(f"[demo] reusing the finished run in {run}")
    else:
        train_head(TrainConfig(cache=cache, out=run, head=config.head, head_options=config.head_options,
                               way=config.way, shot=config.shot, queries=config.train_queries,
                               episodes=config.train_episodes, lr=config.lr, lr_step=max(config.train_episodes // 3, 1),
                               val_every=config.val_every, val_episodes=config.val_episodes,
                               checkpoint_every=config.val_every, log_every=10, seed=config.seed,
                               device=config.device, resume=os.path.exists(last)))

    _step(f"4/4 evaluate on {config.eval_episodes} seeded test episodes -> {report}")

    def score(shot):
        return evaluate(EvalConfig(cache=cache, checkpoints=(os.path.join(run, "best.pt"),), heads=config.baselines,
                                   way=config.way, shot=shot, queries=1, episodes=config.eval_episodes,
                                   seed=config.seed, device=config.device))

    summary = score(config.shot)
    summary["demo"] = {**asdict(config), "weights_used": weights}
    write_summary(summary, report)
    extra = []
    for shot in config.extra_shots:
        click.echo(f"[demo] and {config.way}-way {shot}-shot (same head, same seed)")
        extra.append(score(shot))
        write_summary(extra[-1], os.path.join(report, f"shot-{shot}"))
    with open(os.path.join(report, "demo_config.json"), "w") as fh:
        json.dump(summary["demo"], fh, indent=2, default=str)
    for shown in [summary] + extra:
        click.echo("\n" + format_table(shown))
    from m3net.report import draw_report

    pictures = draw_report(report, run_dir=run, clips_root=clips)
    click.echo(f"\n[demo] report: {report}/results.json, results.csv and " + ", ".join(os.path.basename(p) for p in pictures))
    return summary
