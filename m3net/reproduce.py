"""``m3net reproduce``: one cell of the paper's Table 1 (or a Tables 2-4 ablation) as one command.

    OUT/<dataset>-<head>-<variant>-<shot>shot/
        finetune/    m3net finetune --preset paper (backbone + head end to end from ImageNet weights)
        cache.h5     m3net extract --splits test --weights finetune/best.pt (test view of the tuned backbone)
        results/     m3net evaluate --preset paper (6 000 episodes, 5 queries per class, every view)
        row.json     the cell beside the paper's number (and each view beside the paper's where it gives them),
                     with the coverage it ran on: clips and classes used per split out of those listed
    OUT/table.csv    every cell under OUT, regenerated after each run

Partial copies of a dataset are the normal case: every step uses the clips present under --root, and
before anything is trained (or any folder made) every split the cell uses must give one episode
(train and val for the finetune, test for the evaluation), else one error names what is missing. A
cell on partial data is not the paper's number: row.json says how partial it was.

Every step resumes: re-running the same command continues an interrupted finetune, fills the rows
of the cache still missing, and re-scores (evaluation is seeded, so the same numbers come back).
The paper's protocol keeps --input-norm none; with center or standardize, finetune normalises the
backbone's maps with --stats-cache's training statistics and evaluate applies the checkpoint's.
Options left at 0 take the paper preset's value; smaller values make smoke runs (the generated
benchmark runs end to end on a CPU this way).
"""
import csv
import dataclasses
import glob
import json
import os
import warnings

from m3net.cache import cache_info, load_cache
from m3net.config import RunSettings, from_group, setting, settings, write_run_config
from m3net.data.datasets import DatasetSettings, coverage, load_dataset
from m3net.data.episodes import SPLITS, EpisodeSettings
from m3net.errors import ConfigError
from m3net.extract.backbone import file_sha256
from m3net.extract.loop import ExtractConfig, extract_dataset
from m3net.locking import cache_lock_path, exclusive_lock
from m3net.model.registry import HeadSettings
from m3net.paper import ABLATIONS, ablation_cell, table1_cell
from m3net.train.checkpoint import load_checkpoint, optimizer_steps, trained_episodes
from m3net.train.evaluate import EvalConfig, evaluate, write_summary
from m3net.train.features import InputNormSettings
from m3net.train.finetune import FinetuneConfig, finetune
from m3net.train.presets import with_preset

VARIANTS = ("full",) + tuple(ABLATIONS)


@settings
class ReproduceConfig(DatasetSettings, InputNormSettings, RunSettings):
    shot: int = from_group(EpisodeSettings, "shot")  # Table 1: 1, 3, 5
    head: str = from_group(HeadSettings, "head")  # Table 1's methods: `m3net heads`
    variant: str = setting("full", "full, or an ablation of the m3net head on Gym99: Table 2 (t2-im, t2-ifce-im, "
                           "...), Table 3 (t3-im-all, t3-cm-all, t3-tm-all, t3-swap, t3-m3net), Table 4 "
                           "(t4-1 ... t4-7).", choices=VARIANTS)
    out: str = setting("reproduce", "Folder of every cell's steps and table.csv.", path="dir")
    weights: str = setting("imagenet", "Backbone initialisation (paper: ImageNet).")
    finetune_episodes: int = setting(0, "Finetune episodes (0: the paper's 60 000).", minimum=0)
    eval_episodes: int = setting(0, "Test episodes (0: the paper's 6 000).", minimum=0)
    val_episodes: int = setting(300, "Validation episodes of finetune (best.pt).", minimum=0)
    frames: int = setting(0, "Frames per clip (0: the paper's 8).", minimum=0)
    crop: int = setting(0, "Crop size (0: the paper's 224).", minimum=0)
    workers: int = setting(2, "DataLoader processes decoding clips.", minimum=0)
    stats_cache: str = from_group(FinetuneConfig, "stats_cache")  # --input-norm other than none: finetune's statistics

    def __post_init__(self):
        super().__post_init__()
        if self.variant != "full" and self.head != "m3net":
            raise ConfigError(f"--variant {self.variant}: the Tables 2-4 ablations are of the m3net head, not "
                              f"--head {self.head}")


def cell_folder(config):
    return os.path.join(config.out, f"{config.dataset}-{config.head}-{config.variant}-{config.shot}shot")


