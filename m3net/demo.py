"""``m3net demo``: the whole pipeline, offline, on the generated fine-grained benchmark.

generate clips -> extract ResNet-50 maps into the cache (and its training channel statistics) -> train the
M3Net head briefly -> evaluate M3Net and the baselines on the same seeded test episodes -> table + report
folder. Every head sees the same input: the cache's maps through one --input-norm (standardize by default).
Every step reuses what an earlier run finished (the clips, the cache rows, the training runs), so re-running
after an interruption continues instead of starting over.

``--compare`` trains more heads on the same cache (e.g. the rest of the paper's Table 1); with ``--preset
reference`` every trained head, M3Net included, follows its own reference recipe (m3net.train.presets.RECIPES)
up to the cap --train-episodes, stopping earlier after --patience validations without a better one.
"""
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, replace

import click
import numpy as np

from m3net.config import RunSettings, Settings, from_group, setting, settings, split_settings
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.errors import ConfigError, NonFiniteError
from m3net.extract.backbone import IMAGENET_FILES, RandomWeightsWarning, WeightsError, resolve_weights_file
from m3net.train.features import InputNormSettings
from m3net.train.loop import OptimizerSettings, ScheduleSettings, check_resumed_config, read_stop
from m3net.train.presets import PresetSettings

logger = logging.getLogger(__name__)

# Options of the M3Net head the default demo turns on, which real runs leave at the paper's defaults:
# proj_dim=128: d = 128 instead of 2048 (a learned projection of the cached maps), so the head trains in
#   minutes on a 2-core CPU.
# temperature_init="data": each view's τ starts at 1 / the spread of its distances (unit-spread logits),
#   instead of τ = 10.
DEMO_HEAD_OPTIONS = {"proj_dim": 128, "temperature_init": "data"}
# With --preset reference M3Net keeps the paper's head but for its width (the CPU's; --compare
# m3net:proj_dim=0 adds the paper's d = 2048).
REFERENCE_HEAD_OPTIONS = {"proj_dim": 128}


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
    train_queries: int = 2  # the demo's protocol; --preset reference: each head's own
    # ~50 s on 2 cores once the cache exists (extraction dominates the demo); at 300 the slowest view
    # (C-M) was still far behind on some seeds and dragged the fused Y below the best single view
    train_episodes: int = setting(900, "Training episodes of each trained head (with --preset reference: the cap; "
                                  "--patience stops earlier).", minimum=1)
    val_every: int = setting(100, "Validate (best.pt) every this many training episodes (--preset reference: "
                             "rounded up to a multiple of each head's --accumulate).", minimum=1)
    val_episodes: int = setting(50, "Validation episodes (one query per class).", minimum=1)
    patience: int = from_group(ScheduleSettings, "patience")
    eval_episodes: int = setting(600, "Seeded 5-way test episodes per shot.", minimum=1)
    lr: float = 1e-3  # the demo's protocol (the paper's 1e-4 is for 60 000 episodes); --preset reference: each head's
    head: str = "m3net"
    head_options: dict = None  # DEMO_HEAD_OPTIONS (REFERENCE_HEAD_OPTIONS with --preset reference)
    input_norm: str = from_group(InputNormSettings, "input_norm", "standardize")
    preset: str = from_group(PresetSettings, "preset")
    baselines: tuple = ("protonet", "tsn-cosine", "otam")
    # Empty in the default demo: on a CPU they add tens of minutes.
    compare: tuple = setting((), "Also train these heads (e.g. trx,strm,hyrsm,pal: the rest of the paper's Table 1; a "
                             "head's options after ':', several joined by ':', e.g. m3net:proj_dim=0) on the same "
                             "cache with the same input, and score them on the same episodes; with --preset reference "
                             "each with its own recipe.")
    compare_once: tuple = setting((), "Like --compare, on the first of --seeds only (e.g. m3net:proj_dim=0, the "
                                  "paper's width, too slow on a CPU for every seed).")
    clip_grad: float = from_group(OptimizerSettings, "clip_grad")  # the demo's protocol (--compare trx, strm need it)
    batch_size: int = 16
    workers: int = 2

    def __post_init__(self):
        if self.head_options is None:
            self.head_options = dict(REFERENCE_HEAD_OPTIONS if self.preset == "reference" else DEMO_HEAD_OPTIONS)
        super().__post_init__()
        self.compare = parse_compare(self.compare)
        self.compare_once = parse_compare(self.compare_once, "--compare-once")
        if set(self.compare) & set(self.compare_once):
            raise ConfigError(f"--compare-once: {sorted(set(self.compare) & set(self.compare_once))} also in --compare")
        if self.preset == "paper":
            raise ConfigError("--preset paper: the demo takes none (its own short protocol for every trained head) or "
                              "reference (each head's own recipe; M3Net's is the paper's)")


