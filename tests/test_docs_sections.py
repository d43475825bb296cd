"""The generated sections of the README and the docs (tools/docs_sections.py) match the committed records and the
package's tables; the docs' links lead somewhere; the README lists every command."""
import copy
import json
import os
import re

import pytest

from docs_reference import render_paper_ablations
from docs_results import RECIPE_FIELDS, latest_record, render_cap_check, render_demo_results, render_table1_synthetic
from docs_sections import DOCS, SECTIONS, expected_docs, main, replace_section
from m3net.config import parse_seeds
from m3net.demo import aggregate, seed_checks
from m3net.errors import ConfigError
from m3net.paper import ABLATIONS
from m3net.train.presets import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- demo-results:begin -->", "<!-- demo-results:end -->"


def test_every_generated_section_matches_its_sources():
    for path, (current, expected) in expected_docs(ROOT).items():
        assert current == expected, f"{path} is stale: run `python tools/docs_sections.py`"
    assert main(["--root", ROOT, "--check"]) == 0


def test_check_fails_on_a_stale_section_and_the_rewrite_restores_it(tmp_path):
    """A copy of the docs with one generated number changed: --check exits 1, the rewrite puts it back."""
    import shutil

    for path in DOCS:
        os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
        shutil.copy(os.path.join(ROOT, path), tmp_path / path)
    shutil.copytree(os.path.join(ROOT, "benchmarks"), tmp_path / "benchmarks")
    results = tmp_path / "docs" / "results.md"
    original = results.read_text(encoding="utf-8")
    # one digit of the demo table's fused accuracy changed, whatever the record says
    stale = re.sub(r"(\| M3Net \| Y \(fused\) \| )(\d)", lambda m: m[1] + str((int(m[2]) + 1) % 10), original,
                   count=1)
    results.write_text(stale, encoding="utf-8")
    assert results.read_text(encoding="utf-8") != original
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert results.read_text(encoding="utf-8") == original


def test_every_section_is_in_exactly_one_doc(tmp_path):
    for path in DOCS:
        os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
        (tmp_path / path).write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="demo-results in none"):
        expected_docs(str(tmp_path))
    (tmp_path / "README.md").write_text("<!-- no-such-section:begin -->\n<!-- no-such-section:end -->\n")
    with pytest.raises(ConfigError, match="no-such-section"):
        expected_docs(str(tmp_path))


def test_the_sections_are_spread_over_the_docs_as_the_readme_says():
    """The README keeps none of the long generated tables: the results in docs/results.md, the settings,
    recipes, sizes and the paper's numbers in docs/reproducing.md."""
    held = {path: set(re.findall(r"<!-- ([a-z0-9-]+):begin -->", open(os.path.join(ROOT, path), encoding="utf-8")
                                 .read())) for path in DOCS}
    assert held["README.md"] == set()
    assert held[os.path.join("docs", "results.md")] == {"demo-results", "table1-synthetic", "table1-cap-check",
                                                        "benchmark-results", "synthetic-validation"}
    assert held[os.path.join("docs", "reproducing.md")] == set(SECTIONS) - held[os.path.join("docs", "results.md")]


