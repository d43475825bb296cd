"""Writes the README's generated sections, so their numbers cannot go stale:

    demo-results       from the newest benchmarks/demo_synthetic_cpu_<date>.json
                       (``m3net demo --seeds 0,1,2 --record ...``)
    table1-synthetic   from the newest benchmarks/table1_synthetic_cpu_<date>.json (TABLE1_COMMAND)
    table1-cap-check   from the newest benchmarks/table1_longer_cap_synthetic_cpu_<date>.json: a seed of it
                       again with a higher episode cap, beside its rows of the Table 1 record
    benchmark-results  from the newest record of each benchmark under benchmarks/ (bench_*.json)
    frames-footprint   frames per finetune cell (the paper preset) and disk per dataset
                       (m3net/footprint.py), at the newest bench_input record's JPEG bytes and rates
    settings           from the paper preset's table (m3net/train/presets.py SETTINGS)
    reference-recipes  from each head's reference recipe (m3net/train/presets.py RECIPES)
    synthetic-validation  from the newest validator record of the generated benchmark (synthetic_validation_*.json)
    extract-splits     the cache a Table 1 cell needs (test split) against every split's, from the shipped
                       split lists (m3net/footprint.py)
    paper-table1       from the paper's Table 1 as m3net/paper.py holds it
    paper-ablations    from the paper's Tables 2-4 as m3net/paper.py holds them (``reproduce --variant``)

    python -m m3net.readme_figures            # rewrite README.md between each pair of markers
    python -m m3net.readme_figures --check    # exit 1 when README.md and the records disagree

tests/test_readme_figures.py runs the check.
"""
import argparse
import dataclasses
import glob
import json
import os
import sys

from m3net.errors import ConfigError
from m3net.paper import METHOD_NAMES, VIEW_NAMES

BEGIN, END = "<!-- demo-results:begin -->", "<!-- demo-results:end -->"
RECORD_PATTERN = os.path.join("benchmarks", "demo_synthetic_cpu_*.json")
TABLE1_PATTERN = os.path.join("benchmarks", "table1_synthetic_cpu_*.json")
# A seed of the Table 1 run again with a higher episode cap for some heads (the table1-cap-check section).
CAP_CHECK_PATTERN = os.path.join("benchmarks", "table1_longer_cap_synthetic_cpu_*.json")
# The record of the table1-synthetic section: every Table 1 head, each with its reference recipe, on one input.
TABLE1_COMMAND = ("OMP_NUM_THREADS=1 m3net demo --seeds 0,1,2 --preset reference --compare trx,strm,hyrsm,pal "
                  "--compare-once m3net:proj_dim=0 --train-episodes 960 --val-every 160 --patience 3 "
                  "--out m3net-table1 --record benchmarks/table1_synthetic_cpu_$(date +%F).json")
INPUT_PATTERN = os.path.join("benchmarks", "bench_input_*.json")
VALIDATION_PATTERN = os.path.join("benchmarks", "synthetic_validation_*.json")


def latest_record(root, pattern=RECORD_PATTERN):
    """Path (relative to ``root``) of the newest record matching ``pattern``; ISO dates sort by name."""
    found = sorted(glob.glob(os.path.join(root, pattern)))
    if not found:
        raise ConfigError(f"no record {pattern} under {root}: run `m3net demo --seeds ... --record ...`")
    return os.path.relpath(found[-1], root)


def _load_latest(root, pattern):
    """(record, its path relative to ``root``) of the newest record matching ``pattern``."""
    path = latest_record(root, pattern)
    with open(os.path.join(root, path)) as fh:
        return json.load(fh), path


def head_name(label):
    """The paper's name of an evaluated head: "trx (trx)" (trained, its run folder in brackets) or "otam"."""
    head = label.split(" ")[0]
    return METHOD_NAMES.get(head, head)


