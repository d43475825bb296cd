"""`m3net reproduce` end to end on a tiny generated benchmark (random weights, 2 frames, 32x32, CPU)."""
import csv
import json

import pytest
from click.testing import CliRunner

from m3net.cli import main
from m3net.data.synthetic import SyntheticConfig, generate_synthetic
from m3net.errors import ConfigError
from m3net.paper import table1_cell
from m3net.reproduce import ReproduceConfig


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
