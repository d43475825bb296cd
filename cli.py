"""The ``m3net`` command: a thin click front end.

Each command only parses options, builds the stage's config and calls a library function;
the work lives in m3net.extract, m3net.cache, m3net.kernels and m3net.*.
"""
import sys

import click

from m3net import __version__


def _not_built(name):
    """Commands whose stage is not implemented yet say so and fail; they never fake output."""
    click.echo(f"m3net {name}: not built yet in m3net {__version__}.", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="m3net")
def main():
    """m3net: few-shot fine-grained action recognition (M3Net, ACM MM 2023).

    Stage one (`extract`) runs an ImageNet ResNet-50 once over every clip and caches per-frame
    7x7x2048 maps in HDF5; stage two (`train-head`, `evaluate`) trains and scores the few-shot
    heads on that cache; `finetune` trains backbone and head end to end.
    """


@main.command("extract")
@click.option("--dataset", required=True, type=click.Choice(["gym99", "gym288", "diving48", "folder", "synthetic"]),
              help="Split lists shipped with m3net, or a <class>/<clip> folder (see `m3net dataset-info`).")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder holding the clips (video files or frame folders).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HDF5 cache to write; an existing one is resumed.")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (torchvision V1, the paper's), imagenet-v2, random (tests/demo only), or PATH to a state dict.")
@click.option("--frames", default=8, show_default=True, help="Frames sampled per clip (TSN segment centres).")
@click.option("--batch-size", default=8, show_default=True, help="Clips per backbone forward (x views x frames images).")
@click.option("--workers", default=2, show_default=True, help="DataLoader processes decoding clips (0: main process).")
@click.option("--views", default=0, show_default=True,
              help="0: one test view; K>0: K views per clip, view 0 the test view, 1..K-1 random crop+flip training views.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cuda, cuda:1, cpu.")
@click.option("--precision", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True,
              help="Autocast dtype; auto = fp16 on CUDA, fp32 on CPU.")
@click.option("--seed", default=0, show_default=True, help="Random weights and training views.")
@click.option("--folder-split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Split given to every clip of a <root>/<class>/<clip> folder without train/val/test subfolders.")
def extract_cmd(**options):
    """Run the backbone over a dataset's clips and write the HDF5 feature cache.

    Exit status 0 when every clip is done, 3 when some clips failed (reasons in the cache's
    /failures and printed), 130 after Ctrl-C (re-run the same command to resume). Several GPUs or
    nodes: `torchrun --nproc-per-node G -m m3net extract ...` (each rank writes its own shard,
    rank 0 merges them into --out).
    """
    from m3net.cache import CacheError
    from m3net.data.datasets import DatasetError
    from m3net.extract.backbone import WeightsError
    from m3net.extract.loop import ExtractConfig, extract_dataset, format_summary

    config = ExtractConfig(**options)
    if config.weights == "random":
        click.echo("WARNING: --weights random: features carry no ImageNet knowledge (tests and demo only).", err=True)
    try:
        summary = extract_dataset(config)
    except (CacheError, DatasetError, WeightsError, ValueError) as err:
        raise click.ClickException(str(err))
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished rows are saved in {config.out}; re-run the same command to resume", err=True)
        sys.exit(130)
    click.echo(format_summary(summary))
    if summary["not_done"]:
        sys.exit(3)


def _parse_head_options(pairs):
    """--head-opt key=value pairs -> dict, values parsed as JSON where they parse (1, 0.5, true)."""
    import json

    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: expected key=value", param_hint="--head-opt")
        key, value = pair.split("=", 1)
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@main.command("train-head")
@click.option("--cache", required=True, type=click.Path(dir_okay=False), help="HDF5 feature cache from `m3net extract`.")
@click.option("--out", default="runs/head", show_default=True, type=click.Path(file_okay=False),
              help="Run folder: best.pt, last.pt, train_log.csv, val_log.csv.")
@click.option("--head", default="m3net", show_default=True, help="Head from the registry (see `m3net heads`).")
@click.option("--head-opt", multiple=True, metavar="KEY=VALUE",
              help="Head option, repeatable, e.g. --head-opt use_cm=false (ablations of Tables 2-4).")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=1, show_default=True)
