"""`m3net bench-dtw` runs, prints the side-by-side table and writes CSV + JSON with provenance."""
import csv
import json

import pytest
from click.testing import CliRunner

from m3net.cli import main


def test_bench_dtw_writes_table_and_files(tmp_path):
    result = CliRunner().invoke(
        main,
        ["bench-dtw", "--pairs", "64", "--n", "5", "--m", "7", "--repeats", "1", "--mode", "soft",
         "--pass", "fwd+bwd", "--impl", "torch-reference", "--impl", "eager-loop", "--impl", "pysdtw",
         "--out-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "torch-reference" in result.output and "eager-loop" in result.output
    (json_path,) = tmp_path.glob("bench_dtw_*.json")
    (csv_path,) = tmp_path.glob("bench_dtw_*.csv")
    data = json.loads(json_path.read_text())
    assert data["versions"]["torch"] and data["git_sha"] and data["device"]
    assert data["config"]["backward"] is True and data["config"]["pairs"] == [64]
    rows = {r["implementation"]: r for r in data["rows"]}
    assert rows["torch-reference"]["pairs_per_s"] > 0 and rows["eager-loop"]["pairs_per_s"] > 0
    # 64 pairs of 5x7 float32: cost in + value out + gradient out.
    assert rows["torch-reference"]["gb_per_s"] * rows["torch-reference"]["seconds"] * 1e9 == pytest.approx(
        (64 * 35 * 4) * 2 + 64 * 4)
    with open(csv_path) as fh:
        csv_rows = list(csv.DictReader(fh))
    assert {r["implementation"] for r in csv_rows} == set(rows)
    assert all(r["device"] == data["device"] and r["git_sha"] == data["git_sha"] for r in csv_rows)


def test_bench_dtw_sizes_same_pairs_and_skipped_pysdtw_dtype():
    """Every implementation at the same pairs per size; pysdtw + bf16 is a skipped row, not a crash."""
    pytest.importorskip("triton")
    from m3net.bench.dtw import DTWBenchConfig, format_table, run_bench

    config = DTWBenchConfig(pairs=(8,), sizes=((3, 4), (5, 5)), dtype="bfloat16", repeats=1, warmup=0,
                            implementations=("triton", "eager-loop", "pysdtw"))
    result = run_bench(config)
    rows = {(r["implementation"], r["n"]): r for r in result["rows"]}
    assert {r["pairs_timed"] for r in result["rows"] if r["seconds"]} == {8}
    assert rows[("pysdtw", 3)]["seconds"] is None and "bfloat16" in rows[("pysdtw", 3)]["note"]
    assert rows[("triton", 5)]["x_eager"] == pytest.approx(
        rows[("triton", 5)]["pairs_per_s"] / rows[("eager-loop", 5)]["pairs_per_s"])
    assert "x pysdtw" in format_table(result) and "x eager" in format_table(result)


def test_matcher_bench_times_im_and_otam_beside_a_plain_forward():
    from m3net.bench.dtw import DTWBenchConfig, format_matcher_table, run_matcher_bench

    result = run_matcher_bench(DTWBenchConfig(pairs=(50,), sizes=((4, 4),), repeats=1, warmup=0), dim=16)
    rows = {r["implementation"]: r for r in result["rows"]}
    assert set(rows) == {"dtw forward (plain)", "I-M matcher hard", "I-M matcher soft", "OTAM head",
                         "I-M dtw, s in place", "I-M dtw, 1 - s copy"}
    assert rows["dtw forward (plain)"]["x_plain_fwd"] == 1.0 and rows["OTAM head"]["pairs"] == 50
    assert "x plain fwd" in format_matcher_table(result)
