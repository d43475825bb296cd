"""The Triton kernels compile ahead of time for Hopper (sm_90) on a machine without a GPU.

The interpreter checks the kernels' arithmetic; this checks that the same source also lowers
through Triton's real compiler (TTIR -> TTGIR -> LLVM -> PTX -> cubin via ptxas) for every mode
and dtype (long and short paths), so a GPU machine does not meet a compile error first. It runs in a subprocess because
the test session defines the kernels in interpreter mode (TRITON_INTERPRET=1, see conftest.py).
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
    import importlib, json
    import triton.language as tl
    from m3net.kernels.static_sm90 import compile_for_sm90

    dtw_module = importlib.import_module("m3net.kernels.dtw")

    def compile_kernel(kernel, pointer_types, constexprs):
        k = compile_for_sm90(kernel, pointer_types, constexprs)
        return {"arch": k.metadata.target.arch, "ptx_entry": ".entry" in k.asm["ptx"],
                "cubin_bytes": len(k.asm["cubin"])}

    results = {}
    for mode in ("soft", "hard", "otam"):
        for cost_type, acc in (("fp32", "float32"), ("bf16", "float32"), ("fp64", "float64")):
            acc_ptr = "*fp64" if acc == "float64" else "*fp32"
            acc_dtype = getattr(tl, acc)
            results[f"fwd-{mode}-{cost_type}"] = compile_kernel(
                dtw_module._dtw_fwd_kernel,
                {"cost_ptr": "*" + cost_type, "out_ptr": acc_ptr, "w_ptr": acc_ptr},
                {"OTAM": mode == "otam", "HARD": mode == "hard", "STORE_WEIGHTS": True,
                 "ACC_DTYPE": acc_dtype, "BLOCK_B": 128, "BLOCK_M": 16})
            results[f"bwd-{mode}-{cost_type}"] = compile_kernel(
                dtw_module._dtw_bwd_kernel,
                {"w_ptr": acc_ptr, "grad_out_ptr": acc_ptr, "grad_ptr": "*" + cost_type},
                {"OTAM": mode == "otam", "ACC_DTYPE": acc_dtype, "BLOCK_B": 128, "BLOCK_M": 16})
            # SIMILARITY (dtw_similarity's strided (Q, S, N, M) input, 1 - s in the load) on the 16-bit and fp32
            # costs, the plain (B, N, M) cost on fp64: both branches compile for every mode.
            short = {"N": 5, "M": 7, "OTAM": mode == "otam", "HARD": mode == "hard", "FAST_MATH": acc == "float32",
                     "SYMMETRIC": mode == "otam", "SIMILARITY": cost_type != "fp64", "BLOCK_B": 64, "MP": 8, "BITS": 3,
                     "MP_T": 8, "BITS_T": 3}
            results[f"short-fwd-{mode}-{cost_type}"] = compile_kernel(
                dtw_module._dtw_short_fwd_kernel,
                {"cost_ptr": "*" + cost_type, "scale_ptr": acc_ptr, "out_ptr": acc_ptr, "length_ptr": acc_ptr},
                {**short, "LENGTH": mode != "otam"})
            results[f"short-bwd-{mode}-{cost_type}"] = compile_kernel(
                dtw_module._dtw_short_bwd_kernel,
                {"cost_ptr": "*" + cost_type, "scale_ptr": acc_ptr, "grad_out_ptr": acc_ptr,
                 "grad_ptr": "*" + cost_type}, short)
    print("RESULTS" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", COMPILE_ALL], capture_output=True, text=True, env=env, timeout=600)
    if "triton.backends.nvidia" in proc.stderr and "No module named" in proc.stderr:
        pytest.skip("this triton wheel has no CUDA backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(text for text in proc.stdout.splitlines() if text.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["fwd", "bwd", "short-fwd", "short-bwd"])
@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
@pytest.mark.parametrize("cost_type", ["fp32", "bf16", "fp64"])
def test_kernels_compile_for_sm90(compiled, kernel, mode, cost_type):
    result = compiled[f"{kernel}-{mode}-{cost_type}"]
    assert result["arch"] == 90
    assert result["ptx_entry"] and result["cubin_bytes"] > 0