@click.option("--queries", default=5, show_default=True, help="Queries per class in training episodes.")
@click.option("--episodes", default=60000, show_default=True, help="Training episodes (paper: 60 000).")
@click.option("--lr", default=1e-4, show_default=True, help="SGD learning rate (paper: 1e-4).")
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--lr-step", default=2000, show_default=True, help="Multiply the lr by --lr-gamma every this many episodes.")
@click.option("--lr-gamma", default=0.5, show_default=True)
@click.option("--val-every", default=1000, show_default=True, help="Validate (and save last.pt) every this many episodes.")
@click.option("--val-episodes", default=300, show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Decides parameter init and every episode.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cuda, cpu.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt, exactly.")
def train_head_cmd(head_opt, **options):
    """Train a few-shot head episodically on a feature cache (SGD, lr x0.5 every 2000 episodes)."""
    from m3net.cache import CacheError
    from m3net.data.episodes import EpisodeError
    from m3net.train.checkpoint import CheckpointError
    from m3net.train.loop import TrainConfig, train_head

    config = TrainConfig(head_options=_parse_head_options(head_opt), **options)
    try:
        summary = train_head(config)
    except (CacheError, CheckpointError, EpisodeError, ValueError, FileExistsError) as err:
        raise click.ClickException(str(err))
    except KeyboardInterrupt:
        click.echo(f"interrupted: state saved in {config.out}/last.pt; continue with --resume", err=True)
        sys.exit(130)
    click.echo(f"trained {config.head} for {summary['step']} episodes; best val accuracy "
               f"{summary['best_val_acc']:.2f}% -> {summary['best']}")


@main.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Trained head checkpoint (repeatable).")
@click.option("--head", "heads", multiple=True, help="Parameter-free head scored from the cache (repeatable): protonet, tsn-cosine, otam.")
@click.option("--cache", default="", type=click.Path(dir_okay=False),
              help="Feature cache; default: the one the first checkpoint was trained on.")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=1, show_default=True)
@click.option("--queries", default=1, show_default=True, help="Queries per class.")
@click.option("--episodes", default=6000, show_default=True, help="Test episodes (paper: 6000).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Same seed, same episodes, for every head.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default="", type=click.Path(file_okay=False), help="Write results.json and results.csv here.")
def evaluate_cmd(checkpoints, heads, **options):
    """Score heads on the same seeded episodes: accuracy ± 95% CI per view, paired differences."""
    from m3net.cache import CacheError
    from m3net.data.episodes import EpisodeError
    from m3net.train.checkpoint import CheckpointError
    from m3net.train.evaluate import EvalConfig, evaluate, format_table, write_summary

    config = EvalConfig(checkpoints=checkpoints, heads=heads, **options)
    try:
        summary = evaluate(config)
    except (CacheError, CheckpointError, EpisodeError, ValueError) as err:
        raise click.ClickException(str(err))
    click.echo(format_table(summary))
    if config.out:
        paths = write_summary(summary, config.out)
        click.echo("wrote " + " and ".join(paths))


@main.command("bench-train")
@click.option("--head", default="m3net", show_default=True)
@click.option("--head-opt", multiple=True, metavar="KEY=VALUE", help="Head option, repeatable.")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=1, show_default=True)
@click.option("--queries", default=5, show_default=True, help="Queries per class in training episodes.")
@click.option("--channels", default=2048, show_default=True, help="C of the cached maps.")
@click.option("--frames", default=8, show_default=True)
@click.option("--train-episodes", default=20, show_default=True, help="Timed training episodes.")
@click.option("--eval-episodes", default=50, show_default=True, help="Timed evaluation episodes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out-dir", default="benchmarks", show_default=True, type=click.Path(file_okay=False))
def bench_train_cmd(head_opt, **options):
    """Episodes/s of training and evaluation at the real sizes, projected to 60 000 / 6 000 episodes."""
    from m3net.train.bench import TrainBenchConfig, format_table, run_bench, write_results

    result = run_bench(TrainBenchConfig(head_options=_parse_head_options(head_opt), **options))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("bench-finetune")
