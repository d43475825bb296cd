"""The generated docs sections that state settings, the paper's numbers and size estimates, from the
package's own tables (no run records, except the JPEG bytes and decode rates of the newest bench-input record):

    settings           the paper preset's table (m3net/train/presets.py SETTINGS)
    reference-recipes  each head's reference recipe (m3net/train/presets.py RECIPES)
    frames-footprint   frames per finetune cell (the paper preset) and disk per dataset (m3net/footprint.py)
    extract-splits     the cache a Table 1 cell needs (test split) against every split's (m3net/footprint.py)
    paper-table1       the paper's Table 1 as m3net/paper.py holds it
    paper-ablations    the paper's Tables 2-4 as m3net/paper.py holds them (``reproduce --variant``)
"""
import dataclasses
import glob
import json
import os

from m3net.paper import METHOD_NAMES

INPUT_PATTERN = os.path.join("benchmarks", "bench_input_*.json")


def _millions(n):
    return f"{n / 1e6:.2f} M"


def _range(values, fmt):
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}–{fmt(high)}"


def render_frames_footprint(root):
    """The frames-footprint section: frames a finetune cell decodes (exact for --preset paper), the hours
    that takes per core at the newest bench-input record's rates, and each listed dataset's disk estimate."""
    from m3net.data.datasets import LISTED_DATASETS
    from m3net.footprint import (
        ASSUMED_FPS,
        CACHE_BYTES_PER_FRAME,
        disk_estimate,
        finetune_frames,
        paper_finetune_config,
    )

    found = sorted(glob.glob(os.path.join(root, INPUT_PATTERN)))
    path = os.path.relpath(found[-1], root) if found else None
    real = []
    if path:
        with open(os.path.join(root, path)) as fh:
            real = [r for r in json.load(fh)["rows"] if r["kind"] == "real"]
    config = paper_finetune_config(1)
    lines = [f"Frames one finetune cell decodes with `--preset paper` ({config.episodes:,} training episodes, "
             f"{config.way}-way, {config.queries} queries per class, {config.frames} frames per clip; every "
             f"{config.val_every:,} of them {config.val_episodes} validation episodes with {config.val_queries} query "
             "per class), the same for every dataset"
             + (f", and what decoding them costs per core at the rates of `{path}` (real mp4 clips, "
                f"{_range([int(r['resolution'].split('x')[1]) for r in real], str)}p):" if real else
                " (no `m3net bench-input` record yet: run it for the hours):"), "",
             "| cell | training frames | validation frames | core-hours from mp4 | core-hours from frame folders |",
             "|---|---|---|---|---|"]
    for shot in (1, 5):
        frames = finetune_frames(paper_finetune_config(shot))
        total = frames["train"] + frames["validation"]
        hours = [_range([total / r[key] / 3600 for r in real], "{:,.0f}".format) if real else "—"
                 for key in ("mp4_frames_per_s", "frames_frames_per_s")]
        lines.append(f"| {shot}-shot | {_millions(frames['train'])} | {_millions(frames['validation'])} | "
                     f"{hours[0]} | {hours[1]} |")
    per_frame = sum(r["jpeg_bytes_per_frame"] for r in real) / len(real) if real else None
    lines += ["", "| dataset | clips | seconds per clip | frames per clip | frames | frame folders | cache, all "
              "splits | cache, test split |", "|---|---|---|---|---|---|---|---|"]
    for dataset in LISTED_DATASETS:
        e = disk_estimate(dataset, per_frame or 0)
        folders = f"{e.frame_bytes / 1e9:.0f} GB" if per_frame else "—"
        lines.append(f"| {dataset} | {e.clips:,} | {e.seconds_per_clip:.2f} ({e.seconds_source}) | "
                     f"{e.frames_per_clip:.0f} | {_millions(e.frames)} | {folders} | {e.cache_bytes / 1e9:.0f} GB | "
                     f"{e.test_cache_bytes / 1e9:.0f} GB |")
    measured = (f"{per_frame / 1024:.1f} KiB per frame, the mean over the real clips of `{path}` "
                f"({_range([r['jpeg_bytes_per_frame'] / 1024 for r in real], '{:.1f}'.format)} KiB across them: it "
                "depends on the content)" if per_frame else "not measured yet (`m3net bench-input`)")
    lines += ["", "Estimates, not measurements of the datasets: frames per clip = seconds per clip × "
              f"{ASSUMED_FPS} fps (assumed: YouTube broadcasts run at 25–30 fps, some at 50–60); JPEG size "
              f"{measured}; caches {CACHE_BYTES_PER_FRAME * 8 / 1e6:.1f} MB per clip (7×7×2048 float16 × 8 "
              "frames). `m3net frames` prints the frames and KiB per frame it wrote."]
    return "\n".join(lines)