def _headings(text):
    """GitHub's anchors of a markdown file's headings."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in text.splitlines() if line.startswith("#") and " " in line}


def test_relative_links_between_the_docs_lead_to_a_file_and_heading():
    files = [*DOCS, *(os.path.join("docs", name) for name in ("api.md", "design.md", "contracts.md"))]
    links = 0
    for path in files:
        with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
            text = re.sub(r"```.*?```", "", fh.read(), flags=re.S)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if "://" in target:
                continue
            file, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file)) if file else \
                os.path.join(ROOT, path)
            assert os.path.isfile(linked), f"{path}: {target}"
            if anchor:
                with open(linked, encoding="utf-8") as fh:
                    assert anchor in _headings(fh.read()), f"{path}: {target}"
            links += 1
    assert links >= 8


def test_readme_lists_every_command_under_its_heading():
    from m3net.cli import main as cli

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    table = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    listed, heading = {}, None
    for line in table.splitlines():
        if line.startswith("### "):
            heading = line[4:]
        match = re.match(r"\| `m3net ([a-z0-9-]+)` \|", line)
        if match:
            listed.setdefault(heading, []).append(match.group(1))
    assert listed == {
        "Pipeline": ["demo", "make-synthetic", "frames", "extract", "cache-stats", "train-head", "finetune",
                     "evaluate", "predict", "reproduce"],
        "Inspection": ["dataset-info", "cache-info", "heads", "report"],
        "Benchmarks": ["bench-dtw", "bench-extract", "bench-input", "bench-train", "bench-residency",
                       "bench-finetune", "bench-predict"]}
    assert sorted(name for names in listed.values() for name in names) == sorted(cli.commands)


def test_readme_section_changes_when_the_record_does():
    path = latest_record(ROOT)
    with open(os.path.join(ROOT, path)) as fh:
        record = json.load(fh)
    changed = copy.deepcopy(record)
    changed["over_seeds"]["1-shot"]["accuracy"][0]["mean"] += 1.0
    assert render_demo_results(changed, path) != render_demo_results(record, path)


def test_replace_section_needs_one_marker_pair():
    assert replace_section(f"a\n{BEGIN}\nold\n{END}\nb", "new", "demo-results") == f"a\n{BEGIN}\nnew\n{END}\nb"
    with pytest.raises(ConfigError):
        replace_section("no markers", "new", "demo-results")


def _run(m3net_y, otam_y, otam_ci):
    rows = [{"head": "m3net (m3net)", "view": v, "accuracy": a} for v, a in (("y1", 40), ("y2", 45), ("y", m3net_y))]
    rows.append({"head": "otam", "view": "y", "accuracy": otam_y})
    run = {"results": rows, "paired": [{"head": "otam", "difference": otam_y - m3net_y, "ci95": otam_ci}]}
    return {**run, "checks": seed_checks(run)}


def test_seed_checks_and_aggregate():
    run = _run(m3net_y=50, otam_y=44, otam_ci=2)
    assert run["checks"]["leads_every_baseline"] and run["checks"]["y_at_least_best_view"]
    weak = _run(m3net_y=44, otam_y=43, otam_ci=2)  # ahead, but the CI reaches below zero; Y < Y2
    assert not weak["checks"]["leads_every_baseline"] and not weak["checks"]["y_at_least_best_view"]
    behind = _run(m3net_y=40, otam_y=45, otam_ci=2)  # OTAM ahead of M3Net, its CI above zero
    assert behind["checks"]["ci_margin_under"]["otam"] == 3
    over = aggregate({"0": {"1-shot": run}, "1": {"1-shot": weak}, "2": {"1-shot": behind}})["1-shot"]
    assert over["m3net_minus"] == [{"baseline": "otam", "mean": pytest.approx(2 / 3), "seeds": 3,
                                    "sd": pytest.approx(5.5076, abs=1e-4), "seeds_with_ci_above_zero": 1,
                                    "seeds_with_ci_below_zero": 1}]
    assert over["seeds_y_at_least_best_view"] == 1


def test_parse_seeds():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("0,x", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_table1_section_compares_a_head_of_the_first_seed_only_through_its_paired_column():
    """--compare-once m3net:proj_dim=0 trains the paper's width on seed 0 only: its row shows seed 0's values
    (no ± of one value), it is not ranked against means over every seed, and the section gives the reference
    head's accuracy on that seed beside it."""
    wide = "m3net (m3net-proj_dim-0)"
    per_seed = {"0": {"1-shot": _compare_seed(80, 60, 40), "5-shot": _compare_seed(90, 70, 50)},
                "1": {"1-shot": _compare_seed(84, 58, 41), "5-shot": _compare_seed(92, 72, 52)}}
    for shot, y in (("1-shot", 77.0), ("5-shot", 93.0)):  # the wide head on seed 0: −3 and +3 against d = 128
        run = per_seed["0"][shot]
        run["results"].append({"head": wide, "view": "y", "accuracy": y})
        run["paired"].append({"head": wide, "difference": y - (80 if shot == "1-shot" else 90), "ci95": 1.0})
        run["checks"] = seed_checks(run)
    trained = {"head": "m3net", "widths": {"channels": 2048, "width": 128}, "episodes_trained": 800,
               "best_episodes": 640, "stopped_early": True}
    peer = {"head": "trx", "widths": {"channels": 2048, "width": 2048, "attention_dim": 1152},
            "episodes_trained": 960, "best_episodes": 800, "stopped_early": False}
    record = {"config": {"preset": "reference", "compare": ["trx"], "compare_once": ["m3net:proj_dim=0"],
                         "train_episodes": 960, "patience": 3, "val_every": 160, "val_episodes": 50,
                         "eval_episodes": 600, "way": 5},
              "seeds": [0, 1], "per_seed": per_seed, "over_seeds": aggregate(per_seed),
              "trained": {"0": {"m3net (m3net)": trained, "trx (trx)": peer,
                                wide: {**trained, "widths": {"channels": 2048, "width": 2048}}},
                          "1": {"m3net (m3net)": trained, "trx (trx)": peer}},
              "weights_used": {"0": "random", "1": "random"}, "device": "CPU", "git_sha": "abcdef0",
              "demo_wall_s": {"0": 600, "1": 660}}
    text = render_table1_synthetic(record, "benchmarks/t.json")
    assert "--compare-once m3net:proj_dim=0 " in text
    assert ("| M3Net (d = 2048) (seed 0 only) | d = 2048 | 800/640 | 77.00 | 93.00 | -3.00 (CI > 0 in 0/1, < 0 in "
            "1/1) | +3.00 (CI > 0 in 1/1, < 0 in 0/1) |") in text
    assert ("Ranking at 5-shot (mean fused accuracy over the 2 seeds): M3Net (d = 128) 91.0 > TRX 71.0 > "
            "OTAM (parameter-free) 51.0.") in text
    assert ("M3Net (d = 2048) ran on seed 0 only, so it is not ranked against the means: compare it through its "
            "paired column (same seeds, same episodes); there M3Net (d = 128) scored 80.00 (1-shot), 90.00 "
            "(5-shot).") in text
    assert "Ahead of M3Net (d = 128): M3Net (d = 2048) at 5-shot (+3.00 points" in text
    assert "is not in this record" not in text
    assert "Diverged" not in text
    # a peer whose loss turned non-finite: named with the episode and the best.pt that was scored
    record["trained"]["1"]["trx (trx)"] = {**peer, "diverged_at": 170, "episodes_trained": 160, "best_episodes": 160,
                                           "stopped_early": True}
    # and one that diverged before its first validation in every seed: a row that says it was not scored
    for seed in ("0", "1"):
        record["trained"][seed]["strm (strm)"] = {"head": "strm", "widths": None, "diverged_at": 49,
                                                  "episodes_trained": 0, "best_episodes": None, "stopped_early": True}
    text = render_table1_synthetic(record, "benchmarks/t.json")
    assert ("Diverged under its reference recipe (a non-finite training loss stopped the run; the demo went on with "
            "the other heads): TRX in 1/2 seeds (seed 1 at episode 170, best.pt from episode 160); STRM in 2/2 seeds "
            "(seed 0 at episode 49, no best.pt, not scored, seed 1 at episode 49, no best.pt, not scored).") in text
    assert "| STRM | — | 0/—, 0/— | not scored | not scored | — | — |" in text
    assert "| TRX | d = 2048, d_k = 1152 | 960/800, 160/160 |" in text