@click.option("--head", default="m3net", show_default=True)
@click.option("--head-opt", multiple=True, metavar="KEY=VALUE", help="Head option, repeatable.")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", "shots", multiple=True, type=int, default=(1, 5), show_default=True, help="Repeatable.")
@click.option("--queries", default=5, show_default=True, help="Queries per class.")
@click.option("--frames", default=8, show_default=True)
@click.option("--crop", default=224, show_default=True)
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]))
@click.option("--checkpointing", type=click.Choice(["both", "off", "on"]), default="both", show_default=True,
              help="Gradient checkpointing of the trunk: measure without, with, or both.")
@click.option("--train-bn", is_flag=True, help="Update BatchNorm as `finetune --train-bn` does.")
@click.option("--steps", default=5, show_default=True, help="Timed optimizer steps (one episode each).")
@click.option("--warmup", default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out-dir", default="benchmarks", show_default=True, type=click.Path(file_okay=False))
def bench_finetune_cmd(head_opt, checkpointing, train_bn, shots, **options):
    """Episodes/s and peak GPU memory of `m3net finetune` per shot, with and without checkpointing.

    Random frames of the episode's size (decoding excluded). A setting that does not fit in GPU
    memory is reported as "out of memory".
    """
    from m3net.train.bench_finetune import FinetuneBenchConfig, format_table, run_bench, write_results

    modes = {"both": (False, True), "off": (False,), "on": (True,)}[checkpointing]
    config = FinetuneBenchConfig(head_options=_parse_head_options(head_opt), checkpointing=modes,
                                 freeze_bn=not train_bn, shots=tuple(shots), **options)
    result = run_bench(config, progress=lambda line: click.echo(line, err=True))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("heads")
def heads_cmd():
    """List the registered few-shot heads and their options."""
    import dataclasses

    from m3net.model import HEADS

    for name in sorted(HEADS):
        cls = HEADS[name]
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config)
                         if f.name not in ("feature_dim", "num_frames"))
        kind = "trained" if cls.trainable else "parameter-free"
        click.echo(f"{name:<12} {kind:<15} {opts}")


@main.command("finetune")
@click.option("--dataset", required=True, type=click.Choice(["gym99", "gym288", "diving48", "folder", "synthetic"]),
              help="Split lists shipped with m3net, or a <class>/<clip> folder.")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False), help="Folder holding the clips.")
@click.option("--out", default="runs/finetune", show_default=True, type=click.Path(file_okay=False),
              help="Run folder: best.pt, last.pt, train_log.csv, val_log.csv, failures.csv, tensorboard/.")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet | random | PATH of a ResNet-50 state dict.")
@click.option("--head", default="m3net", show_default=True, help="Head from the registry (see `m3net heads`).")
@click.option("--head-opt", multiple=True, metavar="KEY=VALUE", help="Head option, repeatable (as in train-head).")
@click.option("--init-head", default="", type=click.Path(dir_okay=False), help="Start the head from a train-head checkpoint.")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=1, show_default=True)
@click.option("--queries", default=5, show_default=True, help="Queries per class in training episodes.")
@click.option("--frames", default=8, show_default=True)
@click.option("--crop", default=224, show_default=True, help="Crop size (frames resized to crop*8/7 first).")
@click.option("--episodes", default=10_000, show_default=True)
@click.option("--accumulate", default=1, show_default=True, help="Episodes whose gradients make one optimizer step.")
@click.option("--lr", default=1e-4, show_default=True, help="Head learning rate.")
@click.option("--backbone-lr", default=1e-5, show_default=True)
@click.option("--lr-step", default=2000, show_default=True, help="Multiply both lrs by --lr-gamma every this many optimizer steps.")
@click.option("--lr-gamma", default=0.5, show_default=True)
@click.option("--freeze-stages", default=0, show_default=True, help="Trunk stages (stem, layer1..4) kept frozen.")
@click.option("--train-bn", is_flag=True, help="Update BatchNorm (default: frozen, pretrained statistics kept).")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="Mixed precision on CUDA (auto: bf16 where supported, else fp16 with a grad scaler).")
@click.option("--checkpointing", is_flag=True, help="Gradient checkpointing of the trunk stages (less memory, one more forward per stage).")
@click.option("--workers", default=2, show_default=True, help="DataLoader processes decoding the next episodes (0: main process).")
@click.option("--val-every", default=1000, show_default=True, help="Validate on val episodes (test view) and update best.pt.")
@click.option("--val-episodes", default=300, show_default=True, help="0 turns validation off.")
@click.option("--val-queries", default=1, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--log-every", default=10, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Decides head init, every episode and every crop.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cuda, cpu.")
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt exactly.")
def finetune_cmd(train_bn, head_opt, **options):
    """Train backbone and head end to end on decoded frames.

    Several GPUs or nodes: `torchrun --nproc-per-node G -m m3net finetune ...` (DistributedDataParallel;
    each rank trains its own episodes, rank 0 writes checkpoints and logs). Afterwards
    `m3net extract --weights OUT/best.pt` builds the tuned backbone's cache for train-head and evaluate.
    """
    from m3net.data.datasets import DatasetError
    from m3net.data.episodes import EpisodeError
    from m3net.extract.backbone import WeightsError
    from m3net.train.checkpoint import CheckpointError
    from m3net.train.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(freeze_bn=not train_bn, head_options=_parse_head_options(head_opt), **options)
    try:
        result = finetune(config)
    except (CheckpointError, DatasetError, EpisodeError, WeightsError, ValueError, FileExistsError) as err:
        raise click.ClickException(str(err))
    except KeyboardInterrupt:
        click.echo(f"interrupted: state saved in {config.out}/last.pt; continue with --resume", err=True)
        sys.exit(130)
    if result["rank"] == 0:  # under torchrun, one summary line, not one per rank
        best = f"; best val accuracy {result['best_val_acc']:.2f}% -> {result['best']}" if result["best"] else ""
        click.echo(f"finetuned {config.head} for {result['step']} episodes: {result['last']}{best}")