def render_paper_table1():
    """The paper's Table 1 (markdown) from m3net.paper, the numbers `m3net reproduce` compares with."""
    from m3net.paper import DATASETS, SHOTS, TABLE1

    names = {"diving48": "Diving48", "gym99": "Gym99", "gym288": "Gym288"}
    header = " | ".join(f"{names[d]} {k}-shot" for d in DATASETS for k in SHOTS)
    lines = [f"| method (`--head`) | {header} |", "|---|" + "---|" * (len(DATASETS) * len(SHOTS))]
    for method, cells in TABLE1.items():
        values = " | ".join(f"{a:.2f} ± {c:.2f}" for d in DATASETS for a, c in cells[d])
        lines.append(f"| {METHOD_NAMES[method]} (`{method}`) | {values} |")
    return "\n".join(lines)


def head_opt_text(options):
    """Head options as --head-opt values: booleans lower-case, tuples comma-separated."""
    def text(value):
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value).lower() if isinstance(value, bool) else value

    return " ".join(f"`{key}={text(value)}`" for key, value in options.items()) or "(the defaults)"


def render_paper_ablations():
    """The paper's Tables 2-4 (markdown) from m3net.paper: each `reproduce --variant`, its head options and
    the accuracies it is compared with."""
    from m3net.paper import ABLATIONS

    lines = ["| `--variant` | table | m3net head options | 1-shot Y | 5-shot Y | 1-shot per view |",
             "|---|---|---|---|---|---|"]
    for name, variant in ABLATIONS.items():
        fused = [f"{variant.paper[shot]['y']:.2f}" if shot in variant.paper else "—" for shot in (1, 5)]
        views = ", ".join(f"{view.upper()} {accuracy:.2f}" for view, accuracy in variant.paper.get(1, {}).items()
                          if view != "y") or "—"
        lines.append(f"| `{name}` | {variant.table} | {head_opt_text(variant.options)} | {' | '.join(fused)} | "
                     f"{views} |")
    return "\n".join(lines)


def _shown(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "(none)"
    return f"{value:,}".replace(",", " ") if isinstance(value, int) else str(value)


def settings_table():
    """The settings table (markdown): paper value, m3net default, --preset paper, and why."""
    from m3net.train.evaluate import EvalConfig
    from m3net.train.finetune import FinetuneConfig
    from m3net.train.presets import SETTINGS
    from m3net.train.train_head import TrainConfig

    configs = {"finetune": FinetuneConfig, "train-head": TrainConfig, "evaluate": EvalConfig}
    lines = ["| command | option | paper | m3net default | `--preset paper` | note |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = next(f.default for f in dataclasses.fields(configs[s.stage]) if f.name == s.option)
        if s.option == "freeze_bn":
            option = "--freeze-bn/--train-bn"
        else:
            option = "--" + s.option.replace("_", "-")
        lines.append(f"| {s.stage} | `{option}` | {s.paper} | {_shown(default)} | {_shown(s.preset)} | {s.why} |")
    return "\n".join(lines)


def render_extract_splits():
    """The extract-splits section: what `reproduce` saves by extracting the test split alone, per listed dataset."""
    from m3net.data.datasets import LISTED_DATASETS
    from m3net.footprint import CACHE_BYTES_PER_FRAME, cache_bytes, clip_counts

    lines = [f"At the paper's 8 frames of 7×7×2048 float16 maps ({8 * CACHE_BYTES_PER_FRAME / 1e6:.1f} MB a clip), "
             "the cache of every listed clip against the test split alone (what a Table 1 cell evaluates on, so what "
             "`reproduce` extracts), for a complete copy of each dataset:", "",
             "| dataset | clips listed | cache, every split | test split | cache, test split only | saved |",
             "|---|---|---|---|---|---|"]
    for dataset in LISTED_DATASETS:
        clips = clip_counts(dataset)
        total, test = cache_bytes(sum(clips.values()), 8), cache_bytes(clips["test"], 8)
        lines.append(f"| {dataset} | {sum(clips.values()):,} | {total / 1e9:.0f} GB | {clips['test']:,} clips | "
                     f"{test / 1e9:.0f} GB | {(total - test) / 1e9:.0f} GB ({1 - test / total:.0%} of the "
                     "extraction) |")
    return "\n".join(lines)


def _schedule(recipe):
    from m3net.train.presets import NO_DECAY

    if recipe.lr_step >= NO_DECAY:
        return "constant"
    return f"x{recipe.lr_gamma:g} every {recipe.lr_step:,}".replace(",", " ")


def reference_table():
    """The reference-recipe table (markdown): how each trained head's own code trains it, the values
    `--preset reference` sets, and where each comes from."""
    from m3net.train.presets import RECIPES

    lines = ["| head | reference | optimizer | lr | momentum | weight decay | episodes per step | queries per class | "
             "lr schedule | head options | where the values are set |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in RECIPES:
        momentum = f"{r.momentum:g}" if r.optimizer == "sgd" else "—"
        options = ", ".join(f"`{key}={value!r}`" for key, value in r.head_options.items()) or "—"
        lines.append(f"| {METHOD_NAMES[r.head]} (`{r.head}`) | {r.reference} | {r.optimizer} | {r.lr:g} | {momentum} | "
                     f"{r.weight_decay:g} | {r.accumulate} | {r.queries} | {_schedule(r)} | {options} | {r.source} |")
    return "\n".join(lines)