def test_cap_check_section_sets_each_head_beside_its_table1_row_of_the_same_seed():
    """A seed trained again with a higher cap: each head's row at either cap, from either record, on that seed
    (not the Table 1 record's mean over seeds), its paired difference against M3Net at the same cap."""
    def record(cap, m3net_y, trx_y, trx_best, seeds):
        per_seed = {s: {"1-shot": _compare_seed(m3net_y + int(s), trx_y, 40, ci=1.5),
                        "5-shot": _compare_seed(m3net_y + 10, trx_y + 20, 50)} for s in seeds}
        trained = {"m3net (m3net)": {"head": "m3net", "widths": {"channels": 2048, "width": 128},
                                     "episodes_trained": cap, "best_episodes": cap // 2, "stopped_early": False,
                                     "best_val_acc": 80.0},
                   "trx (trx)": {"head": "trx", "widths": {"channels": 2048, "width": 2048, "attention_dim": 1152},
                                 "episodes_trained": cap, "best_episodes": trx_best, "stopped_early": False,
                                 "best_val_acc": 50.0}}
        return {"config": {"preset": "reference", "compare": ["trx"], "train_episodes": cap, "val_every": 160,
                           "patience": 3, "val_episodes": 50}, "seeds": [int(s) for s in seeds], "per_seed": per_seed,
                "over_seeds": aggregate(per_seed), "trained": {s: trained for s in seeds}, "git_sha": "abcdef0"}

    table1 = record(960, 80, 50, 960, ("0", "1", "2"))
    longer = record(3840, 82, 60, 2560, ("0",))
    text = render_cap_check(longer, "benchmarks/longer.json", table1, "benchmarks/t1.json")
    assert "Seed 0 again with the episode cap raised from 960 to 3840 for M3Net (d = 128) and TRX" in text
    assert "| TRX | 960 | 960/960 | 50.0 | 50.00 | 70.00 | -30.00 ± 1.50 | -20.00 ± 1.00 |" in text
    assert "| TRX | 3840 | 3840/2560 | 50.0 | 60.00 | 80.00 | -22.00 ± 1.50 | -12.00 ± 1.00 |" in text
    assert "| M3Net (d = 128) | 3840 | 3840/1920 | 80.0 | 82.00 | 92.00 | — | — |" in text
    assert "the episode of its best validation, on 50 validation episodes" in text
    assert "Diverged" not in text
    longer["trained"]["0"]["trx (trx)"].update(diverged_at=337, episodes_trained=320, best_episodes=160)
    assert ("Diverged under its reference recipe (a non-finite training loss stopped the run; the demo went on with "
            "the other heads): TRX in 1/1 seeds (seed 0 at episode 337, best.pt from episode 160).") in \
        render_cap_check(longer, "benchmarks/longer.json", table1, "benchmarks/t1.json")