@main.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Trained head (best.pt of `m3net train-head` or `m3net finetune`).")
@click.option("--support", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of <class>/<clip>: the same number (1-5) of labelled clips per class.")
@click.option("--query", "queries", required=True, multiple=True, type=click.Path(),
              help="Clip to classify (repeatable): a video file or a frame folder.")
@click.option("--weights", default="", help="Backbone weights if not where the checkpoint's cache found them (checked by sha256).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict_cmd(checkpoint, support, queries, weights, device, as_json):
    """Classify query clips against a folder of labelled support clips (few-shot, no training)."""
    import json

    from m3net.extract.backbone import WeightsError
    from m3net.train.checkpoint import CheckpointError
    from m3net.train.predict import PredictConfig, PredictError, predict

    try:
        results = predict(PredictConfig(checkpoint=checkpoint, support=support, queries=queries, weights=weights,
                                        device=device))
    except (PredictError, CheckpointError, WeightsError, ValueError) as err:
        raise click.ClickException(str(err))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        top = ", ".join(f"{name} {p:.2f}" for name, p in list(result["probabilities"].items())[:5])
        click.echo(f"{result['query']}: {result['predicted']}   ({top})")


@main.command("demo")
@click.option("--out", default="m3net-demo", show_default=True, type=click.Path(file_okay=False),
              help="Everything goes here: synthetic/ clips, cache.h5, runs/, report/. Re-running reuses it.")
@click.option("--seed", default=0, show_default=True, help="Decides the benchmark, the training and the episodes.")
@click.option("--weights", default="auto", show_default=True,
              help="auto (ImageNet if in the torch hub cache, else random), imagenet, random or a PATH.")
@click.option("--train-episodes", default=900, show_default=True, help="M3Net head training episodes.")
@click.option("--eval-episodes", default=600, show_default=True, help="Seeded 5-way 1-shot test episodes.")
@click.option("--train-classes", default=12, show_default=True, help="Benchmark size: training classes.")
@click.option("--val-classes", default=5, show_default=True)
@click.option("--test-classes", default=8, show_default=True)
@click.option("--clips-per-class", default=12, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--seeds", default=None,
              help="Comma-separated seeds (e.g. 0,1,2) instead of --seed: one demo per seed in OUT/seed-<s>, each "
                   "with its own benchmark, then M3Net's mean ± sd over the seeds.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="With --seeds: write every seed's tables and the mean ± sd to this JSON "
                   "(benchmarks/demo_synthetic_cpu_<date>.json feeds the README: python -m m3net.readme_figures).")
def demo_cmd(out, seed, weights, train_episodes, eval_episodes, train_classes, val_classes, test_classes,
             clips_per_class, device, seeds, record):
    """Whole pipeline offline on the generated benchmark: clips -> cache -> M3Net head -> table.

    Generates fine-grained clips whose classes differ in the order and details of sub-actions,
    extracts ResNet-50 maps, trains the M3Net head briefly and scores it against ProtoNet,
    TSN-cosine and OTAM on the same seeded test episodes (about 10 minutes on a 2-core CPU).
    """
    import json

    from m3net.data.synthetic import SyntheticConfig
    from m3net.demo import DemoConfig, parse_seeds, run_demo, run_demo_seeds
    from m3net.errors import ConfigError
    from m3net.readme_figures import render_demo_results

    synthetic = SyntheticConfig(seed=seed, train_classes=train_classes, val_classes=val_classes,
                                test_classes=test_classes, clips_per_class=clips_per_class)
    config = DemoConfig(out=out, seed=seed, synthetic=synthetic, weights=weights, train_episodes=train_episodes,
                        eval_episodes=eval_episodes, device=device)
    if seeds is None:
        if record:
            raise click.BadParameter("--record needs --seeds", param_hint="--record")
        run_demo(config)
        return
    try:
        seed_list = parse_seeds(seeds)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--seeds")
    result = run_demo_seeds(config, seed_list)
    click.echo("\n" + render_demo_results(result, record or "not written (no --record)"))
    if record:
        with open(record, "w") as fh:
            json.dump(result, fh, indent=2)
        click.echo(f"[demo] record: {record}")


@main.command("report")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False),
              help="Training run folder (train_log.csv, val_log.csv) for the training curves.")