def render_demo_results(record, record_path):
    """The markdown of the demo-results section (without the markers)."""
    shots = list(record["over_seeds"])
    seeds = record["seeds"]
    demo = record["config"]
    synthetic = demo["synthetic"]
    classes = (synthetic["train_classes"], synthetic["val_classes"], synthetic["test_classes"])
    options = ", ".join(f"`{key}={value!r}`" for key, value in demo["head_options"].items())
    norm = demo.get("input_norm", "none")
    if norm not in ("auto", "none"):
        done = {"center": "centred", "standardize": "standardised"}[norm]
        inputs = (f"Every head, the baselines included, sees the same input: the cached maps {done} per channel "
                  "with the training split's statistics (`--input-norm`), because random-weight ResNet frames are "
                  "nearly collinear (cosine costs ~10⁻³ apart). ")
    else:
        inputs = ("This record predates the run-level `--input-norm`: M3Net alone standardised its input (its head "
                  "option `input_norm`), the baselines scored the raw maps. ")
    lines = [
        f"**`m3net demo`** (default settings: {sum(classes) * synthetic['clips_per_class']} generated clips of "
        f"{sum(classes)} classes ({'/'.join(map(str, classes))} train/val/test; within-class tempo "
        f"{synthetic.get('tempo', 0)}), "
        f"{' and '.join(sorted(set(record['weights_used'].values())))} ResNet-50 weights, the M3Net head trained "
        f"for {demo['train_episodes']} episodes at lr {demo['lr']:g} with the demo's head options {options}, then "
        f"scored with the baselines on the same seeded test episodes at {' and '.join(shots)}). The test classes "
        "come in families that share their sub-actions and differ only in their order (or one detail), so mean "
        f"pooling is near chance. {inputs}The head options are not the paper's and real runs leave them at the "
        "paper's defaults: `proj_dim` learns a projection of the 2048 channels to d = 128 so the head trains in "
        "minutes on a CPU; `temperature_init=\"data\"` starts each view's τ at unit-spread logits instead of "
        "τ = 10.",
        "",
        f"`m3net demo --seeds {','.join(map(str, seeds))}` ({len(seeds)} seeds: each its own generated benchmark, "
        f"head initialisation and episodes; {demo['eval_episodes']} seeded {demo['way']}-way test episodes per seed "
        f"and shot, one query per class), measured on {record['device']} at git {record['git_sha'][:7]} "
        f"(load average {record['load_average_1min']:.1f} when it ended), record `{record_path}`. "
        "Accuracy in %, mean ± sd over the seeds" + (f" ({record['note']})" if record.get("note") else "") + ":",
        "",
        "| head | view | " + " | ".join(shots) + " |",
        "|---|---|" + "---|" * len(shots),
    ]
    rows = record["over_seeds"][shots[0]]["accuracy"]
    for index, row in enumerate(rows):
        cells = [record["over_seeds"][shot]["accuracy"][index] for shot in shots]
        # other heads' fused output is their Y too; their own views (STRM's y_frame, y_patch) keep their names
        view = VIEW_NAMES.get(row["view"], row["view"]) if head_name(row["head"]) == "M3Net" or row["view"] != "y" \
            else "Y"
        lines.append(f"| {head_name(row['head'])} | {view} | "
                     + " | ".join(f"{c['mean']:.2f} ± {c['sd']:.2f}" for c in cells) + " |")
    lines += ["", "Paired difference M3Net Y − baseline on the same episodes (points, mean ± sd over seeds; "
              "in how many seeds its paired 95% CI lies above zero):", "",
              "| M3Net Y − | " + " | ".join(shots) + " |", "|---|" + "---|" * len(shots)]
    for index, row in enumerate(record["over_seeds"][shots[0]]["m3net_minus"]):
        cells = [record["over_seeds"][shot]["m3net_minus"][index] for shot in shots]
        lines.append(f"| {head_name(row['baseline'])} | " + " | ".join(
            f"{c['mean']:+.2f} ± {c['sd']:.2f} (CI > 0 in {c['seeds_with_ci_above_zero']}/{len(seeds)})"
            for c in cells) + " |")
    fused = ", ".join(f"{record['over_seeds'][shot]['seeds_y_at_least_best_view']}/{len(seeds)} seeds at {shot}"
                      for shot in shots)
    wall = ", ".join(f"{seconds / 60:.1f}" for seconds in record["demo_wall_s"].values())
    lines += ["", f"The fused Y is at least its best single view in {fused}. Wall time of each seed's demo in "
              f"this record: {wall} min (a run that reuses an earlier run's clips, cache or head is shorter than "
              "a fresh one). "
              "Regenerate with `m3net demo --seeds 0,1,2 --out m3net-demo-seeds --record "
              "benchmarks/demo_synthetic_cpu_$(date +%F).json && python -m m3net.readme_figures`."]
    return "\n".join(lines)