def finetune_config(config):
    """The cell's finetune: --preset paper with the cell's options."""
    given = {"dataset": config.dataset, "root": config.root, "out": os.path.join(cell_folder(config), "finetune"),
             "weights": config.weights,
             "head": config.head, "shot": config.shot, "workers": config.workers, "device": config.device,
             "val_episodes": config.val_episodes, "preset": "paper", "input_norm": config.input_norm,
             "stats_cache": config.stats_cache,
             "head_options": ABLATIONS[config.variant].options if config.variant != "full" else {}}
    given.update({k: getattr(config, k) for k in ("frames", "crop") if getattr(config, k)})
    if config.finetune_episodes:
        given["episodes"] = config.finetune_episodes
    given["checkpoint_every"] = min(100, given.get("episodes", 100))
    given["val_every"] = min(1000, given.get("episodes", 1000))
    return FinetuneConfig(**with_preset("finetune", given, explicit=set(given)))


def scoring_config(config, checkpoint):
    """The cell's evaluation of ``checkpoint`` on its cache: --preset paper (input normalisation: the
    checkpoint's own, evaluate's --input-norm auto)."""
    cell = cell_folder(config)
    scoring = {"checkpoints": (checkpoint,), "cache": os.path.join(cell, "cache.h5"), "shot": config.shot,
               "device": config.device, "preset": "paper", "out": os.path.join(cell, "results")}
    if config.eval_episodes:
        scoring["episodes"] = config.eval_episodes
    return EvalConfig(**with_preset("evaluate", scoring, explicit=set(scoring)))


def extract_config(config, checkpoint, progress=True):
    """Only the test split: evaluation reads nothing else (the saving: `m3net.plan.cache_bytes`)."""
    return ExtractConfig(dataset=config.dataset, root=config.root, out=os.path.join(cell_folder(config), "cache.h5"),
                         weights=checkpoint, splits=("test",), workers=config.workers, device=config.device,
                         progress=progress)


def checked_coverage(dataset, tuning, scoring, exclude=()):
    """The Coverage of the cell's dataset at the episodes each step draws, refused (before anything is trained or
    written) when a split it uses cannot give one episode: train and val for the finetune, test for the
    evaluation. ``exclude``: clip ids that failed to decode (absent from then on)."""
    dataset.require_present()
    queries = {**tuning.episode_queries(), "test": scoring.queries}
    covered = coverage(dataset, tuning.way, tuning.shot, queries, exclude=exclude)
    covered.require_episodes(tuning.episode_splits() + ("test",), "reproduce")
    return covered


def _failed_clips(run):
    """Clip ids the finetune in ``run`` could not decode (failures.csv, failures-rank<r>.csv)."""
    failed = set()
    for path in glob.glob(os.path.join(run, "failures*.csv")):
        with open(path, newline="") as fh:
            failed |= {row["clip_id"] for row in csv.DictReader(fh)}
    return failed


def _finetuned(tuning, progress):
    """Runs (or continues) the finetune step; returns the checkpoint whose backbone the cache uses."""
    last, best = os.path.join(tuning.out, "last.pt"), os.path.join(tuning.out, "best.pt")
    trained = trained_episodes(load_checkpoint(last)) if os.path.exists(last) else 0
    if trained < tuning.episodes:
        finetune(dataclasses.replace(tuning, resume=os.path.exists(last)), progress=progress)
    return best if os.path.exists(best) else last


def _drop_stale_cache(cache, checkpoint):
    """The cell's cache belongs to the checkpoint it was extracted with; once finetuning moved on (a
    longer run, a better best.pt) it is outdated derived data of this cell, so it is rebuilt."""
    if not os.path.exists(cache):
        return
    # cache_info first: it refuses a cache another process is writing (and, opening the lock file
    # itself, must not run while this process holds the lock: closing it would drop the lock).
    if cache_info(cache)["attrs"].get("weights_sha256") != file_sha256(checkpoint):
        warnings.warn(f"{cache}: extracted from an earlier state of {checkpoint}; extracting it again")
        with exclusive_lock(cache_lock_path(cache), cache):
            os.remove(cache)