@click.option("--clips", "clips_root", type=click.Path(exists=True, file_okay=False),
              help="Folder dataset with the clips, for the activation-map picture.")
def report_cmd(results_dir, run_dir, clips_root):
    """Redraw the pictures of an evaluation folder (results.json) as PNG files."""
    from m3net.report import draw_report

    for path in draw_report(results_dir, run_dir, clips_root):
        click.echo(f"wrote {path}")


@main.command("dataset-info")
@click.option("--dataset", required=True, type=click.Choice(["gym99", "gym288", "diving48", "folder", "synthetic"]))
@click.option("--root", default=None, type=click.Path(file_okay=False), help="Also count the clips found / missing here.")
@click.option("--folder-split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Split of a flat <root>/<class>/<clip> folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def dataset_info_cmd(dataset, root, folder_split, as_json):
    """Classes and clips per split of a dataset; with --root, which clips are found."""
    import json

    from m3net.data.datasets import DatasetError, format_summary, load_dataset

    try:
        summary = load_dataset(dataset, root, folder_split).summary()
    except DatasetError as err:
        raise click.ClickException(str(err))
    click.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


@main.command("cache-info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def cache_info_cmd(path, as_json):
    """Provenance, clips per split (done / total) and failures of a feature cache."""
    import json

    from m3net.cache import CacheError, cache_info
    from m3net.extract.loop import format_cache_info

    try:
        info = cache_info(path)
    except CacheError as err:
        raise click.ClickException(str(err))
    click.echo(json.dumps(info, indent=1) if as_json else format_cache_info(info))


@main.command("bench-extract")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder dataset to time (e.g. from make-synthetic).")
@click.option("--clips", default=0, show_default=True, help="Clips timed (0: all of the folder).")
@click.option("--frames", default=8, show_default=True)
@click.option("--batch-size", default=8, show_default=True, help="Clips per backbone forward.")
@click.option("--workers", default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--weights", default="random", show_default=True, help="Speed does not depend on the weights' values.")
@click.option("--out-dir", default="benchmarks", show_default=True, type=click.Path(file_okay=False))
def bench_extract_cmd(**options):
    """Decode-only clips/s, backbone-only frames/s and end-to-end extraction, side by side."""
    import warnings

    from m3net.data.datasets import DatasetError
    from m3net.extract.bench import ExtractBenchConfig, format_table, run_bench, write_results

    warnings.filterwarnings("ignore", message="--weights random")  # timing only: the values do not matter
    try:
        result = run_bench(ExtractBenchConfig(**options))
    except (DatasetError, ValueError) as err:
        raise click.ClickException(str(err))
    click.echo(format_table(result))
    csv_path, json_path = write_results(result, options["out_dir"])
    click.echo(f"wrote {csv_path} and {json_path}")


@main.command("bench-dtw")
@click.option("--pairs", default=0, show_default=True, help="Cost matrices per call; 0 = 1M on CUDA, 4096 on CPU.")
@click.option("--n", "n", default=8, show_default=True, help="Rows of each cost matrix (query frames).")
@click.option("--m", "m", default=8, show_default=True, help="Columns of each cost matrix (support frames).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "float64"]), default="float32", show_default=True)
@click.option("--mode", type=click.Choice(["soft", "hard", "otam"]), default="soft", show_default=True)
@click.option("--gamma", default=0.1, show_default=True, help="Soft-min smoothing (soft, otam).")
@click.option("--pass", "pass_", type=click.Choice(["fwd", "fwd+bwd"]), default="fwd", show_default=True,
              help="Time the forward alone or forward + backward.")
@click.option("--repeats", default=10, show_default=True, help="Timed calls per implementation (median reported).")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cuda, cuda:1, cpu.")
@click.option("--impl", "implementations", multiple=True, type=click.Choice(["triton", "torch-reference", "eager-loop", "pysdtw"]),
              help="Implementations to time (repeatable); default all.")
@click.option("--eager-max-pairs", default=4096, show_default=True, help="Cap on pairs for the slow per-cell Python loop.")
@click.option("--out-dir", default="benchmarks", show_default=True, type=click.Path(file_okay=False),
              help="Where the CSV and JSON results go.")
def bench_dtw_cmd(pass_, implementations, **options):
    """Benchmark the DTW kernel: Triton vs torch reference vs eager loop vs pysdtw, side by side.

    Prints pairs/s, GB/s and the % of the device's memory-bandwidth floor (cost in, one value out;
    with the backward also the gradient out) and writes CSV + JSON with device, versions and git
    SHA. Without a GPU it prints CPU numbers (the Triton column needs TRITON_INTERPRET=1 there).
    """
    from m3net.kernels.bench import IMPLEMENTATIONS, DTWBenchConfig, format_table, run_bench, write_results

    config = DTWBenchConfig(backward=pass_ == "fwd+bwd", implementations=tuple(implementations) or IMPLEMENTATIONS, **options)
    result = run_bench(config)
    click.echo(format_table(result))
    csv_path, json_path = write_results(result, config.out_dir)
    click.echo(f"wrote {csv_path} and {json_path}")


@main.command("make-synthetic")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write <split>/<class>/<clip>.mp4 and manifest.json into.")
@click.option("--seed", default=0, show_default=True, help="Every class and clip is a function of it.")
@click.option("--train-classes", default=12, show_default=True)
@click.option("--val-classes", default=5, show_default=True)
@click.option("--test-classes", default=8, show_default=True)
@click.option("--clips-per-class", default=12, show_default=True)
@click.option("--frames", default=24, show_default=True, help="Frames per clip.")
@click.option("--size", default=128, show_default=True, help="Frame height and width in pixels.")
@click.option("--fps", default=12, show_default=True)
@click.option("--phases", default=4, show_default=True, help="Sub-actions per clip.")
@click.option("--family-size", default=4, show_default=True, help="Classes sharing one multiset of sub-actions (orders + one detail variant).")
@click.option("--codec", type=click.Choice(["libx264", "mpeg4"]), default="libx264", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a benchmark in --out that was generated with other settings.")
def make_synthetic_cmd(out, overwrite, **options):
    """Write the generated fine-grained benchmark (classes differ in sub-action order and details)."""
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic

    try:
        manifest, status = generate_synthetic(out, SyntheticConfig(**options), overwrite=overwrite)
    except (ValueError, FileExistsError) as err:
        raise click.ClickException(str(err))
    counts = ", ".join(f"{s} {len(manifest['splits'][s])} classes" for s in manifest["splits"])
    click.echo(f"{status} {out}: {len(manifest['clips'])} clips ({counts}).")


if __name__ == "__main__":
    main()
