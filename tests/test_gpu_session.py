"""benchmarks/gpu_session.sh and its steps (tools/gpu_session.py): one JSON line per step, written as
the step ends; a failing step does not stop the next; the session ends within its budget (BUDGET_S) with
a line for every step and the summary; at most 8 files come back; results survive a kill; the warm step
compiles every variant the later steps launch, once; records unpack into benchmarks/ files, and
rehearsal (QUICK) lines are refused."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import gpu_session as session
import gpu_session_steps as steps
import gpu_session_warm as warming
from m3net.errors import ConfigError
from m3net.kernels.dtw_grid import recorded_launches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_session.sh")
# `all` runs smoke, warm, verify, tests-gpu, the DTW timings, tests-kernel, the heads; then
# `tests-long` runs tests-warm-long, tests-gpu-long and dtw-matchers-long.
BENCH_STEPS = ["smoke", "warm", "verify", "dtw-floor", "dtw-competitors", "dtw-matchers", "dtw-long", "bench-train",
               "bench-finetune", "dtw-matchers-long"]
TESTS_STEPS = ["tests-gpu", "tests-kernel", "tests-warm-long", "tests-gpu-long"]


def _lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_a_step_made_to_fail_writes_its_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv(steps.FAIL_ENV, "dtw-floor,smoke")
    jsonl = tmp_path / "bench.jsonl"
    assert session.main(["smoke", "--jsonl", str(jsonl)]) == 1
    assert session.main(["dtw-floor", "--jsonl", str(jsonl)]) == 1
    lines = _lines(jsonl)
    assert [(line["step"], line["status"], line["stage"]) for line in lines] == [
        ("smoke", "error", "bench"), ("dtw-floor", "error", "bench")]
    assert all("on purpose" in line["error"] and line["seconds"] >= 0 for line in lines)


def test_summary_reads_whole_lines_only(tmp_path, capsys):
    jsonl = tmp_path / "bench.jsonl"
    session.append_line(jsonl, {"step": "smoke", "status": "ok", "seconds": 1.5, "result": {}})
    with open(jsonl, "a") as fh:
        fh.write('{"step": "warm", "stat')  # a line cut by a kill
    assert [line["step"] for line in session.read_lines([jsonl])] == ["smoke"]
    session.summary([jsonl])
    assert "smoke" in capsys.readouterr().out


def test_unpack_writes_records_and_refuses_rehearsal_lines(tmp_path):
    record = {"benchmark": "dtw", "created": "2026-12-01T00:00:00+00:00", "device": "NVIDIA H200",
              "git_sha": "abc", "versions": {"torch": "2.11.0", "triton": "3.6.0"},
              "config": {"mode": "soft", "pass": "fwd", "dtype": "float32", "pairs": [4], "sizes": [[3, 3]]},
              "rows": [{"implementation": "triton", "pairs": 4, "n": 3, "m": 3, "pairs_per_s": 1e9}]}
    jsonl = tmp_path / "bench.jsonl"
    session.append_line(jsonl, {"step": "dtw-floor", "status": "ok", "quick": False, "records": [record]})
    session.append_line(jsonl, {"step": "dtw-long", "status": "error", "quick": False, "error": "x"})
    session.unpack([jsonl], tmp_path / "out")
    (written,) = (tmp_path / "out").glob("bench_dtw_soft_fwd_3x3_float32_nvidia-h200_2026-12-01.json")
    assert json.loads(written.read_text()) == record
    session.append_line(jsonl, {"step": "smoke", "status": "ok", "quick": True, "records": []})
    with pytest.raises(ConfigError, match="QUICK"):
        session.unpack([jsonl], tmp_path / "out")


def test_warm_compiles_each_variant_the_later_steps_launch_once():
    """The warm step's kernel units against the launches the DTW timings and verify make themselves
    (recorded, not run): every variant launched is warmed, and no variant twice."""
    s = steps.QUICK_SIZES
    units = [unit for unit in warming.warm_units(s) if unit.kind == "kernel"]
    warmed = [warming.variant_key(unit.launch) for unit in units]
    assert len(set(warmed)) == len(warmed)
    with recorded_launches() as launches:
        for step in ("dtw-floor", "dtw-competitors", "dtw-matchers", "dtw-long"):
            steps.run_plan([(kind, dataclasses.replace(config, implementations=("triton",)), dim)
                               for kind, config, dim in steps.dtw_plans(s)[step]])
        for case in steps.verify_cases(s):
            steps.verify_case(case, "cpu", 4)
    launched = {warming.variant_key(warming.picklable(launch)) for launch in launches}
    assert launched and launched <= set(warmed), launched - set(warmed)
    kernels = {key[0] for key in warmed}
    assert kernels == {"_dtw_short_fwd_kernel", "_dtw_short_bwd_kernel", "_dtw_long_fwd_kernel", "_dtw_long_bwd_kernel"}
    assert any(dict(key[1]).get("SYMMETRIC") and key[0] == "_dtw_short_bwd_kernel" for key in warmed)  # tests-gpu's
    assert units == sorted(units, key=lambda unit: unit.weight, reverse=True)  # the longest compiles first


@pytest.mark.slow
def test_cache_compiles_for_sm90_and_a_second_build_loads_it(tmp_path):
    """`gpu_session.py cache DIR`: warm's variants compiled for sm_90 without a GPU into DIR; built again,
    each variant is a cache load (the key static_sm90.compile_launch computes is stable across processes)."""
    pytest.importorskip("triton")
    from helpers_tools import env_with_tools

    env = env_with_tools({k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    command = [sys.executable, os.path.join(ROOT, "tools", "gpu_session.py"), "cache", str(tmp_path / "cache"),
               "--only", "verify hard 8x8: _dtw_short_fwd"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    if "No module named" in first.stderr and "nvidia" in first.stderr:
        pytest.skip("this triton wheel has no CUDA backend")
    assert first.returncode == 0 and "1 variants, 0 loaded" in first.stdout, first.stderr[-2000:]
    # Carried elsewhere (as to the device), relocated, pruned to what a hit loads: built again, it loads.
    shutil.copytree(tmp_path / "cache", tmp_path / "moved")
    shutil.rmtree(tmp_path / "cache")
    assert {p.suffix for p in (tmp_path / "moved").rglob("*") if p.is_file()} == {".json", ".cubin"}
    relocate = [*command[:3], str(tmp_path / "moved"), "--relocate"]
    assert subprocess.run(relocate, cwd=ROOT, env=env, timeout=60).returncode == 0
    again = subprocess.run([*command[:3], str(tmp_path / "moved"), *command[4:]], cwd=ROOT, capture_output=True,
                           text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 variants, 1 loaded from the cache" in again.stdout, again.stdout


@pytest.mark.slow
def test_kernel_and_gpu_test_files_import_no_decoder():
    """What the tests steps collect, collected in a fresh interpreter: neither PyAV nor decord gets imported."""
    files = sorted({*steps.gpu_test_files(), *__import__("glob").glob(steps.KERNEL_TESTS)})
    assert "tests/test_synthetic.py" not in files and "tests/test_dtw_similarity.py" in files
    code = ("import sys, pytest; s = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', *sys.argv[1:]]);"
            "print('DECODERS', [m for m in ('av', 'decord') if m in sys.modules]); sys.exit(s)")
    proc = subprocess.run([sys.executable, "-c", code, *files], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "DECODERS []" in proc.stdout


def test_a_step_that_dies_without_its_line_gets_a_failed_line(tmp_path):
    """The shell writes the line of a step whose process died first (here: an interpreter that exits 1)."""
    out = tmp_path / "out"
    subprocess.run(["bash", SCRIPT, "steps", "smoke", "tests-gpu"], cwd=ROOT, capture_output=True, timeout=60,
                   env={**os.environ, "OUT": str(out), "PYTHON": "false"})
    for stage, step in (("bench", "smoke"), ("tests", "tests-gpu")):
        (line,) = _lines(out / f"{stage}.jsonl")
        assert (line["step"], line["status"], line["rc"]) == (step, "failed", 1)
        assert "without a result line" in line["error"]


FAKE_PYTHON = """#!/bin/bash
# No GPU; every step runs for 60 s; the summary is the real one.
[ "$1" = -c ] && exit 1
[ "$2" = summary ] && exec {python} "$@"
sleep 60
"""


@pytest.mark.slow
def test_the_session_ends_within_its_budget_with_a_line_for_every_step(tmp_path):
    """BUDGET_S=40 less the 20 s margin: the first step gets 20 s (its own limit is longer) and is killed,
    the next ones have no time left and are skipped; the summary prints; the script ends by itself."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "out"
    start = time.monotonic()
    proc = subprocess.run(["bash", SCRIPT, "all"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OUT": str(out), "PYTHON": str(fake), "BUDGET_S": "40"})
    assert time.monotonic() - start < 40
    bench, tests = _lines(out / "bench.jsonl"), _lines(out / "tests.jsonl")
    assert [line["step"] for line in bench] == BENCH_STEPS[:-1] and [line["step"] for line in tests] == TESTS_STEPS[:2]
    assert (bench[0]["status"], bench[0]["rc"]) == ("failed", 124) and "over its" in bench[0]["error"]
    assert all(line["status"] == "skipped" and "BUDGET_S=40" in line["error"] for line in bench[1:] + tests)
    assert "headline" in proc.stdout and "skipped" in proc.stdout.split("headline")[1]


def _rehearsal_env(out, **extra):
    # The tests steps run the kernel tests: CI runs them itself, so the rehearsal keeps a few ("bench"). The
    # budget: a whole rehearsal on 2 loaded cores may take longer than the device's default.
    return {**os.environ, "QUICK": "1", "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "BUDGET_S": "3000", steps.PYTEST_K_ENV: "bench or matchers", **extra}


@pytest.mark.slow
def test_rehearsal_runs_every_step_and_a_failing_step_does_not_stop_the_next(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, "all"], cwd=ROOT, capture_output=True, text=True, timeout=3000,
                          env=_rehearsal_env(out, M3NET_SESSION_FAIL="dtw-floor"))
    subprocess.run(["bash", SCRIPT, "tests-long"], cwd=ROOT, capture_output=True, timeout=3000,
                   env=_rehearsal_env(out))  # the second call: its lines join the first's files
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} == {"session.log", "bench.jsonl", "tests.jsonl"}, files
    bench = _lines(out / "bench.jsonl")
    assert [line["step"] for line in bench] == BENCH_STEPS, proc.stdout[-3000:]
    status = {line["step"]: line["status"] for line in bench}
    assert status["dtw-floor"] == "error" and "on purpose" in bench[3]["error"]
    assert status == {**{step: "ok" for step in BENCH_STEPS}, "dtw-floor": "error"}, proc.stdout[-3000:]
    assert all(line["quick"] for line in bench)
    records = {r["benchmark"] for line in bench for r in line.get("records") or []}
    assert records == {"dtw", "dtw_matchers", "train-head", "finetune"}
    tests = _lines(out / "tests.jsonl")
    assert [line["step"] for line in tests] == TESTS_STEPS
    assert all(line["status"] == "ok" for line in tests), [line.get("error") for line in tests]
    kernel = next(line for line in tests if line["step"] == "tests-kernel")["result"]
    assert kernel["counts"].get("passed", 0) > 0 and not kernel["counts"].get("failed")
    assert kernel["forbidden_imported_at_collection"] == []
    log = (out / "session.log").read_text()
    assert "[dtw-competitors]" in log and "[tests-kernel]" in log and "headline" in log  # summary last
    order = [text.split()[1] for text in log.splitlines() if text.startswith("== ") and "limit" in text]
    assert order[:5] == ["smoke", "warm", "verify", "tests-gpu", "dtw-floor"], order  # correctness first
    checks = next(line for line in bench if line["step"] == "verify")["result"]["checks"]
    assert len(checks) >= 11 and all(check["ok"] for check in checks)


@pytest.mark.slow
def test_killed_session_leaves_the_finished_steps_in_out(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", SCRIPT, "bench"], cwd=ROOT, env=_rehearsal_env(out), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, deadline = out / "session.log", time.time() + 900
    while time.time() < deadline and not (log.exists() and "== warm" in log.read_text()):
        time.sleep(0.5)  # until the warm step is under way
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the script, the running step, its workers
    proc.wait(timeout=60)
    lines = _lines(out / "bench.jsonl")
    assert [line["step"] for line in lines] == ["smoke"]
    assert lines[0]["status"] == "ok" and lines[0]["result"]["value_max_abs_err"] < 1e-4
