"""The package without triton (the CPU torch wheel brings none): every module imports, every command's
--help runs, DTW runs on the torch reference and bench-dtw says in its row that triton is missing.

Each check runs in a subprocess whose ``sys.modules["triton"] = None`` makes ``import triton`` (and any
``triton.*``) raise ImportError, as on a machine where it is not installed.
"""
import json
import subprocess
import sys
import textwrap

BLOCK_TRITON = "import sys; sys.modules['triton'] = None\n"


def run_without_triton(code):
    """Runs ``code`` in a fresh interpreter with triton unimportable; returns its stdout (raises with
    its stderr on a non-zero exit)."""
    script = BLOCK_TRITON + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_every_module_imports_without_triton():
    # The folders mapped into the namespace are walked from their own package (an editable install
    # does not put them under m3net.__path__); cli.py is a module of its own.
    out = json.loads(run_without_triton("""
        import importlib, json, pkgutil, traceback
        names = {"m3net.cli"}
        for root in ("m3net", "m3net.kernels", "m3net.extract", "m3net.cache"):
            package = importlib.import_module(root)
            names |= {root} | {info.name for info in pkgutil.walk_packages(package.__path__, root + ".")}
        failures = {}
        for name in sorted(names):
            try:
                importlib.import_module(name)
            except Exception:
                failures[name] = traceback.format_exc(limit=-2)
        print(json.dumps({"imported": sorted(names), "failures": failures}))
    """))
    assert {"m3net.cli", "m3net.kernels.dtw_long", "m3net.kernels.dtw_short", "m3net.train.train_head"} <= set(
        out["imported"])
    assert out["failures"] == {}, "\n".join(f"{name}:\n{tb}" for name, tb in out["failures"].items())


def test_every_command_help_runs_without_triton():
    failures = json.loads(run_without_triton("""
        import json
        from click.testing import CliRunner
        from m3net.cli import main
        runner = CliRunner()
        failures = {}
        for name in [None, *main.commands]:
            args = ["--help"] if name is None else [name, "--help"]
            result = runner.invoke(main, args)
            if result.exit_code != 0 or "Usage:" not in result.output:
                failures[name or "m3net"] = repr(result.exception) + result.output[-500:]
        print(json.dumps(failures))
    """))
    assert failures == {}, failures


def test_dtw_runs_on_the_reference_and_refuses_a_forced_triton_backend_without_triton():
    out = json.loads(run_without_triton("""
        import json, torch
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
        print(json.dumps({"same": same, "refusal": refusal}))
    """))
    assert out["same"] == {"soft": True, "hard": True, "otam": True}
    assert out["refusal"] and "triton is not installed" in out["refusal"]


def test_bench_dtw_names_the_missing_triton_in_its_row(tmp_path):
    out = run_without_triton(f"""
        from click.testing import CliRunner
        from m3net.cli import main
        result = CliRunner().invoke(main, ["bench-dtw", "--pairs", "8", "--n", "4", "--m", "4", "--repeats", "1",
                                           "--impl", "triton", "--impl", "torch-reference",
                                           "--out-dir", {str(tmp_path)!r}])
        print(result.output)
        assert result.exit_code == 0, result.output
    """)
    triton_rows = [line for line in out.splitlines() if " triton " in line]
    assert len(triton_rows) == 1 and triton_rows[0].rstrip().endswith("triton not installed"), out