def _width(trained):
    """A trained head's widths as the table states them (m3net.model FewShotHead.widths)."""
    if trained is None:
        return "—"
    w = trained["widths"]
    text = f"d = {w['width']}" + (f" of C = {w['channels']}" if w["width"] != w["channels"] else "")
    return text + (f", d_k = {w['attention_dim']}" if "attention_dim" in w else "")


def _method(label, trained):
    """The table's name of an evaluated head: M3Net variants by their width."""
    if trained is None:
        return f"{head_name(label)} (parameter-free)"
    if label.startswith("m3net"):
        return f"M3Net (d = {trained['widths']['width']})"
    return head_name(label)


def _ranking(accuracy):
    ranked = sorted(accuracy.items(), key=lambda kv: -kv[1])
    return " > ".join(f"{name} {value:.1f}" for name, value in ranked)


def _short_sha(sha):
    return "unrecorded" if not sha else sha[:7] + ("-dirty" if sha.endswith("-dirty") else "")


def _seed_commits(record):
    """Where the seeds ran on other commits than the record was written on (demo --collect): each seed's."""
    commits = record.get("seed_code_versions") or {}
    if all(c["demo"] == c["cache"] == record["git_sha"] for c in commits.values()):
        return ""
    return " (per seed, the demo's commit / its cache's: " + ", ".join(
        f"{seed}: {_short_sha(c['demo'])} / {_short_sha(c['cache'])}" for seed, c in commits.items()) + ")"


def _mean_sd(mean, row, spec=".2f"):
    """"mean ± sd" over the seeds; the value alone from one seed (an sd of one value is no spread)."""
    return f"{mean:{spec}}" + (f" ± {row['sd']:.2f}" if row["seeds"] > 1 else "")


def _fused(shot_summary, head):
    """``head``'s fused accuracy (view y) in one seed's table."""
    return next(r["accuracy"] for r in shot_summary["results"] if r["head"] == head and r["view"] == "y")


def _comparison_header(columns, shots, reference):
    """The two header lines of a comparison table: ``columns``, then the accuracy at each shot, then each shot's
    paired difference against ``reference``."""
    titles = [*columns, *shots, *(f"− {reference} ({shot})" for shot in shots)]
    return ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]


def _at_the_cap(trained, names):
    """The sentence that says which trained heads were still improving when the episode cap ended them (their
    best.pt from the last validation): their accuracy is what the capped recipe reached, not its ceiling."""
    rising = []
    for label, runs in trained.items():
        capped = [run for run in runs.values()
                  if not run["stopped_early"] and run["best_episodes"] == run["episodes_trained"]]
        if capped:
            rising.append(f"{names.get(label, head_name(label))} in {len(capped)}/{len(runs)} seeds")
    if not rising:
        return "Every trained head had stopped improving before the episode cap (best.pt from an earlier validation)."
    return ("Still improving at the episode cap (best.pt from the last validation, so its accuracy is what the "
            "capped recipe reached, not the recipe's ceiling): " + ", ".join(rising) + ".")


