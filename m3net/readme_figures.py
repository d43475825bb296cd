"""Writes the README's demo-results section from the committed demo record, so its numbers cannot go stale.

    python -m m3net.readme_figures            # rewrite README.md between the demo-results markers
    python -m m3net.readme_figures --check    # exit 1 when README.md and the record disagree

The record is the newest ``benchmarks/demo_synthetic_cpu_<date>.json`` (written by
``m3net demo --seeds 0,1,2 --record ...``); tests/test_readme_figures.py runs the check.
"""
import argparse
import glob
import json
import os
import sys

from m3net.errors import ConfigError

BEGIN, END = "<!-- demo-results:begin -->", "<!-- demo-results:end -->"
RECORD_PATTERN = os.path.join("benchmarks", "demo_synthetic_cpu_*.json")
HEAD_NAMES = {"protonet": "ProtoNet", "tsn-cosine": "TSN + cosine", "otam": "OTAM"}
VIEW_NAMES = {"y1": "Y1 (I-M)", "y2": "Y2 (C-M)", "y3": "Y3 (T-M)", "y": "Y (fused)"}


def latest_record(root):
    """Path (relative to ``root``) of the newest demo record; ISO dates sort by name."""
    found = sorted(glob.glob(os.path.join(root, RECORD_PATTERN)))
    if not found:
        raise ConfigError(f"no demo record {RECORD_PATTERN} under {root}: run `m3net demo --seeds 0,1,2 --record ...`")
    return os.path.relpath(found[-1], root)


def head_name(label):
    return "M3Net" if label.startswith("m3net") else HEAD_NAMES.get(label, label)


def render_demo_results(record, record_path):
    """The markdown of the demo-results section (without the markers)."""
    shots = list(record["over_seeds"])
    seeds = record["seeds"]
    demo = record["config"]
    synthetic = demo["synthetic"]
    classes = (synthetic["train_classes"], synthetic["val_classes"], synthetic["test_classes"])
    options = ", ".join(f"`{key}={value!r}`" for key, value in demo["head_options"].items())
    lines = [
        f"**`m3net demo`** (default settings: {sum(classes) * synthetic['clips_per_class']} generated clips of "
        f"{sum(classes)} classes ({'/'.join(map(str, classes))} train/val/test), "
        f"{' and '.join(sorted(set(record['weights_used'].values())))} ResNet-50 weights, the M3Net head trained "
        f"for {demo['train_episodes']} episodes at lr {demo['lr']:g} with the demo's head options {options}, then "
        f"scored with the baselines on the same seeded test episodes at {' and '.join(shots)}). The test classes "
        "come in families that share their sub-actions and differ only in their order (or one detail), so mean "
        "pooling is near chance. The options are not the paper's and real runs leave them at the paper's "
        "defaults: `proj_dim` learns a projection of the 2048 channels to d = 128 so the head trains in "
        "minutes on a CPU; `input_norm=\"standardize\"` standardises the channels with statistics of the "
        "training split, because random-weight ResNet frames are nearly collinear (cosine costs ~10⁻³ apart); "
        "`temperature_init=\"data\"` starts each view's τ at unit-spread logits instead of τ = 10 (on raw "
        "random features τ = 10 left I-M's softmax flat; once the inputs are standardised it matters little).",
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
        view = VIEW_NAMES.get(row["view"], row["view"]) if head_name(row["head"]) == "M3Net" else "Y"
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


def replace_section(text, section):
    """``text`` with what lies between the markers replaced by ``section``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"README: expected one {BEGIN} ... {END} pair")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{section}\n{END}{tail}"


def expected_readme(root):
    """(current README text, README text with the section regenerated from the newest record)."""
    record_path = latest_record(root)
    with open(os.path.join(root, record_path)) as fh:
        record = json.load(fh)
    with open(os.path.join(root, "README.md")) as fh:
        current = fh.read()
    return current, replace_section(current, render_demo_results(record, record_path))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (README.md, benchmarks/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    args = parser.parse_args(argv)
    current, expected = expected_readme(args.root)
    if args.check:
        if current != expected:
            print("README.md's demo results differ from the record: run `python -m m3net.readme_figures`")
            return 1
        return 0
    with open(os.path.join(args.root, "README.md"), "w") as fh:
        fh.write(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