def reproduce(config, progress=True):
    """Runs the cell's three steps (each resuming) and returns its row (also in row.json and table.csv)."""
    cell = cell_folder(config)
    tuning, run = finetune_config(config), os.path.join(cell, "finetune")
    dataset = load_dataset(config.dataset, config.root)
    checked_coverage(dataset, tuning, scoring_config(config, ""))  # before any folder is made
    os.makedirs(cell, exist_ok=True)
    write_run_config(cell, "reproduce", config)  # `m3net reproduce --config CELL/config.json` replays the cell
    checkpoint = _finetuned(tuning, progress)
    extracting = extract_config(config, checkpoint, progress)
    cache = extracting.out
    _drop_stale_cache(cache, checkpoint)
    extract_dataset(extracting)
    scoring = scoring_config(config, checkpoint)
    # Clips that failed to decode (in the finetune, or in the extraction: present but not done) are left out.
    extracted = set(load_cache(cache, splits=("test",), features=False).video_ids)
    undecoded = {c.clip_id for c in dataset.present(("test",))} - extracted
    covered = checked_coverage(dataset, tuning, scoring, exclude=_failed_clips(run) | undecoded)
    summary = evaluate(scoring, progress=progress)
    write_summary(summary, scoring.out)
    last, best = load_checkpoint(os.path.join(run, "last.pt")), load_checkpoint(checkpoint)
    row = {"dataset": config.dataset, "shot": config.shot, "head": config.head, "variant": config.variant,
           **beside_paper(config, summary["results"]), **covered.as_row(),
           "finetune_episodes": trained_episodes(last), "finetune_optimizer_steps": optimizer_steps(last),
           "checkpoint_episodes": trained_episodes(best), "checkpoint": os.path.abspath(checkpoint)}
    tmp = os.path.join(cell, "row.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(row, fh, indent=2)
    os.replace(tmp, os.path.join(cell, "row.json"))
    write_table(config.out)
    return row


def beside_paper(config, results):
    """The row's scores from evaluate's ``results`` (one head) beside the paper's: the fused Y with its CI and
    the paper's, then each view (``accuracy_<view>``) and the paper's where its table gives one
    (``paper_accuracy_<view>``, Table 4)."""
    fused = next(r for r in results if r["view"] == "y")
    if config.variant == "full":
        paper, paper_views = table1_cell(config.head, config.dataset, config.shot) or (None, None), {}
    else:  # the ablation tables give no CIs
        reported = dict(ablation_cell(config.variant, config.dataset, config.shot) or {})
        paper, paper_views = (reported.pop("y", None), None), reported
    return {"accuracy": fused["accuracy"], "ci95": fused["ci95"], "episodes": fused["episodes"],
            "scored_queries": fused["scored_queries"], "paper_accuracy": paper[0], "paper_ci95": paper[1],
            **{f"accuracy_{r['view']}": r["accuracy"] for r in results if r["view"] != "y"},
            **{f"paper_accuracy_{view}": accuracy for view, accuracy in paper_views.items()}}


def write_table(out):
    """OUT/table.csv from every cell's row.json under OUT (one row per cell, sorted). The columns are those
    of every row (cells differ in their views), empty where a cell has no such column."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*", "row.json"))):
        with open(path) as fh:
            rows.append(json.load(fh))
    if rows:
        with open(os.path.join(out, "table.csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
            writer.writeheader()
            writer.writerows(rows)
    return rows


def format_row(row):
    paper = (f"paper {row['paper_accuracy']:.2f}" + (f" ± {row['paper_ci95']:.2f}" if row["paper_ci95"] else "")
             if row["paper_accuracy"] is not None else "no paper cell")
    views = [(key.removeprefix("accuracy_"), value) for key, value in row.items() if key.startswith("accuracy_")]
    per_view = "".join(f"; {view} {accuracy:.2f}" + (f" (paper {row[f'paper_accuracy_{view}']:.2f})"
                                                     if f"paper_accuracy_{view}" in row else "")
                       for view, accuracy in views)
    splits = [s for s in SPLITS if f"{s}_clips" in row]
    partial = "" if row.get("complete", True) else (
        "\non partial data, so not the paper's setting: " + ", ".join(
            f"{s} {row[f'{s}_clips']:,} of {row[f'{s}_listed_clips']:,} clips ({row[f'{s}_classes']} of "
            f"{row[f'{s}_listed_classes']} classes)" for s in splits))
    return (f"{row['dataset']} {row['shot']}-shot {row['head']} ({row['variant']}): {row['accuracy']:.2f} ± "
            f"{row['ci95']:.2f} over {row['scored_queries']} queries; {paper}{per_view}{partial}")
