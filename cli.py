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
def extract_cmd():
    """Run the backbone over a dataset's clips and write the HDF5 feature cache."""
    _not_built("extract")


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
def finetune_cmd():
    """Train backbone and head end to end on decoded frames."""
    _not_built("finetune")


@main.command("predict")
def predict_cmd():
    """Classify query clips against a folder of labelled support clips."""
    _not_built("predict")


@main.command("demo")
def demo_cmd():
    """Whole pipeline offline on the generated benchmark."""
    _not_built("demo")


@main.command("dataset-info")
def dataset_info_cmd():
    """Classes and clips per split of a dataset; with --root, which clips are found."""
    _not_built("dataset-info")


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
