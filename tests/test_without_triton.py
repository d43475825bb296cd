"""The package without triton (the CPU torch wheel brings none): every module imports, every command's --help
runs, DTW runs on the torch reference and bench-dtw says in its row that triton is missing.

One subprocess does it all, with ``sys.modules["triton"] = None`` so that ``import triton`` (and any
``triton.*``) raises ImportError, as on a machine where it is not installed; the tests read its report.
"""
import json
import subprocess
import sys
import textwrap

import pytest

PROBE = """
import sys
sys.modules["triton"] = None
import importlib, json, pkgutil, traceback
import torch
from click.testing import CliRunner

# Every module: the folders mapped into the namespace are walked from their own package (an editable
# install does not put them under m3net.__path__); cli.py is a module of its own.
names = {"m3net.cli"}
for root in ("m3net", "m3net.kernels", "m3net.extract", "m3net.cache"):
    package = importlib.import_module(root)
    names |= {root} | {info.name for info in pkgutil.walk_packages(package.__path__, root + ".")}
imports = {}
for name in sorted(names):
    try:
        importlib.import_module(name)
    except Exception:
        imports[name] = traceback.format_exc(limit=-2)

from m3net.cli import main

runner = CliRunner()
helps = {}
for name in [None, *main.commands]:
    result = runner.invoke(main, ["--help"] if name is None else [name, "--help"])
    if result.exit_code != 0 or "Usage:" not in result.output:
        helps[name or "m3net"] = repr(result.exception) + result.output[-500:]

from m3net.errors import ConfigError
from m3net.kernels import dtw, dtw_reference

cost = torch.rand(3, 5, 7, dtype=torch.float64)
same = {mode: bool(torch.equal(dtw(cost, mode=mode), dtw_reference(cost, mode=mode)))
        for mode in ("soft", "hard", "otam")}
try:
    dtw(cost, backend="triton")
    refusal = None
except ConfigError as err:
    refusal = str(err)

bench = runner.invoke(main, ["bench-dtw", "--pairs", "8", "--n", "4", "--m", "4", "--repeats", "1", "--impl", "triton",
                             "--impl", "torch-reference", "--out-dir", sys.argv[1]])
print(json.dumps({"imported": sorted(names), "import_failures": imports, "help_failures": helps, "same": same,
                  "refusal": refusal, "bench_exit": bench.exit_code, "bench_output": bench.output}))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE), str(tmp_path_factory.mktemp("bench"))],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_module_imports_without_triton(report):
    assert {"m3net.cli", "m3net.kernels.dtw_long", "m3net.kernels.dtw_short", "m3net.train.train_head"} <= set(
        report["imported"])
    assert report["import_failures"] == {}, "\n".join(f"{n}:\n{tb}" for n, tb in report["import_failures"].items())


def test_every_command_help_runs_without_triton(report):
    assert report["help_failures"] == {}


def test_dtw_runs_on_the_reference_and_refuses_a_forced_triton_backend_without_triton(report):
    assert report["same"] == {"soft": True, "hard": True, "otam": True}
    assert report["refusal"] and "triton is not installed" in report["refusal"]


def test_bench_dtw_names_the_missing_triton_in_its_row(report):
    assert report["bench_exit"] == 0, report["bench_output"]
    triton_rows = [line for line in report["bench_output"].splitlines() if " triton " in line]
    assert len(triton_rows) == 1 and triton_rows[0].rstrip().endswith("triton not installed"), report["bench_output"]