def choose_weights(requested):
    """'imagenet' if its checkpoint is already in the torch hub cache, else 'random' (and say so)."""
    if requested != "auto":
        return requested
    try:
        resolve_weights_file("imagenet")
        return "imagenet"
    except WeightsError:
        filename = IMAGENET_FILES["imagenet-v1"][0]
        logger.info(f"[demo] no ImageNet weights ({filename}) in the torch hub cache: using random backbone "
                    "weights. The temporal matchers still beat mean pooling on order-only classes, but absolute "
                    "accuracies are lower than with ImageNet features.")
        return "random"


def _step(title):
    logger.info(f"\n[demo] {title}")


def run_demo(config):
    """Runs (or continues) the demo; returns the evaluation summary written to <out>/report."""
    from m3net.bench.record import provenance_sha
    from m3net.extract.loop import ExtractConfig, extract_dataset
    from m3net.train.evaluate import EvalConfig, evaluate, format_table, write_summary

    start = time.perf_counter()
    os.makedirs(config.out, exist_ok=True)
    clips = os.path.join(config.out, "synthetic")
    cache = os.path.join(config.out, "cache.h5")
    report = os.path.join(config.out, "report")

    _step(f"1/4 generated benchmark -> {clips}")
    manifest, status = generate_synthetic(clips, config.synthetic)
    logger.info(f"[demo] {status}: {len(manifest['clips'])} clips")

    weights = choose_weights(config.weights)
    _step(f"2/4 extract ResNet-50 features ({weights} weights, {config.frames} frames/clip) -> {cache}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said above, in the demo's own words
        extract_dataset(ExtractConfig(dataset="folder", root=clips, out=cache, frames=config.frames,
                                      weights=weights, batch_size=config.batch_size, workers=config.workers,
                                      device=config.device, seed=config.seed))

    if config.input_norm not in ("auto", "none"):
        ensure_channel_statistics(cache)

    specs = [(config.head, config.head_options, config.head)] + [head_spec(text)
                                                                  for text in config.compare + config.compare_once]
    runs = {}
    for number, (head, options, folder) in enumerate(specs, start=1):
        step = f"3/4 ({number}/{len(specs)})" if len(specs) > 1 else "3/4"
        runs[folder] = train_or_reuse(config, cache, head, options, folder, step)
    run = runs[config.head]

    _step(f"4/4 evaluate on {config.eval_episodes} seeded test episodes -> {report}")

    def score(shot):
        scored = tuple(path for path in (os.path.join(r, "best.pt") for r in runs.values()) if os.path.exists(path))
        return evaluate(EvalConfig(cache=cache, checkpoints=scored,
                                   heads=config.baselines, input_norm=config.input_norm,
                                   way=config.way, shot=shot, queries=1, episodes=config.eval_episodes,
                                   seed=config.seed, device=config.device))

    summary = score(config.shot)
    summary["demo"] = {**asdict(config), "weights_used": weights,
                       "trained": {f"{head} ({folder})": run_record(runs[folder])
                                   for head, _, folder in specs}}
    write_summary(summary, report)
    summaries = {config.shot: summary}
    for shot in config.extra_shots:
        logger.info(f"[demo] and {config.way}-way {shot}-shot (same heads, same seed)")
        summaries[shot] = score(shot)
        write_summary(summaries[shot], os.path.join(report, f"shot-{shot}"))
    # this run's time: a re-run that reuses the clips, cache and head is much shorter than a fresh one
    with open(os.path.join(report, "demo_config.json"), "w") as fh:
        json.dump({**summary["demo"], "wall_s": time.perf_counter() - start, "git_sha": provenance_sha()}, fh, indent=2,
                  default=str)
    for shown in summaries.values():
        click.echo("\n" + format_table(shown))
    from m3net.report import draw_report

    pictures = draw_report(report, run_dir=run, clips_root=clips)
    logger.info(f"\n[demo] report: {report}/results.json, results.csv and "
                + ", ".join(os.path.basename(p) for p in pictures))
    return summaries


def ensure_channel_statistics(cache):
    """The cache's training channel statistics, computed and stored once (the demo owns its cache)."""
    from m3net.cache import read_channel_statistics, write_channel_statistics

    stats, stale = read_channel_statistics(cache)
    if stats is None or stale:
        stats = write_channel_statistics(cache)
        logger.info(f"[demo] channel statistics of the {len(stats.rows)} training clips -> {cache}")


def head_train_config(config, cache, head, head_options, run):
    """The TrainConfig of one demo head: the demo's protocol (lr, queries, gradient clipping, lr x0.5 at a third
    and two thirds of --train-episodes), or with --preset reference the head's own recipe capped at
    --train-episodes; either way the demo's input normalisation, episodes, validation and --patience."""
    from m3net.train.presets import with_preset
    from m3net.train.train_head import TrainConfig

    common = dict(cache=cache, out=run, head=head, head_options=head_options, way=config.way, shot=config.shot,
                  episodes=config.train_episodes, val_episodes=config.val_episodes, patience=config.patience,
                  input_norm=config.input_norm, log_every=10, seed=config.seed, device=config.device)
    if config.preset == "reference":
        options = with_preset("train-head", {**common, "preset": "reference"})  # the demo's head options win
        every = -(-config.val_every // options["accumulate"]) * options["accumulate"]  # whole optimizer steps
        return TrainConfig(**options, val_every=every, checkpoint_every=every)
    return TrainConfig(**common, queries=config.train_queries, lr=config.lr, clip_grad=config.clip_grad,
                       lr_step=max(config.train_episodes // 3, 1), val_every=config.val_every,
                       checkpoint_every=config.val_every)


def finished(saved, train_config):
    """A run has reached its cap, stopped early after --patience validations without a better one, or stopped on a
    non-finite loss after the episode it saved (it would only diverge again). ``saved`` is its last.pt, None when
    it has none (then it counts as 0 episodes: finished only if it diverged before its first checkpoint)."""
    from m3net.train.checkpoint import trained_episodes

    episodes = trained_episodes(saved) if saved is not None else 0
    patience = train_config.patience
    stopped = saved is not None and patience > 0 and saved.get("stale_validations", 0) >= patience
    diverged = read_stop(train_config.out)
    return (saved is not None and episodes >= train_config.episodes) or stopped \
        or (diverged is not None and diverged["saved"] == episodes)


def train_or_reuse(config, cache, head, head_options, folder, step):
    """Trains ``head`` on the demo's cache into <out>/runs/<folder> (``head_train_config``), or reuses the
    finished run there (a run of other settings is refused); returns the run folder."""
    from m3net.train.checkpoint import load_checkpoint
    from m3net.train.train_head import train_head

    run = os.path.join(config.out, "runs", folder)
    last = os.path.join(run, "last.pt")
    train_config = replace(head_train_config(config, cache, head, head_options, run), resume=os.path.exists(last))
    cap = "up to " if config.preset == "reference" or config.patience else ""
    _step(f"{step} train the {folder} head ({cap}{config.train_episodes} episodes) -> {run}")
    saved = load_checkpoint(last) if os.path.exists(last) else None
    if saved is not None:
        try:  # a run of another demo version (other head options, lr, ...) is not this demo's result
            check_resumed_config(saved["train_config"], train_config, last)
        except ConfigError as err:
            raise ConfigError(f"{run} holds a head trained with other settings; remove it or choose another "
                              f"--out ({err})") from None
    if finished(saved, train_config):
        why = "" if saved is not None else ": it diverged before its first checkpoint"
        logger.info(f"[demo] reusing the finished run in {run}{why}")
        return run
    try:
        train_head(train_config)
    except NonFiniteError as err:  # the other heads go on; this one is scored from the best.pt it reached, if any
        kept = "its best.pt is scored" if os.path.exists(os.path.join(run, "best.pt")) else \
            "it has no best.pt (no validation before) and is left out of the scores"
        logger.warning(f"[demo] the {folder} head diverged ({err}); {kept}")
    return run


def run_record(run):
    """What a comparison states of a trained head beside its accuracy: its options, widths and parameters, the
    recipe it was trained with, the episodes it trained and the one best.pt (the one scored) comes from."""
    from m3net.config import RUN_CONFIG, load_run_config
    from m3net.model import build_head
    from m3net.train.checkpoint import load_checkpoint, trained_episodes
    from m3net.train.presets import RECIPE_OPTIONS

    last, best = (load_checkpoint(path) if os.path.exists(path) else None
                  for path in (os.path.join(run, "last.pt"), os.path.join(run, "best.pt")))
    # a run that diverged before its first checkpoint has its settings in config.json alone
    trained = last["train_config"] if last else load_run_config(os.path.join(run, RUN_CONFIG))[1]
    head = last and build_head(last["head"], **last["head_config"])
    episodes = trained_episodes(last) if last else 0
    diverged = read_stop(run)
    return {"head": trained["head"], "head_options": trained["head_options"], "widths": head and head.widths(),
            "parameters": head and sum(p.numel() for p in head.parameters()), "preset": trained.get("preset", "none"),
            "recipe": {key: trained[key] for key in (*RECIPE_OPTIONS, "clip_grad") if key in trained},
            "cap": trained["episodes"], "patience": trained.get("patience", 0),
            "episodes_trained": episodes, "stopped_early": episodes < trained["episodes"],
            "diverged_at": diverged and diverged["episodes"],  # a non-finite loss stopped it there (else None)
            "best_episodes": best and trained_episodes(best), "best_val_acc": best and best["best_val_acc"],
            "input_norm": last.get("input_norm", "none") if last else trained["input_norm"]}


def head_spec(text):
    """"trx" or "m3net:proj_dim=0:cm_dim=64" -> (head, typed head options, run folder name)."""
    from m3net.model.registry import parse_head_options

    name, *pairs = text.split(":")
    options = parse_head_options(name, pairs)
    folder = "-".join([name, *(f"{key}-{value}" for key, value in options.items())])
    return name, options, "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in folder)


def parse_compare(specs, option="--compare", demo_head="m3net"):
    """("trx", "strm", "m3net:proj_dim=0") checked: trainable registry heads, each optionally with head options
    after ":" (KEY=VALUE, several joined by ":"); the demo's own head only with options (another variant of it)."""
    from m3net.model import list_heads
    from m3net.model.registry import head_class

    specs = tuple(spec.strip() for spec in specs if spec.strip())
    for spec in specs:
        name = spec.split(":")[0]
        if name not in list_heads():
            raise ConfigError(f"{option} {name}: not a registered head (see `m3net heads`)")
        if spec == demo_head:
            raise ConfigError(f"{option} {demo_head}: the demo trains M3Net already (a variant takes options, e.g. "
                              f"{demo_head}:proj_dim=0)")
        if not head_class(name).trainable:
            raise ConfigError(f"{option} {name}: a parameter-free head; the demo scores it as a baseline already")
        head_spec(spec)  # options checked before any work
    if len({head_spec(spec)[2] for spec in specs}) != len(specs):
        raise ConfigError(f"{option} {','.join(specs)}: a head is named twice")
    return specs


def seeded(config, seed, first=True):
    """The demo of one seed (its own benchmark, head initialisation and episodes) in <out>/seed-<seed>; the
    heads of compare_once only on the ``first`` seed."""
    return replace(config, seed=seed, out=os.path.join(config.out, f"seed-{seed}"),
                   synthetic=replace(config.synthetic, seed=seed), compare_once=config.compare_once if first else ())


def seed_checks(shot_summary):
    """What the demo claims for one seed and shot: M3Net's Y ahead of each other head with the paired 95% CI
    above zero (``ci_margin_over`` > 0), and Y at least its best single view; and where another head is ahead
    of M3Net with its CI above zero (``ci_margin_under`` > 0)."""
    rows = shot_summary["results"]
    m3net = next(r["head"] for r in rows if r["head"].startswith("m3net"))  # the trained head comes first
    accuracy = {r["view"]: r["accuracy"] for r in rows if r["head"] == m3net}
    paired = shot_summary["paired"]  # head − M3Net on the same episodes
    margins = {p["head"]: -p["difference"] - p["ci95"] for p in paired}
    best_view = max(v for k, v in accuracy.items() if k != "y")
    return {"ci_margin_over": margins, "ci_margin_under": {p["head"]: p["difference"] - p["ci95"] for p in paired},
            "leads_every_baseline": all(m > 0 for m in margins.values()),
            "y_minus_best_view": accuracy["y"] - best_view, "y_at_least_best_view": accuracy["y"] >= best_view}


def mean_and_sd(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def aggregate(per_seed):
    """Mean ± sd over seeds of every accuracy and paired difference, per shot (a head trained on some seeds
    only, --compare-once, over those: ``seeds`` says how many).

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
        margins = lambda key, head: [run["checks"][key][head] for run in runs if head in run["checks"][key]]  # noqa: E731
        out[shot] = {
            "accuracy": [{"head": head, "view": view, **mean_and_sd(values)}
                         for (head, view), values in accuracy.items()],
            "m3net_minus": [{"baseline": baseline, **mean_and_sd(values),
                             "seeds_with_ci_above_zero": sum(m > 0 for m in margins("ci_margin_over", baseline)),
                             "seeds_with_ci_below_zero": sum(m > 0 for m in margins("ci_margin_under", baseline))}
                            for baseline, values in m3net_minus.items()],
            "seeds_y_at_least_best_view": sum(run["checks"]["y_at_least_best_view"] for run in runs),
        }
    return out


def seeds_record(config, seeds):
    """The record of finished demos of ``seeds`` (``seeded`` folders under config.out): every seed's
    tables with the checks of ``seed_checks``, what each trained head was (``run_record``) and the input
    every head saw, and the mean ± sd over seeds (``aggregate``)."""
    from m3net.bench.record import benchmark_record
    from m3net.runtime import resolve_device

    per_seed, wall, weights, trained, code = {}, {}, {}, {}, {}
    for index, seed in enumerate(seeds):
        report = os.path.join(seeded(config, seed, first=index == 0).out, "report")
        with open(os.path.join(report, "demo_config.json")) as fh:
            ran = json.load(fh)
        wall[str(seed)], weights[str(seed)], trained[str(seed)] = ran["wall_s"], ran["weights_used"], ran.get("trained")
        runs = {}
        for shot in (config.shot, *config.extra_shots):
            folder = report if shot == config.shot else os.path.join(report, f"shot-{shot}")
            with open(os.path.join(folder, "results.json")) as fh:
                summary = json.load(fh)
            runs[f"{shot}-shot"] = {key: summary[key] for key in ("task", "results", "paired")}
            runs[f"{shot}-shot"]["checks"] = seed_checks(summary)
            runs[f"{shot}-shot"]["input_norm"] = summary.get("input_norm", {"input_norm": "none"})
        per_seed[str(seed)] = runs
        # the commit each seed's demo ran on (demos before this field: None) and its cache was extracted on
        code[str(seed)] = {"demo": ran.get("git_sha"), "cache": summary["cache_provenance"].get("code_version")}
    return benchmark_record("demo_synthetic", resolve_device(config.device), asdict(config), rows=[],
                            seeds=list(seeds), demo_wall_s=wall, weights_used=weights, trained=trained,
                            seed_code_versions=code,
                            per_seed=per_seed, over_seeds=aggregate(per_seed))


# Where a seed's demo ran: --collect takes seed folders run elsewhere (another process or machine) and moved here.
RUN_PLACE = ("out", "device", "workers")


def collect_seeds_record(config, seeds):
    """The ``seeds_record`` of demos that finished elsewhere (one process or machine per seed, their folders
    gathered under config.out as <out>/seed-<seed>), without training or scoring anything. Refused, naming the
    seed and the settings, when a seed's demo has not finished or ran with other settings than ``config``'s
    (a seed after the first runs without --compare-once)."""
    for index, seed in enumerate(seeds):
        asked = seeded(config, seed, first=index == 0)
        path = os.path.join(asked.out, "report", "demo_config.json")
        if not os.path.isfile(path):
            raise ConfigError(f"--collect: seed {seed} has no finished demo ({path} is missing); run it first with "
                              f"the same settings: m3net demo --seeds {seed} --out {config.out} ...")
        with open(path) as fh:
            ran = json.load(fh)
        expected = json.loads(json.dumps(asdict(asked), default=str))  # as demo_config.json stores it
        differs = [f"{key}: ran {ran.get(key)!r}, asked {value!r}" for key, value in expected.items()
                   if key not in RUN_PLACE and ran.get(key) != value]
        if differs:
            raise ConfigError(f"--collect: seed {seed}'s demo in {asked.out} ran with other settings ("
                              + "; ".join(differs) + ")")
    return seeds_record(config, seeds)


def run_demo_seeds(config, seeds):
    """Runs (or continues) the demo of each seed, then returns their ``seeds_record``."""
    for index, seed in enumerate(seeds):
        run_demo(seeded(config, seed, first=index == 0))
    return seeds_record(config, seeds)


@settings
class DemoSeedsSettings(Settings):
    """One demo, or one per seed with a record of them all."""

    seeds: tuple = setting((), "Seeds (e.g. 0,1,2) instead of --seed: one demo per seed in OUT/seed-<s>, each with its "
                           "own benchmark, then M3Net's mean ± sd over the seeds.", minimum=0, item=int)
    record: str = setting("", "With --seeds: write every seed's tables and the mean ± sd to this JSON "
                          "(benchmarks/demo_synthetic_cpu_<date>.json; table1_synthetic_cpu_<date>.json for --compare "
                          "with --preset reference: docs/results.md is generated from them).", path="file")
    collect: bool = setting(False, "With --seeds: train and score nothing; build the record from the seeds' finished "
                            "demos in OUT/seed-<s> (run separately, e.g. one process or machine per seed with the same "
                            "settings; a seed after the first without --compare-once). Refused if a seed is "
                            "unfinished or ran otherwise.", option="--collect")

    def __post_init__(self):
        super().__post_init__()
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds {','.join(map(str, self.seeds))}: a seed is listed twice")
        if not self.seeds and (self.record or self.collect):
            raise ConfigError(f"{'--record' if self.record else '--collect'} needs --seeds")


def demo(**options):
    """`m3net demo`: the options of DemoConfig, DemoBenchmarkSettings and DemoSeedsSettings; one demo, or one per
    --seeds (or --collect of those run elsewhere) with their summary, and the --record written."""
    size, seeds = split_settings(options, DemoBenchmarkSettings, DemoSeedsSettings)
    config = DemoConfig(synthetic=SyntheticConfig(seed=options["seed"], **asdict(size)), **options)
    if not seeds.seeds:
        run_demo(config)
        return
    result = (collect_seeds_record if seeds.collect else run_demo_seeds)(config, seeds.seeds)
    click.echo("\n" + format_seeds_summary(result, seeds.record))
    if seeds.record:
        with open(seeds.record, "w") as fh:
            json.dump(result, fh, indent=2)
        logger.info(f"[demo] record: {seeds.record}")


def format_seeds_summary(result, record=None):
    """A plain-text table of a ``seeds_record``: every head and view, its accuracy's mean ± sd over the seeds at
    each shot (a head trained on fewer seeds, --compare-once, says over how many), and where the record went.
    The docs' generated sections are built from the record by tools/docs_sections.py, not here."""
    shots = list(result["over_seeds"])
    seeds = result["seeds"]
    cells = {}  # (head, view) -> {shot: "mean ± sd"}, in the order the first shot lists them
    for shot in shots:
        for row in result["over_seeds"][shot]["accuracy"]:
            text = f"{row['mean']:.2f} ± {row['sd']:.2f}"
            if row["seeds"] < len(seeds):
                text = f"{row['mean']:.2f} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})"
            cells.setdefault((row["head"], row["view"]), {})[shot] = text
    table = [("head", "view", *shots)] + [(head, view, *(by_shot.get(shot, "—") for shot in shots))
                                          for (head, view), by_shot in cells.items()]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [f"Accuracy % over seeds {', '.join(map(str, seeds))}, mean ± sd "
             f"({result['config']['eval_episodes']} test episodes per seed and shot):"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.append(f"record: {record}" if record else "record: not written (no --record)")
    return "\n".join(lines)