def render_table1_synthetic(record, record_path):
    """The markdown of the table1-synthetic section from a ``demo --compare ... --preset reference`` record:
    every head's fused accuracy and its paired difference against M3Net, the width and the episodes each
    trained head trained, the ranking as it came out and every place a head is ahead of M3Net."""
    demo, seeds = record["config"], [str(seed) for seed in record["seeds"]]
    shots = list(record["over_seeds"])
    trained = {}  # label -> {seed: run_record}
    for seed in seeds:
        for label, info in (record["trained"].get(seed) or {}).items():
            trained.setdefault(label, {})[seed] = info
    first = {label: runs[min(runs)] for label, runs in trained.items()}
    reference = next(label for label in first if label.startswith("m3net"))  # the demo's own head, first trained
    accuracy = {shot: {r["head"]: r for r in record["over_seeds"][shot]["accuracy"] if r["view"] == "y"}
                for shot in shots}
    paired = {shot: {p["baseline"]: p for p in record["over_seeds"][shot]["m3net_minus"]} for shot in shots}
    norm = next(iter(record["per_seed"][seeds[0]].values()))["input_norm"]
    done = {"center": "centred", "standardize": "standardised"}.get(norm["input_norm"])
    inputs = (f"the cached maps {done} per channel with the training split's statistics ({norm['statistics']['rows']} "
              "training clips)" if done else "the raw cached maps")
    names = {label: _method(label, first.get(label)) for label in accuracy[shots[0]]}
    weights = ", ".join(sorted(set(record["weights_used"].values())))
    once = f" --compare-once {','.join(demo['compare_once'])}" if demo.get("compare_once") else ""
    command = (f"m3net demo --seeds {','.join(seeds)} --preset {demo['preset']} --compare {','.join(demo['compare'])}"
               f"{once} --train-episodes {demo['train_episodes']} --patience {demo['patience']} --val-every "
               f"{demo['val_every']} --val-episodes {demo['val_episodes']}")
    lines = [
        f"`{command}`: every trained head with its reference recipe (the table above; M3Net's is the paper's), "
        f"trained on the same cache for at most {demo['train_episodes']} episodes, validated every "
        f"{demo['val_every']} episodes (rounded up to whole optimizer steps) on {demo['val_episodes']} validation "
        f"episodes and stopped after {demo['patience']} validations without a better one; best.pt (the best "
        "validation) is scored. The parameter-free heads are scored from the cache. Every head sees the same "
        f"input: {inputs}. The generated benchmark of the default demo ({weights} ResNet-50 weights), "
        f"{demo['eval_episodes']} seeded {demo['way']}-way test episodes per seed and shot, one "
        f"query per class; measured on {record['device']} at git {_short_sha(record['git_sha'])}{_seed_commits(record)}"
        + (f" ({record['note']})" if record.get("note") else "") + f", record `{record_path}`. Fused accuracy in %, "
        f"mean ± sd over the seeds (a row with fewer seeds says so); paired difference against {names[reference]} "
        "on the same episodes, mean ± sd over seeds, and in how many seeds its 95% CI lies above / below zero.",
        "",
        *_comparison_header(["method", "width", "episodes trained / best.pt's, per seed"], shots, names[reference]),
    ]
    for label in accuracy[shots[0]]:
        runs = trained.get(label, {})
        episodes = ", ".join(f"{run['episodes_trained']}/{run['best_episodes']}"
                             for _, run in sorted(runs.items())) or "—"
        count = accuracy[shots[0]][label]["seeds"]
        cells = [_mean_sd(accuracy[shot][label]["mean"], accuracy[shot][label]) for shot in shots]
        for shot in shots:
            p = paired[shot].get(label)
            cells.append("—" if p is None else f"{_mean_sd(-p['mean'], p, '+.2f')} (CI > 0 in "
                         f"{p['seeds_with_ci_below_zero']}/{p['seeds']}, < 0 in {p['seeds_with_ci_above_zero']}/"
                         f"{p['seeds']})")
        seeds_note = f" (seed {', '.join(sorted(runs))} only)" if count < len(seeds) else ""
        lines.append(f"| {names[label]}{seeds_note} | {_width(first.get(label))} | {episodes} | " + " | ".join(cells)
                     + " |")
    lines.append("")
    for shot in shots:  # a row of fewer seeds is compared through its paired column, not ranked against means
        lines.append(f"Ranking at {shot} (mean fused accuracy over the {len(seeds)} seeds): " + _ranking(
            {names[label]: row["mean"] for label, row in accuracy[shot].items() if row["seeds"] == len(seeds)}) + ".")
    partial = [label for label, row in accuracy[shots[0]].items() if row["seeds"] < len(seeds)]
    for label in partial:
        on = sorted(trained[label])
        reference_there = {shot: sum(_fused(record["per_seed"][seed][shot], reference) for seed in on) / len(on)
                           for shot in shots}
        lines.append(f"{names[label]} ran on seed {', '.join(on)} only, so it is not ranked against the means: "
                     f"compare it through its paired column (same seeds, same episodes); there {names[reference]} "
                     "scored " + ", ".join(f"{reference_there[shot]:.2f} ({shot})" for shot in shots) + ".")
    ahead = [(shot, label, p) for shot in shots for label, p in paired[shot].items()
             if p["mean"] < 0 or p["seeds_with_ci_below_zero"] > 0]
    lines.append("")
    if ahead:
        lines.append("Ahead of " + names[reference] + ": " + "; ".join(
            f"{names[label]} at {shot} ({_mean_sd(-p['mean'], p, '+.2f')} points, its paired CI above zero in "
            f"{p['seeds_with_ci_below_zero']}/{p['seeds']} seeds)" for shot, label, p in ahead) + ".")
    else:
        lines.append(f"No head is ahead of {names[reference]} at any shot, in any seed.")
    lines += ["", _at_the_cap(trained, names)]
    if not any(label.startswith("m3net") and run["widths"]["width"] == run["widths"]["channels"]
               for label, run in first.items()):
        lines += ["", "M3Net at the paper's width (d = 2048, no projection) is not in this record: "
                  "`--compare-once m3net:proj_dim=0` adds it on the first seed."]
    wall = ", ".join(f"{seconds / 60:.0f}" for seconds in record["demo_wall_s"].values())
    lines += ["", f"Wall time of each seed's last demo run: {wall} min (a run that reuses an earlier run's clips, "
              "cache or trained heads is shorter than a fresh one; beside other work, so no speed figure). A "
              "generated benchmark with random-weight features tests how each method uses temporal order and "
              "alignment; it is no substitute for the paper's Gym99/Diving48 numbers."]
    return "\n".join(lines)


