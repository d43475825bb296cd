"""`m3net bench-train` times training and evaluation episodes and writes CSV + JSON."""
import json

from click.testing import CliRunner

from m3net.cli import main


def test_bench_train_writes_rates(tmp_path):
    result = CliRunner().invoke(main, ["bench-train", "--head", "m3net", "--head-opt", "patch_grid=2",
                                       "--channels", "16", "--frames", "4", "--train-episodes", "2",
                                       "--eval-episodes", "3", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("bench_train_*.json")
    data = json.loads(path.read_text())
    phases = {r["phase"]: r for r in data["rows"]}
    assert set(phases) == {"train", "evaluate"}
    assert phases["train"]["episodes_per_s"] > 0
    assert phases["evaluate"]["projected_s"] == 6000 / phases["evaluate"]["episodes_per_s"]
    assert data["cpu_numbers"] and data["git_sha"] and data["config"]["head_options"] == {"patch_grid": 2}
    assert len(list(tmp_path.glob("bench_train_*.csv"))) == 1