def test_readme_ablations_list_every_reproduce_variant():
    section = render_paper_ablations()
    assert all(f"| `{name}` |" in section for name in ABLATIONS)
    assert ("| `t3-cm-all` | 3 | `cm_features=ifce,ivce,iece` `use_im=false` `use_tm=false` | 72.05 | 85.40 | — |"
            in section)
    assert "| Y2 70.21, Y3 68.51 |" in section


def _compare_seed(m3net_y, trx_y, otam_y, ci=1.0):
    rows = [{"head": "m3net (m3net)", "view": v, "accuracy": a} for v, a in (("y1", m3net_y - 5), ("y", m3net_y))]
    rows += [{"head": "trx (trx)", "view": "y", "accuracy": trx_y}, {"head": "otam", "view": "y", "accuracy": otam_y}]
    run = {"results": rows, "paired": [{"head": h, "difference": y - m3net_y, "ci95": ci}
                                       for h, y in (("trx (trx)", trx_y), ("otam", otam_y))],
           "input_norm": {"input_norm": "standardize", "statistics": {"rows": 144}}}
    return {**run, "checks": seed_checks(run)}


def test_table1_section_states_the_ranking_and_where_a_peer_is_ahead():
    per_seed = {"0": {"1-shot": _compare_seed(80, 60, 40), "5-shot": _compare_seed(90, 93, 50)},
                "1": {"1-shot": _compare_seed(82, 58, 41), "5-shot": _compare_seed(91, 92.5, 52)}}
    trained = {"head": "m3net", "widths": {"channels": 2048, "width": 128}, "episodes_trained": 800,
               "best_episodes": 640, "stopped_early": True}
    peer = {"head": "trx", "widths": {"channels": 2048, "width": 2048, "attention_dim": 1152},
            "episodes_trained": 960, "best_episodes": 960, "stopped_early": False}
    record = {"config": {"preset": "reference", "compare": ["trx"], "compare_once": [], "train_episodes": 960,
                         "patience": 3, "val_every": 160, "val_episodes": 50, "eval_episodes": 600, "way": 5},
              "seeds": [0, 1], "per_seed": per_seed, "over_seeds": aggregate(per_seed),
              "trained": {s: {"m3net (m3net)": trained, "trx (trx)": peer} for s in ("0", "1")},
              "weights_used": {"0": "random", "1": "random"}, "device": "CPU", "git_sha": "abcdef0",
              "demo_wall_s": {"0": 600, "1": 660}}
    text = render_table1_synthetic(record, "benchmarks/t.json")
    assert "| M3Net (d = 128) | d = 128 of C = 2048 | 800/640, 800/640 | 81.00 ± 1.41 | 90.50 ± 0.71 | — | — |" in text
    assert "| TRX | d = 2048, d_k = 1152 | 960/960, 960/960 |" in text
    assert ("Ranking at 5-shot (mean fused accuracy over the 2 seeds): TRX 92.8 > M3Net (d = 128) 90.5 > "
            "OTAM (parameter-free) 51.0." in text)
    assert ("Ahead of M3Net (d = 128): TRX at 5-shot (+2.25 ± 1.06 points, its paired CI above zero in 2/2 seeds)"
            in text)
    assert "standardised per channel with the training split's statistics (144 training clips)" in text
    assert "| -22.00 ± 2.83 (CI > 0 in 0/2, < 0 in 2/2) |" in text  # TRX − M3Net at 1-shot
    # TRX's best validation was its last one at the cap, M3Net stopped on --patience
    assert "not the recipe's ceiling): TRX in 2/2 seeds." in text
    assert "M3Net at the paper's width (d = 2048, no projection) is not in this record" in text
    assert "fair" not in text


