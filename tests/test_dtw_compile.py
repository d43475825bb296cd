"""The Triton kernels compile ahead of time for Hopper (sm_90) on a machine without a GPU.

The interpreter checks the kernels' arithmetic; this checks that the same source also lowers
through Triton's real compiler (TTIR -> TTGIR -> LLVM -> PTX -> cubin via ptxas) for every mode
(fp32) and for bf16 and fp64 in some of them (long and short paths), compiling the launches the
launchers themselves issue (dtw.launch_configs) with Triton's own argument specialisation, so a
GPU machine does not meet a compile error first. It runs in a subprocess because the test session
defines the kernels in interpreter mode (TRITON_INTERPRET=1, see conftest.py).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers_tools import env_with_tools

pytest.importorskip("triton")

# One subprocess per (mode, dtype): the compiles of one test, so that `pytest -n` shares them out.
COMPILE_ONE = textwrap.dedent(
    """
    import json
    import sys
    import torch
    from m3net.kernels.dtw import launch_configs
    from static_sm90 import compile_launch

    SHAPES = {"float32": ((5, 7), (8, 8)), "bfloat16": ((8, 8),), "float64": ((5, 7),)}

    def compile_pass(mode, n, m, pass_, dtype, similarity=False):
        out = []
        for launch in launch_configs(mode, n, m, pass_, dtype, similarity=similarity, batch=64):
            k = compile_launch(launch)
            out.append({"kernel": launch.kernel.fn.__name__, "arch": k.metadata.target.arch,
                        "ptx_entry": ".entry" in k.asm["ptx"], "cubin_bytes": len(k.asm["cubin"]),
                        "fp64_scale": ".param .f64" in k.asm["ptx"]})
        return out

    mode, cost_type = sys.argv[1], sys.argv[2]
    dtype = getattr(torch, cost_type)
    results = {}
    # Short path at an odd shape (one load per element) and at 8 x 8 (vector loads); the strided
    # similarity on 16-bit and fp32, the plain cost on fp64.
    fwd, bwd = ("fwd symmetric", "bwd symmetric") if mode == "otam" else ("fwd+length", "bwd")
    similarity = cost_type != "float64"
    for n, m in SHAPES[cost_type]:
        results[f"short-fwd-{n}x{m}"] = compile_pass(mode, n, m, fwd, dtype, similarity)
        results[f"short-bwd-{n}x{m}"] = compile_pass(mode, n, m, bwd, dtype, similarity)
    # Long path: 8 lanes of 8 columns per pair (lanes exchange values) at 17 x 40.
    results["long-fwd"] = compile_pass(mode, 17, 40, "fwd (training)", dtype)
    results["long-bwd"] = compile_pass(mode, 17, 40, "bwd", dtype)
    print("RESULTS" + json.dumps(results))
    """
)


def _run(script, tag, *args):
    env = env_with_tools({k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})  # static_sm90: a tool
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=3000)
    if "triton.backends.nvidia" in proc.stderr and "No module named" in proc.stderr:
        pytest.skip("this triton wheel has no CUDA backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(text for text in proc.stdout.splitlines() if text.startswith(tag))
    return json.loads(line[len(tag):])


# Every mode in fp32; the 16-bit and fp64 branches in some of them (a cold compile takes ~5-20 s on these
# 2 cores: the whole 3 x 3 grid cost CI minutes). The GPU session compiles every combination for real.
SHAPES = {"float32": ["5x7", "8x8"], "bfloat16": ["8x8"], "float64": ["5x7"]}


@pytest.mark.slow
@pytest.mark.parametrize("mode, cost_type", [("soft", "float32"), ("hard", "float32"), ("otam", "float32"),
                                             ("soft", "bfloat16"), ("otam", "bfloat16"), ("hard", "float64")])
def test_kernels_compile_for_sm90(mode, cost_type):
    compiled = _run(COMPILE_ONE, "RESULTS", mode, cost_type)
    for kernel in ("short-fwd", "short-bwd", "long-fwd", "long-bwd"):
        shapes = SHAPES[cost_type] if kernel.startswith("short") else [None]
        for shape in shapes:
            launches = compiled["-".join(filter(None, [kernel, shape]))]
            assert launches, f"{kernel} {shape or ''}: the pass issued no launch"
            for result in launches:
                assert result["arch"] == 90
                assert result["ptx_entry"] and result["cubin_bytes"] > 0
                # γ (as log2(e)/γ) reaches every kernel that takes it as an fp64 argument, never rounded to fp32
                if result["kernel"] != "_dtw_long_bwd_kernel":
                    assert result["fp64_scale"], result