def render_cap_check(longer, longer_path, table1, table1_path):
    """The markdown of the table1-cap-check section: the heads of a ``demo --seeds S --preset reference`` record
    trained with a higher episode cap than the Table 1 record, beside their rows of the Table 1 record on the
    same seed (same benchmark, input and test episodes; only the cap differs), and the paired differences
    against M3Net at each cap."""
    seed = str(longer["seeds"][0])
    demo, shots = longer["config"], list(longer["over_seeds"])
    records = [(table1["config"]["train_episodes"], table1), (demo["train_episodes"], longer)]
    labels = list(longer["trained"][seed])
    reference = next(label for label in labels if label.startswith("m3net"))
    names = {label: _method(label, longer["trained"][seed][label]) for label in labels}
    lines = [
        f"Seed {seed} again with the episode cap raised from {records[0][0]} to {records[1][0]} for "
        f"{' and '.join(names[label] for label in labels)} (`m3net demo --seeds {seed} --preset {demo['preset']} "
        f"--compare {','.join(demo['compare'])} --train-episodes {demo['train_episodes']} --val-every "
        f"{demo['val_every']} --patience {demo['patience']}`; the same benchmark, input, recipes and test episodes "
        f"as the table above, only the cap differs), record `{longer_path}` (git {_short_sha(longer['git_sha'])}), "
        f"beside their rows of `{table1_path}` on seed {seed}. Fused accuracy in %, and the paired difference "
        f"against {names[reference]} at the same cap with its 95% CI. Whether a head was still improving shows in "
        f"where its best.pt came from (the episode of its best validation, on {demo['val_episodes']} validation "
        "episodes, against the episodes it trained).",
        "",
        *_comparison_header(["method", "cap", "episodes trained / best.pt's", "best validation"], shots,
                            names[reference]),
    ]
    for label in labels:
        for cap, record in records:
            run = record["trained"][seed][label]
            cells = [f"{_fused(record['per_seed'][seed][shot], label):.2f}" for shot in shots]
            for shot in shots:
                paired = {p["head"]: p for p in record["per_seed"][seed][shot]["paired"]}.get(label)
                cells.append("—" if paired is None else f"{paired['difference']:+.2f} ± {paired['ci95']:.2f}")
            lines.append(f"| {names[label]} | {cap} | {run['episodes_trained']}/{run['best_episodes']} | "
                         f"{run['best_val_acc']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(text, section, name="demo-results"):
    """``text`` with what lies between the ``name`` markers replaced by ``section``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"README: expected one {begin} ... {end} pair")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{section}\n{end}{tail}"


def _records(root, pattern):
    """The newest record per file name stem (date stripped), oldest stems first."""
    newest = {}
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", pattern))):
        newest[os.path.basename(path).rsplit("_", 1)[0]] = path
    records = []
    for path in newest.values():
        with open(path) as fh:
            records.append((os.path.relpath(path, root), json.load(fh)))
    return records


def _source(path, record):
    load = record.get("load_average_1min") or 0
    return f"`{path}` ({record['device']}, git {record['git_sha'][:7]}, load {load:.1f})"


def _rate(value):
    return f"{value:,.3g}" if value < 1000 else f"{value:.2e}"


def _dtw_pass(config):
    """The timed pass of a DTW record (records before the bwd pass hold a ``backward`` flag)."""
    return config.get("pass") or ("fwd+bwd" if config.get("backward") else "fwd")


def _dtw_groups(record):
    """{(pairs, n, m): {implementation: row}}; older records hold one size and pairs in their config."""
    cfg, groups = record["config"], {}
    for row in record["rows"]:
        key = (row.get("pairs", cfg["pairs"]), row.get("n", cfg.get("n")), row.get("m", cfg.get("m")))
        groups.setdefault(key, {})[row["implementation"]] = row
    return groups


def _dtw_cell(name, row):
    if not row.get("pairs_per_s"):
        return "—"
    # Records before issue #23 timed pysdtw's SoftDTW module (its wrapper); later ones its forward kernel alone.
    wrapper = name == "pysdtw" and "kernel alone" not in row.get("note", "")
    return _rate(row["pairs_per_s"]) + (" (its wrapper)" if wrapper else "")


def _dtw_table(records):
    if not records:
        return []
    names = list(dict.fromkeys(r["implementation"] for _, record in records for r in record["rows"]))
    lines = ["**DTW** (`m3net bench-dtw`): pairs/s per implementation; the Triton rows' % of the bandwidth floor of "
             "the timed pass (`m3net.bench.dtw.floor_bytes_per_pair`: 260 B per pair forward, 516 B backward, 776 B "
             "forward + backward at 8×8 fp32) against the GPU's datasheet bandwidth", "",
             "| mode | pass | pairs | T | " + " | ".join(names) + " | triton % of floor | source |",
             "|---|---|---|---|" + "---|" * (len(names) + 2)]
    for path, record in records:
        cfg = record["config"]
        for (pairs, n, m), rows in _dtw_groups(record).items():
            cells = [_dtw_cell(name, rows.get(name, {})) for name in names]
            floor = rows.get("triton", {}).get("pct_of_floor")
            lines.append(f"| {cfg['mode']} | {_dtw_pass(cfg)} | {pairs} | {n}×{m} | " + " | ".join(cells)
                         + f" | {f'{floor:.0f}%' if floor else '—'} | {_source(path, record)} |")
    return lines + [""]


def _matcher_table(records):
    if not records:
        return []
    lines = ["**DTW matchers end to end** (`m3net bench-dtw --matchers`, forward): pairs/s and time over one plain "
             "`dtw` forward of the same pairs", "", "| T | pairs | call | pairs/s | × plain fwd | source |",
             "|---|---|---|---|---|---|"]
    for path, record in records:
        for row in record["rows"]:
            rate = _rate(row["pairs_per_s"]) if row.get("pairs_per_s") else "—"
            ratio = f"{row['x_plain_fwd']:.2f}" if row.get("x_plain_fwd") else "—"
            lines.append(f"| {row['n']} | {row['pairs']} | {row['implementation']} | {rate} | {ratio} | "
                         f"{_source(path, record)} |")
    return lines + [""]


def render_benchmarks(root):
    """Markdown tables of the committed CPU/GPU benchmark records under benchmarks/ (without markers)."""
    lines = []
    dtw = _records(root, "bench_dtw_*.json")
    lines += _dtw_table([(path, r) for path, r in dtw if r["benchmark"] == "dtw"])
    lines += _matcher_table([(path, r) for path, r in dtw if r["benchmark"] == "dtw_matchers"])
    for pattern, title, columns in (
            ("bench_extract_*.json", "**Extraction** (`m3net bench-extract`)",
             (("stage", "stage", str), ("clips/s", "clips_per_s", "{:.2f}".format),
              ("frames/s", "frames_per_s", "{:.1f}".format), ("% of backbone", "pct_of_backbone", "{:.0f}".format))),
            ("bench_train_*.json", "**Head stage** (`m3net bench-train`, 5-way 1-shot)",
             (("phase", "phase", str), ("queries/class", "queries_per_class", str),
              ("episodes/s", "episodes_per_s", "{:.2f}".format))),
            ("bench_finetune_*.json", "**Finetune** (`m3net bench-finetune`, decoding excluded)",
             (("shot", "shot", str), ("checkpointing", "checkpointing", str), ("images", "images_per_episode", str),
              ("episodes/s", "episodes_per_s", "{:.3f}".format), ("peak GPU MiB", "peak_gpu_mib", str))),
            ("bench_input_*.json", "**Finetune input path** (`m3net bench-input`, one core: finetune's episode "
             "reader on the same episodes from mp4 clips and from `m3net frames` folders)",
             (("source", "source", str), ("resolution", "resolution", str), ("frames/clip", "clip_frames", str),
              ("mp4 frames/s", "mp4_frames_per_s", "{:.1f}".format),
              ("frame folders frames/s", "frames_frames_per_s", "{:.1f}".format), ("×", "speedup", "{:.1f}".format),
              ("`m3net frames` frames/s", "decode_once_frames_per_s", "{:.1f}".format),
              ("KiB/frame", "jpeg_bytes_per_frame", lambda b: f"{b / 1024:.1f}"),
              ("mean abs diff (grey levels)", "mean_abs_pixel_diff", "{:.2f}".format))),
            ("bench_predict_*.json", "**Prediction** (`m3net bench-predict`: `m3net.FewShotClassifier`, what "
             "`m3net predict` runs, with the support set fitted once)",
             (("stage", "stage", str), ("clips", "clips", str), ("clips/s", "clips_per_s", "{:.2f}".format))),
            ("bench_residency_*.json", "**Feature residency** (`m3net bench-residency`)",
             (("features", "residency", str), ("cache GiB", "cache_gib", str),
              ("limit GiB", "memory_limit_gib", str), ("train ep/s", "train_episodes_per_s", "{:.2f}".format),
              ("vs memory", "train_vs_memory", "{:.0%}".format),
              ("evaluate ep/s incl. load", "eval_episodes_per_s_incl_load", "{:.2f}".format),
              ("vs memory", "eval_vs_memory", "{:.0%}".format)))):
        records = _records(root, pattern)
        if not records:
            continue
        lines += [title, "", "| what | " + " | ".join(c[0] for c in columns) + " | source |",
                  "|---|" + "---|" * (len(columns) + 1)]
        for path, record in records:
            what = record["config"].get("head", record["benchmark"])
            options = record["config"].get("head_options") or {}
            what += "".join(f" {k}={v}" for k, v in options.items())
            for row in record["rows"]:
                cells = [fmt(row[key]) if row.get(key) not in (None, "") else "—" for _, key, fmt in columns]
                lines.append(f"| {what} | " + " | ".join(cells) + f" | {_source(path, record)} |")
        lines.append("")
    return "\n".join(lines).rstrip()



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
    """The README's settings table (markdown): paper value, m3net default, --preset paper, and why."""
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
    """The README's reference-recipe table (markdown): how each trained head's own code trains it, the values
    `--preset reference` sets, and where each comes from."""
    from m3net.train.presets import RECIPES

    lines = ["| head | reference | optimizer | lr | momentum | weight decay | episodes per step | queries per class | "
             "lr schedule | where the values are set |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in RECIPES:
        momentum = f"{r.momentum:g}" if r.optimizer == "sgd" else "—"
        lines.append(f"| {METHOD_NAMES[r.head]} (`{r.head}`) | {r.reference} | {r.optimizer} | {r.lr:g} | {momentum} | "
                     f"{r.weight_decay:g} | {r.accumulate} | {r.queries} | {_schedule(r)} | {r.source} |")
    return "\n".join(lines)


def render_synthetic_validation(root):
    """The synthetic-validation section: the newest validator record (m3net/data/synthetic_validate.py), the
    mean over its benchmark seeds with each seed's value beside it."""
    record, path = _load_latest(root, VALIDATION_PATTERN)
    config, split = record["config"], record["split"]
    per_seed = record["per_seed"]
    seeds = list(per_seed)
    names = {"prototype": "mean-pooled prototype", "diagonal": "diagonal (frame t to t)", "dtw": "hard DTW (cosine)"}
    rows = [(key.replace("5way_", "5-way ").replace("shot", "-shot"), key)
            for key in ("5way_1shot", "5way_5shot") if key in record]
    rows.append(("order-only pairs, 2-way 1-shot", "order_only_pairs_2way_1shot"))

    def cell(key, method):
        values = ", ".join(f"{per_seed[seed][key][method]:.2f}" for seed in seeds)
        return f"{record[key][method]:.2f}" + (f" ({values})" if len(seeds) > 1 else "")

    types = record["subactions"]
    # The record keeps the command as run (with that machine's paths); the README shows its shape.
    command = (f"python -m m3net.data.synthetic_validate --out BENCH --seeds {','.join(seeds)} "
               f"--tempo {config['tempo']} --episodes {record['episodes']}")
    spread = "mean over the seeds, each seed's value in brackets" if len(seeds) > 1 else "one benchmark"
    lines = [f"`{command}` (generator version {record['generator_version']}, tempo {config['tempo']}, "
             f"benchmark seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: those of `m3net demo --seeds`; "
             f"random-weight ResNet-50, globally pooled frames; git {_short_sha(record['code_version'])}; record "
             f"`{path}`). "
             f"Single frames under nuisance, leave-one-out 1-NN: sub-action types {types['type_1nn']:.2f} (chance "
             f"{types['type_chance']:.2f}), the two variants of a type {types['variant_1nn']:.2f}. The {split} "
             f"split's classes, {record['episodes']} seeded episodes each (8 frames per clip; {spread}):", "",
             "| episodes | " + " | ".join(names.values()) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(key, m) for m in names) + " |" for label, key in rows]
    held = record["targets_per_seed"]

    def verdict(name, value):
        text = "met" if value else "not met" if value is False else "n/a"
        if len(seeds) > 1 and value is not None:
            text += f" (on the mean; in {sum(bool(h[name]) for h in held.values())} of {len(seeds)} seeds alone)"
        return f"{name}: {text}"

    gap = ", ".join(f"{100 * (per_seed[s]['5way_1shot']['dtw'] - per_seed[s]['5way_1shot']['diagonal']):.1f}"
                    for s in seeds) if "5way_1shot" in record else None
    lines += ["", "Targets: " + "; ".join(verdict(name, value) for name, value in record["targets"].items()) + "."
              + (f" Hard DTW minus the diagonal at 5-way 1-shot, per seed: {gap} points." if gap else "")]
    return "\n".join(lines)


def render_table1_cap_check(root):
    """The table1-cap-check section from the newest records of both patterns."""
    if not glob.glob(os.path.join(root, CAP_CHECK_PATTERN)):
        return "No record yet of a seed trained with a higher episode cap."
    return render_cap_check(*_load_latest(root, CAP_CHECK_PATTERN), *_load_latest(root, TABLE1_PATTERN))


def expected_readme(root):
    """(current README text, README text with every generated section rebuilt from its source)."""

    with open(os.path.join(root, "README.md")) as fh:
        current = fh.read()
    expected = replace_section(current, render_demo_results(*_load_latest(root, RECORD_PATTERN)))
    if glob.glob(os.path.join(root, TABLE1_PATTERN)):
        table1 = render_table1_synthetic(*_load_latest(root, TABLE1_PATTERN))
    else:
        table1 = (f"No record yet in which every head had the same input and its own recipe: `{TABLE1_COMMAND}` "
                  "writes it (hours on a 2-core CPU), then `python -m m3net.readme_figures`.")
    expected = replace_section(expected, table1, "table1-synthetic")
    expected = replace_section(expected, render_table1_cap_check(root), "table1-cap-check")
    expected = replace_section(expected, render_benchmarks(root), "benchmark-results")
    expected = replace_section(expected, render_frames_footprint(root), "frames-footprint")
    expected = replace_section(expected, render_paper_table1(), "paper-table1")
    expected = replace_section(expected, render_paper_ablations(), "paper-ablations")
    expected = replace_section(expected, render_extract_splits(), "extract-splits")
    expected = replace_section(expected, reference_table(), "reference-recipes")
    expected = replace_section(expected, render_synthetic_validation(root), "synthetic-validation")
    return current, replace_section(expected, settings_table(), "settings")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (README.md, benchmarks/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    args = parser.parse_args(argv)
    current, expected = expected_readme(args.root)
    if args.check:
        if current != expected:
            print("README.md's generated sections differ from their sources: run `python -m m3net.readme_figures`")
            return 1
        return 0
    with open(os.path.join(args.root, "README.md"), "w") as fh:
        fh.write(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
