"""The README's demo numbers are generated from the committed record and must match it."""
import copy
import json
import os

import pytest

from m3net.demo import aggregate, parse_seeds, seed_checks
from m3net.errors import ConfigError
from m3net.paper import ABLATIONS
from m3net.readme_figures import (
    BEGIN,
    END,
    expected_readme,
    latest_record,
    render_demo_results,
    render_paper_ablations,
    replace_section,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_demo_section_matches_the_committed_record():
    current, expected = expected_readme(ROOT)
    assert current == expected, "README.md is stale: run `python -m m3net.readme_figures`"


def test_readme_section_changes_when_the_record_does():
    path = latest_record(ROOT)
    with open(os.path.join(ROOT, path)) as fh:
        record = json.load(fh)
    changed = copy.deepcopy(record)
    changed["over_seeds"]["1-shot"]["accuracy"][0]["mean"] += 1.0
    assert render_demo_results(changed, path) != render_demo_results(record, path)


def test_replace_section_needs_one_marker_pair():
    assert replace_section(f"a\n{BEGIN}\nold\n{END}\nb", "new") == f"a\n{BEGIN}\nnew\n{END}\nb"
    with pytest.raises(ConfigError):
        replace_section("no markers", "new")


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
    over = aggregate({"0": {"1-shot": run}, "1": {"1-shot": weak}})["1-shot"]
    assert over["m3net_minus"] == [{"baseline": "otam", "mean": 3.5, "sd": pytest.approx(3.5355, abs=1e-4),
                                    "seeds_with_ci_above_zero": 1}]
    assert over["seeds_y_at_least_best_view"] == 1


def test_parse_seeds():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("0,x", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_readme_ablations_list_every_reproduce_variant():
    section = render_paper_ablations()
    assert all(f"| `{name}` |" in section for name in ABLATIONS)
    assert ("| `t3-cm-all` | 3 | `cm_features=ifce,ivce,iece` `use_im=false` `use_tm=false` | 72.05 | 85.40 | — |"
            in section)
    assert "| Y2 70.21, Y3 68.51 |" in section