def test_table1_section_names_the_heads_recorded_under_an_earlier_reference_recipe():
    """A record made before a reference recipe changed (issue 30: TRX's summed loss) says so, per head and value;
    a record made with today's recipes says nothing."""
    recipes = {recipe.head: recipe for recipe in RECIPES}

    def run(head, **changes):
        recipe = recipes[head]
        return {"head": head, "preset": "reference", "widths": {"channels": 2048, "width": 2048},
                "episodes_trained": 960, "best_episodes": 800, "stopped_early": False,
                "head_options": dict(recipe.head_options),
                "recipe": {field: getattr(recipe, field) for field in RECIPE_FIELDS}, **changes}

    per_seed = {"0": {"1-shot": _compare_seed(80, 60, 40), "5-shot": _compare_seed(90, 70, 50)}}
    record = {"config": {"preset": "reference", "compare": ["trx"], "compare_once": [], "train_episodes": 960,
                         "patience": 3, "val_every": 160, "val_episodes": 50, "eval_episodes": 600, "way": 5},
              "seeds": [0], "per_seed": per_seed, "over_seeds": aggregate(per_seed),
              "trained": {"0": {"m3net (m3net)": run("m3net"), "trx (trx)": run("trx")}},
              "weights_used": {"0": "random"}, "device": "CPU", "git_sha": "abcdef0", "demo_wall_s": {"0": 600}}
    assert "Recorded before the reference recipe changed" not in render_table1_synthetic(record, "t.json")
    old = run("trx", head_options={})
    old["recipe"]["lr"] = 0.01
    record["trained"]["0"]["trx (trx)"] = old
    assert ("Recorded before the reference recipe changed, so these rows show the earlier recipe, not what "
            "`--preset reference` trains today: TRX: lr 0.001 (recorded 0.01), loss_reduction=sum (recorded the "
            "head default).") in render_table1_synthetic(record, "t.json")
