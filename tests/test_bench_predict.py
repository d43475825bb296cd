"""`m3net bench-predict` times the Python API's fit, features, head and predict and writes CSV + JSON."""
import csv
import json

import pytest
from click.testing import CliRunner

from docs_benchmarks import render_benchmarks
from m3net.cli import main


@pytest.mark.slow
def test_bench_predict_writes_four_stages_and_a_readme_row(tmp_path):
    out = tmp_path / "benchmarks"
    result = CliRunner().invoke(main, ["bench-predict", "--way", "2", "--queries", "3", "--frames", "2", "--crop", "64",
                                       "--batch-size", "2", "--head-opt", "proj_dim=16", "--device", "cpu",
                                       "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    (json_path,) = out.glob("bench_predict_m3net_proj_dim-16_2w1s_*.json")
    data = json.loads(json_path.read_text())
    stages = {r["stage"]: r for r in data["rows"]}
    assert list(stages) == ["fit", "features", "head", "predict"]
    assert stages["fit"]["clips"] == 2 and all(stages[s]["clips"] == 3 for s in ("features", "head", "predict"))
    assert all(r["clips_per_s"] == pytest.approx(r["clips"] / r["seconds"]) for r in stages.values())
    assert data["feature_shape"] == [2, 2, 2, 2048] and data["batch_size"] == 2 and data["precision"] == "fp32"
    with open(next(out.glob("bench_predict_*.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["stage"] for r in rows] == list(stages) and all(r["git_sha"] == data["git_sha"] for r in rows)
    table = render_benchmarks(str(tmp_path))
    assert "**Prediction** (`m3net bench-predict`" in table
    assert f"| m3net proj_dim=16 | predict | 3 | {stages['predict']['clips_per_s']:.2f} |" in table


def test_bench_predict_refuses_a_folder_with_too_few_classes(tmp_path):
    (tmp_path / "only").mkdir()
    result = CliRunner().invoke(main, ["bench-predict", "--root", str(tmp_path), "--way", "2", "--device", "cpu",
                                       "--head", "protonet", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--way 2 needs that many" in result.output
