"""`m3net bench-finetune` times end-to-end optimizer steps per shot and checkpointing mode."""
import csv
import json

import pytest
import torch
from click.testing import CliRunner

from m3net.cli import main


@pytest.mark.slow
def test_bench_finetune_writes_a_row_per_shot_and_mode(tmp_path):
    result = CliRunner().invoke(main, ["bench-finetune", "--head", "protonet", "--way", "2",
                                       "--shot", "1", "--shot", "2", "--queries", "1", "--frames", "2", "--crop", "32",
                                       "--steps", "1", "--warmup", "1", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("bench_finetune_*.json")
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert [(r["shot"], r["checkpointing"]) for r in rows] == [(1, False), (1, True), (2, False), (2, True)]
    assert [r["images_per_episode"] for r in rows] == [8, 8, 12, 12]  # way·(shot+queries)·frames
    assert all(r["status"] == "ok" and r["episodes_per_s"] > 0 and r["peak_gpu_mib"] is None for r in rows)
    assert data["cpu_numbers"] and data["git_sha"] and data["versions"]["torch"] == torch.__version__
    with open(next(tmp_path.glob("bench_finetune_*.csv"))) as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert "CPU numbers" in result.output and "decoding excluded" in result.output
