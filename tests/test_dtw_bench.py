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
    assert data["config"]["pass"] == "fwd+bwd" and data["config"]["pairs"] == [64]
    rows = {r["implementation"]: r for r in data["rows"]}
    assert rows["torch-reference"]["pairs_per_s"] > 0 and rows["eager-loop"]["pairs_per_s"] > 0
    # 64 pairs of 5x7 float32, a whole step: cost in + value out, then cost in + value gradient in + gradient out.
    assert rows["torch-reference"]["gb_per_s"] * rows["torch-reference"]["seconds"] * 1e9 == pytest.approx(
        64 * (3 * 35 * 4 + 2 * 4))
    assert rows["torch-reference"]["max_abs_err"] < 1e-5  # fp32 values against the float64 reference
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
    from m3net.bench.dtw import MATCHER_CALLS, DTWBenchConfig, format_matcher_table, run_matcher_bench

    config = DTWBenchConfig(pairs=(50,), sizes=((4, 4),), repeats=1, warmup=0)
    result = run_matcher_bench(config, dim=16)
    rows = {r["implementation"]: r for r in result["rows"]}
    assert tuple(rows) == MATCHER_CALLS == ("dtw forward (plain)", "I-M matcher hard", "I-M matcher soft", "OTAM head",
                                            "I-M dtw, s in place", "I-M dtw, 1 - s copy")
    assert rows["dtw forward (plain)"]["x_plain_fwd"] == 1.0 and rows["OTAM head"]["pairs"] == 50
    assert "x plain fwd" in format_matcher_table(result)
    only = run_matcher_bench(config, dim=16, only=("OTAM head",))["rows"]
    assert [r["implementation"] for r in only] == ["OTAM head"] and only[0]["x_plain_fwd"] is None
    with pytest.raises(ValueError, match="only="):
        run_matcher_bench(config, dim=16, only=("no such call",))


def test_floors_per_pass_dtype_and_mode():
    """The bandwidth floors of issue #23: a whole 8x8 fp32 step moves 776 B (the backward reads the cost again)."""
    import torch

    from m3net.bench.dtw import floor_bytes_per_pair

    for mode in ("soft", "hard", "otam"):  # OTAM's padding is formed in registers: the same bytes
        assert [floor_bytes_per_pair(8, 8, torch.float32, mode, p) for p in ("fwd", "bwd", "fwd+bwd")] == [
            260, 516, 776]
    # 16-bit costs return fp32 values (and take an fp32 value gradient); fp64 stays fp64
    assert floor_bytes_per_pair(8, 8, torch.bfloat16, "soft", "fwd+bwd") == (128 + 4) + (128 + 4 + 128)
    assert floor_bytes_per_pair(5, 7, torch.float64, "hard", "bwd") == 35 * 8 * 2 + 8
    with pytest.raises(ValueError, match="pass"):
        floor_bytes_per_pair(8, 8, torch.float32, "soft", "backward")


@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
def test_triton_bytes_per_pair_are_what_the_launches_move(mode):
    """triton_bytes_per_pair against the tensors the launchers pass (tools/static_sm90.py's accounting: every
    distinct storage once): the floor on the short path and for the long path's inference forward; the
    floor plus the checkpoint rows (written, then read) for a long training step. A 32x32 fp32 step can
    reach 84% of its floor (37.5% when the forward stored 3 weights per cell: 32,772 B)."""
    pytest.importorskip("triton")
    import torch

    import static_sm90
    from m3net.bench.dtw import floor_bytes_per_pair, triton_bytes_per_pair
    from m3net.kernels.dtw import launch_configs

    batch = 64
    for n, m, dtype in [(32, 32, torch.float32), (17, 40, torch.bfloat16), (40, 3, torch.float64)]:
        moved = {p: sum(static_sm90._bytes_per_pair(launch, batch)
                        for launch in static_sm90._long_launches(mode, n, m, p, dtype, batch))
                 for p in ("fwd", "fwd (training)", "bwd")}
        assert triton_bytes_per_pair(n, m, dtype, mode, "fwd") == moved["fwd"] == floor_bytes_per_pair(
            n, m, dtype, mode, "fwd")
        assert triton_bytes_per_pair(n, m, dtype, mode, "bwd") == moved["bwd"]
        step = triton_bytes_per_pair(n, m, dtype, mode, "fwd+bwd")
        assert step == moved["fwd (training)"] + moved["bwd"] > floor_bytes_per_pair(n, m, dtype, mode, "fwd+bwd")
    short = launch_configs(mode, 8, 8, "fwd (training)", torch.float32, batch=batch)
    assert sum(static_sm90._bytes_per_pair(launch, batch) for launch in short) == 260 == triton_bytes_per_pair(
        8, 8, torch.float32, mode, "fwd+bwd") - 516
    if mode == "soft":
        assert (triton_bytes_per_pair(32, 32, torch.float32, mode, "fwd+bwd"), floor_bytes_per_pair(
            32, 32, torch.float32, mode, "fwd+bwd")) == (14600, 12296)


def test_backward_alone_is_held_to_its_own_floor(tmp_path):
    result = CliRunner().invoke(main, ["bench-dtw", "--pairs", "32", "--n", "4", "--m", "6", "--repeats", "1",
                                       "--pass", "bwd", "--impl", "torch-reference", "--impl", "pysdtw",
                                       "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (json_path,) = tmp_path.glob("bench_dtw_soft_bwd_4x6_float32_*.json")
    data = json.loads(json_path.read_text())
    rows = {r["implementation"]: r for r in data["rows"]}
    reference = rows["torch-reference"]
    assert data["config"]["pass"] == "bwd" and reference["floor_bytes_per_pair"] == 24 * 4 * 2 + 4
    assert reference["gb_per_s"] * reference["seconds"] * 1e9 == pytest.approx(32 * (24 * 4 * 2 + 4))
    assert rows["pysdtw"]["seconds"] is None and rows["pysdtw"]["note"]  # forward kernel only, or not installed


def test_new_records_render_in_the_readme_table(tmp_path):
    """Records with several pairs and sizes, matcher records and the older one-size records render side by side."""
    from docs_benchmarks import render_benchmarks
    from m3net.bench.dtw import DTWBenchConfig, run_bench, run_matcher_bench, write_matcher_results, write_results

    out = tmp_path / "benchmarks"
    config = DTWBenchConfig(pairs=(4, 6), sizes=((3, 3), (2, 5)), repeats=1, warmup=0, device="cpu",
                            timed_pass="fwd+bwd", implementations=("torch-reference", "eager-loop"))
    write_results(run_bench(config), out)
    write_matcher_results(run_matcher_bench(DTWBenchConfig(pairs=(25,), sizes=((3, 3),), repeats=1, warmup=0),
                                            dim=8), out)
    text = render_benchmarks(tmp_path)
    table = [line for line in text.splitlines() if line.startswith("| soft | fwd+bwd |")]
    assert [line.split(" | ")[2:4] for line in table] == [["4", "3×3"], ["4", "2×5"], ["6", "3×3"], ["6", "2×5"]]
    assert "DTW matchers end to end" in text and "| 3 | 25 | OTAM head |" in text
