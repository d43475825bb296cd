"""The generated docs sections that report runs of the demo and of the benchmark's validator, each
from the newest record of its kind under benchmarks/ (tools/docs_sections.py puts them in the docs):

    demo-results          benchmarks/demo_synthetic_cpu_<date>.json (``m3net demo --seeds 0,1,2 --record ...``)
    table1-synthetic      benchmarks/table1_synthetic_cpu_<date>.json (TABLE1_COMMAND)
    table1-cap-check      benchmarks/table1_longer_cap_synthetic_cpu_<date>.json: a seed of it again with a
                          higher episode cap, beside its rows of the Table 1 record
    synthetic-validation  benchmarks/synthetic_validation_<date>.json (tools/validate_synthetic.py)
"""
import glob
import json
import os

from m3net.errors import ConfigError
from m3net.paper import METHOD_NAMES, VIEW_NAMES
from m3net.train.presets import RECIPES

RECORD_PATTERN = os.path.join("benchmarks", "demo_synthetic_cpu_*.json")
TABLE1_PATTERN = os.path.join("benchmarks", "table1_synthetic_cpu_*.json")
# A seed of the Table 1 run again with a higher episode cap for some heads (the table1-cap-check section).
CAP_CHECK_PATTERN = os.path.join("benchmarks", "table1_longer_cap_synthetic_cpu_*.json")
# The record of the table1-synthetic section: every Table 1 head, each with its reference recipe, on one input.
TABLE1_COMMAND = ("OMP_NUM_THREADS=1 m3net demo --seeds 0,1,2 --preset reference --compare trx,strm,hyrsm,pal "
                  "--compare-once m3net:proj_dim=0 --train-episodes 960 --val-every 160 --patience 3 "
                  "--out m3net-table1 --record benchmarks/table1_synthetic_cpu_$(date +%F).json")
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
              "benchmarks/demo_synthetic_cpu_$(date +%F).json && python tools/docs_sections.py`."]
    return "\n".join(lines)


def _width(trained):
    """A trained head's widths as the table states them (m3net.model FewShotHead.widths)."""
    if trained is None or trained["widths"] is None:  # parameter-free, or diverged before its first checkpoint
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


def _diverged(trained, names):
    """The sentence naming the trained heads a non-finite training loss stopped (the run keeps its last finite
    checkpoint; best.pt, if a validation came before, is what is scored), or None when none diverged."""
    stopped = []
    for label, runs in trained.items():
        hit = sorted((seed, run) for seed, run in runs.items() if run.get("diverged_at"))
        if hit:
            where = ", ".join(f"seed {seed} at episode {run['diverged_at']}, "
                              + (f"best.pt from episode {run['best_episodes']}" if run["best_episodes"] else
                                 "no best.pt, not scored") for seed, run in hit)
            stopped.append(f"{names.get(label, head_name(label))} in {len(hit)}/{len(runs)} seeds ({where})")
    if not stopped:
        return None
    return ("Diverged under its reference recipe (a non-finite training loss stopped the run; the demo went on "
            "with the other heads): " + "; ".join(stopped) + ".")


RECIPE_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "accumulate", "queries", "lr_step", "lr_gamma")


def _value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _recipe_changes(trained, names):
    """The sentence naming the heads whose recorded reference recipe differs from today's RECIPES (their rows show
    how the record trained them, not how --preset reference trains them now), or None when every one matches."""
    current = {recipe.head: recipe for recipe in RECIPES}
    changed = []
    for label, runs in trained.items():
        run = runs[min(runs)]
        recipe = current.get(run.get("head"))
        if recipe is None or run.get("preset") != "reference" or "recipe" not in run:
            continue
        differences = [f"{field} {_value(getattr(recipe, field))} (recorded {_value(run['recipe'][field])})"
                       for field in RECIPE_FIELDS if run["recipe"].get(field) != getattr(recipe, field)]
        recorded = run.get("head_options") or {}
        differences += [f"{name}={value} (recorded {recorded.get(name, 'the head default')})"
                        for name, value in recipe.head_options.items() if recorded.get(name) != value]
        if differences:
            changed.append(f"{names.get(label, head_name(label))}: " + ", ".join(differences))
    if not changed:
        return None
    return ("Recorded before the reference recipe changed, so these rows show the earlier recipe, not what "
            "`--preset reference` trains today: " + "; ".join(changed) + ". Re-running the command above replaces "
            "them.")


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
        # the link is relative to docs/, where the section is (tests/test_docs_sections.py checks the links)
        f"`{command}`: every trained head with its reference recipe ([the recipes]"
        "(reproducing.md#each-heads-reference-recipe); M3Net's is the paper's), "
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
    def episodes(runs):
        return ", ".join(f"{run['episodes_trained']}/{run['best_episodes'] or '—'}"
                         for _, run in sorted(runs.items())) or "—"

    for label in accuracy[shots[0]]:
        runs = trained.get(label, {})
        count = accuracy[shots[0]][label]["seeds"]
        cells = [_mean_sd(accuracy[shot][label]["mean"], accuracy[shot][label]) for shot in shots]
        for shot in shots:
            p = paired[shot].get(label)
            cells.append("—" if p is None else f"{_mean_sd(-p['mean'], p, '+.2f')} (CI > 0 in "
                         f"{p['seeds_with_ci_below_zero']}/{p['seeds']}, < 0 in {p['seeds_with_ci_above_zero']}/"
                         f"{p['seeds']})")
        seeds_note = f" (seed {', '.join(sorted(runs))} only)" if count < len(seeds) else ""
        lines.append(f"| {names[label]}{seeds_note} | {_width(first.get(label))} | {episodes(runs)} | "
                     + " | ".join(cells) + " |")
    for label in (label for label in trained if label not in accuracy[shots[0]]):  # no best.pt in any seed
        names[label] = head_name(label)
        lines.append(f"| {names[label]} | {_width(first[label])} | {episodes(trained[label])} | "
                     + " | ".join(["not scored"] * len(shots) + ["—"] * len(shots)) + " |")
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
    for sentence in (_diverged(trained, names), _recipe_changes(trained, names)):
        if sentence:
            lines += ["", sentence]
    if not any(label.startswith("m3net") and run["widths"] and run["widths"]["width"] == run["widths"]["channels"]
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
    trained = {label: {seed: longer["trained"][seed][label]} for label in labels}
    for sentence in (_diverged(trained, names), _recipe_changes(trained, names)):
        if sentence:
            lines += ["", sentence]
    return "\n".join(lines)



def render_synthetic_validation(root):
    """The synthetic-validation section: the newest validator record (tools/validate_synthetic.py), the
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
    # The record keeps the command as run (with that machine's paths); the docs show its shape.
    command = (f"python tools/validate_synthetic.py --out BENCH --seeds {','.join(seeds)} "
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


def render_demo_section(root):
    """The demo-results section from the newest demo record."""
    return render_demo_results(*_load_latest(root, RECORD_PATTERN))


def render_table1_section(root):
    """The table1-synthetic section from the newest Table 1 record, or the command that writes one."""
    if glob.glob(os.path.join(root, TABLE1_PATTERN)):
        return render_table1_synthetic(*_load_latest(root, TABLE1_PATTERN))
    return (f"No record yet in which every head had the same input and its own recipe: `{TABLE1_COMMAND}` "
            "writes it (hours on a 2-core CPU), then `python tools/docs_sections.py`.")
