"""The Triton kernels compile ahead of time for Hopper (sm_90) on a machine without a GPU.

The interpreter checks the kernels' arithmetic; this checks that the same source also lowers
through Triton's real compiler (TTIR -> TTGIR -> LLVM -> PTX -> cubin via ptxas) for every mode
and dtype (long and short paths), compiling the launches the launchers themselves issue
(dtw.launch_configs) with Triton's own argument specialisation, so a GPU machine does not meet a
compile error first. It runs in a subprocess because the test session defines the kernels in
interpreter mode (TRITON_INTERPRET=1, see conftest.py).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

COMPILE_ALL = textwrap.dedent(
    """
    import json
    import torch
    from m3net.kernels.dtw import launch_configs
    from m3net.kernels.static_sm90 import compile_launch

    def compile_pass(mode, n, m, pass_, dtype, similarity=False):
        out = []
        for launch in launch_configs(mode, n, m, pass_, dtype, similarity=similarity, batch=64):
            k = compile_launch(launch)
            out.append({"kernel": launch.kernel.fn.__name__, "arch": k.metadata.target.arch,
                        "ptx_entry": ".entry" in k.asm["ptx"], "cubin_bytes": len(k.asm["cubin"]),
                        "fp64_scale": ".param .f64" in k.asm["ptx"]})
        return out

    results = {}
    for mode in ("soft", "hard", "otam"):
        for cost_type in ("float32", "bfloat16", "float64"):
            dtype = getattr(torch, cost_type)
            # Short path at an odd shape (one load per element) and at 8 x 8 (vector loads); the strided
            # similarity on 16-bit and fp32, the plain cost on fp64: every branch compiles for every mode.
            fwd, bwd = ("fwd symmetric", "bwd symmetric") if mode == "otam" else ("fwd+length", "bwd")
            similarity = cost_type != "float64"
            for n, m in ((5, 7), (8, 8)):
                results[f"short-fwd-{mode}-{cost_type}-{n}x{m}"] = compile_pass(mode, n, m, fwd, dtype, similarity)
                results[f"short-bwd-{mode}-{cost_type}-{n}x{m}"] = compile_pass(mode, n, m, bwd, dtype, similarity)
            # Long path: 8 lanes of 8 columns per pair (lanes exchange values) at 17 x 40.
            results[f"long-fwd-{mode}-{cost_type}"] = compile_pass(mode, 17, 40, "fwd (training)", dtype)
            results[f"long-bwd-{mode}-{cost_type}"] = compile_pass(mode, 17, 40, "bwd", dtype)
    print("RESULTS" + json.dumps(results))
    """
)

def _run(script, tag):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=3000)
    if "triton.backends.nvidia" in proc.stderr and "No module named" in proc.stderr:
        pytest.skip("this triton wheel has no CUDA backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(text for text in proc.stdout.splitlines() if text.startswith(tag))
    return json.loads(line[len(tag):])


@pytest.fixture(scope="module")
def compiled():
    return _run(COMPILE_ALL, "RESULTS")


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["short-fwd", "short-bwd", "long-fwd", "long-bwd"])
@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
@pytest.mark.parametrize("cost_type", ["float32", "bfloat16", "float64"])
def test_kernels_compile_for_sm90(compiled, kernel, mode, cost_type):
    shapes = ["5x7", "8x8"] if kernel.startswith("short") else [None]
    for shape in shapes:
        launches = compiled["-".join(filter(None, [kernel, mode, cost_type, shape]))]
        assert launches, "the pass issued no launch"
        for result in launches:
            assert result["arch"] == 90
            assert result["ptx_entry"] and result["cubin_bytes"] > 0
            # γ (as log2(e)/γ) reaches every kernel that takes it as an fp64 argument, never rounded to fp32
            if result["kernel"] != "_dtw_long_bwd_kernel":
                assert result["fp64_scale"], result

