"""`m3net reproduce` end to end on a tiny generated benchmark (random weights, 2 frames, 32x32, CPU)."""
import csv
import json

import pytest
import torch
from click.testing import CliRunner

from m3net.cli import main
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.errors import ConfigError
from m3net.model import build_head
from m3net.paper import ABLATIONS, ablation_cell, table1_cell
from m3net.reproduce import ReproduceConfig, beside_paper, format_row, write_table


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn") / "syn")
    generate_synthetic(root, SyntheticConfig(train_classes=5, val_classes=5, test_classes=5, clips_per_class=6,
                                             frames=8, size=32, family_size=3), progress=False)
    return root


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:--weights random")
def test_reproduce_runs_the_three_steps_and_a_rerun_continues_to_the_same_row(bench, tmp_path):
    out = tmp_path / "repro"
    args = ["reproduce", "--dataset", "synthetic", "--root", bench, "--out", str(out), "--weights", "random",
            "--eval-episodes", "3", "--val-episodes", "1", "--frames", "2", "--crop", "32", "--workers", "0",
            "--device", "cpu"]
    first = CliRunner().invoke(main, [*args, "--finetune-episodes", "2"])
    assert first.exit_code == 0, first.output
    cell = out / "synthetic-m3net-full-1shot"
    row = json.loads((cell / "row.json").read_text())
    assert row["finetune_episodes"] == 2 and row["episodes"] == 3 and row["scored_queries"] == 3 * 5 * 5
    assert row["paper_accuracy"] is None  # the generated benchmark has no Table 1 cell
    assert {"accuracy_y1", "accuracy_y2", "accuracy_y3"} <= set(row)  # every view beside the fused Y
    saved = json.loads((cell / "results" / "results.json").read_text())["config"]
    assert saved["queries"] == 5 and saved["shot"] == 1  # the paper preset's 5 queries per class
    longer = CliRunner().invoke(main, [*args, "--finetune-episodes", "3"])
    assert longer.exit_code == 0, longer.output  # resumes the finetune to 3 episodes, re-extracts, re-scores
    row = json.loads((cell / "row.json").read_text())
    assert row["finetune_episodes"] == 3
    with open(out / "table.csv") as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == ["full"]


def test_paper_cells_and_variant_checks():
    assert table1_cell("m3net", "gym99", 1) == (72.70, 0.33)
    assert table1_cell("trx", "diving48", 5) == (82.01, 0.26)
    assert table1_cell("m3net", "synthetic", 1) is None
    with pytest.raises(ConfigError, match="ablations are of the m3net head"):
        ReproduceConfig(dataset="gym99", root="x", head="trx", variant="t2-im")


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_every_ablation_builds_a_head_with_the_views_its_table_reports(variant):
    torch.manual_seed(0)
    head = build_head("m3net", feature_dim=8, num_frames=3, **ABLATIONS[variant].options)
    support, query = torch.rand(4, 3, 7, 7, 8), torch.rand(2, 3, 7, 7, 8)
    outputs = head(support, torch.tensor([0, 1, 0, 1]), query)
    assert all(logits.shape == (2, 2) for logits in outputs.values())
    reported = ABLATIONS[variant].paper
    assert set(reported) <= {1, 5} and all("y" in views for views in reported.values())
    if variant.startswith("t4-"):  # Table 4 reports every view of the model
        assert set(outputs) == set(reported[1])
    if variant.endswith("-all"):  # Table 3's columns 1-3: one matcher over the three encoders
        view = {"t3-im-all": "y1", "t3-cm-all": "y2", "t3-tm-all": "y3"}[variant]
        assert set(outputs) == {f"{view}.{source}" for source in ("ifce", "ivce", "iece")} | {"y"}


def test_ablation_cells_are_the_papers():
    assert ablation_cell("t2-ifce-ivce-cm", "gym99", 1) == {"y": 69.53}
    assert ablation_cell("t3-cm-all", "gym99", 5) == {"y": 85.40}
    assert ablation_cell("t3-swap", "gym99", 1) == {"y": 72.22}
    assert ablation_cell("t4-4", "gym99", 1) == {"y2": 70.21, "y3": 68.51, "y": 71.81}
    assert ablation_cell("t4-4", "gym99", 5) is None  # Table 4 is 1-shot only
    assert ablation_cell("t3-m3net", "gym99", 1)["y"] == ablation_cell("t4-7", "gym99", 1)["y"] == 72.70
    assert ablation_cell("t3-im-all", "diving48", 1) is None
    assert ABLATIONS["t3-swap"].options == {"cm_features": ("iece",), "tm_features": ("ivce",)}


def _results(views):
    return [{"head": "m3net (m3net)", "view": view, "accuracy": 50.0 + i, "ci95": 1.0, "episodes": 10,
             "scored_queries": 50} for i, view in enumerate(views)]


def test_rows_put_each_view_beside_the_paper(tmp_path):
    table4 = beside_paper(ReproduceConfig(dataset="gym99", root="x", variant="t4-4"), _results(["y2", "y3", "y"]))
    assert (table4["accuracy"], table4["paper_accuracy"], table4["paper_ci95"]) == (52.0, 71.81, None)
    assert table4["accuracy_y2"] == 50.0 and table4["paper_accuracy_y2"] == 70.21
    assert table4["accuracy_y3"] == 51.0 and table4["paper_accuracy_y3"] == 68.51
    table3 = beside_paper(ReproduceConfig(dataset="gym99", root="x", shot=5, variant="t3-cm-all"),
                          _results(["y2.iece", "y2.ifce", "y2.ivce", "y"]))
    assert table3["paper_accuracy"] == 85.40 and table3["accuracy_y2.ivce"] == 52.0
    assert not any(key.startswith("paper_accuracy_") for key in table3)
    no_cell = beside_paper(ReproduceConfig(dataset="gym99", root="x", shot=3, variant="t3-cm-all"), _results(["y"]))
    assert no_cell["paper_accuracy"] is None
    full = beside_paper(ReproduceConfig(dataset="gym99", root="x"), _results(["y1", "y2", "y3", "y"]))
    assert (full["paper_accuracy"], full["paper_ci95"]) == (72.70, 0.33)
    assert "paper_accuracy_y1" not in full
    # table.csv takes the columns of every row, whatever their views
    for name, row in (("a", {"variant": "t4-4", **table4}), ("b", {"variant": "t3-cm-all", **table3})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "row.json").write_text(json.dumps(row))
    write_table(str(tmp_path))
    with open(tmp_path / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["paper_accuracy_y3"] == "68.51" and rows[0]["accuracy_y2.ivce"] == ""
    assert rows[1]["accuracy_y2.ivce"] == "52.0" and rows[1]["paper_accuracy"] == "85.4"
    assert "y2 50.00 (paper 70.21)" in format_row(table4 | {"dataset": "gym99", "shot": 1, "head": "m3net",
                                                             "variant": "t4-4"})
