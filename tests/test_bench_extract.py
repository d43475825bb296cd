"""`m3net bench-extract` times decode, backbone and end to end side by side and writes CSV + JSON."""
import csv
import json

import pytest
from click.testing import CliRunner

from m3net.cli import main
from m3net.data.synthetic import SyntheticConfig, generate_synthetic


@pytest.mark.slow
def test_bench_extract_writes_three_stages(tmp_path):
    clips = tmp_path / "clips"
    generate_synthetic(str(clips), SyntheticConfig(train_classes=2, val_classes=2, test_classes=2, clips_per_class=1,
                                                   frames=8, size=64, family_size=2), progress=False)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench-extract", "--root", str(clips), "--clips", "2", "--frames", "2",
                                       "--batch-size", "1", "--workers", "0", "--device", "cpu", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    (json_path,) = out.glob("bench_extract_*.json")
    data = json.loads(json_path.read_text())
    stages = {r["stage"]: r for r in data["rows"]}
    assert set(stages) == {"decode-only", "backbone-only", "end-to-end"}
    assert all(r["clips_per_s"] > 0 for r in stages.values())
    with open(next(out.glob("bench_extract_*.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(r["git_sha"] == data["git_sha"] and r["frames"] == "2" for r in rows)
