"""The v2 DTW paths: register-resident short kernels, recomputing backward, fused value + path length.

Interpreted on CPU (conftest sets TRITON_INTERPRET=1), compiled on CUDA. Shapes stay small so the
interpreter keeps CI fast; the sm_90 cost table is checked in the slow test at the end.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers_params import fast_first, fast_first_rows
from helpers_tools import env_with_tools
from test_dtw import DEVICE, all_warping_paths, path_sums

from m3net.kernels import SHORT_MAX, dtw, dtw_path, dtw_reference, dtw_symmetric, dtw_with_length

pytest.importorskip("triton")
dtw_module = sys.modules["m3net.kernels.dtw"]

SHAPES = [(1, 7), (7, 1), (5, 13), (1, 1), (2, 3), (8, 8)]  # odd shapes first: fast_first keeps them


def _grad(fn, cost, **kwargs):
    leaf = cost.detach().clone().requires_grad_()
    value = fn(leaf, **kwargs)
    (grad,) = torch.autograd.grad((value * torch.linspace(0.5, 1.5, len(value), dtype=value.dtype)).sum(), leaf)
    return value, grad


@pytest.mark.parametrize("n, m", [(1, 1), (2, 2), (3, 4), (4, 3), (5, 5)])
def test_short_kernel_brute_force_all_paths(n, m):
    gen = torch.Generator().manual_seed(10 * n + m)
    cost = torch.rand(3, n, m, generator=gen, dtype=torch.float64) * 2
    sums = path_sums(cost)
    got = dtw(cost.to(DEVICE), mode="hard", backend="triton").cpu()
    torch.testing.assert_close(got, sums.min(dim=1).values)
    for gamma in (0.01, 0.3, 2.0):
        expected = -gamma * torch.logsumexp(-sums / gamma, dim=1)
        got = dtw(cost.to(DEVICE), mode="soft", gamma=gamma, backend="triton").cpu()
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", fast_first([0.01, 1.0], keep=1))
def test_short_kernel_matches_tslearn(gamma):
    tslearn_metrics = pytest.importorskip("tslearn.metrics")
    rng = np.random.default_rng(7)
    for n, m in [(3, 7), (8, 8)]:
        cost = rng.random((n, m)) * 2
        oracle = tslearn_metrics.SoftDTW(cost, gamma=gamma)
        c = torch.tensor(cost[None]).to(DEVICE).requires_grad_()
        value = dtw(c, mode="soft", gamma=gamma, backend="triton")
        (grad,) = torch.autograd.grad(value.sum(), c)
        np.testing.assert_allclose(value.item(), oracle.compute(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(grad[0].cpu().numpy(), oracle.grad(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mode, shape", fast_first_rows(  # the fast loop: OTAM (the most rules) at (5, 13)
    [(mode, shape) for shape in sorted(SHAPES, key=lambda s: -s[0] * s[1]) for mode in ("otam", "soft", "hard")],
    keep=1))
def test_short_matches_long_kernel(mode, shape):
    """The two Triton paths agree, forward and backward (the long one recomputes from checkpoint rows)."""
    gen = torch.Generator().manual_seed(sum(shape))
    cost = (torch.rand(37, *shape, generator=gen) * 2).to(DEVICE)
    short, _ = dtw_module._short_forward(cost, mode, 0.1, with_length=False)
    long, checkpoints = dtw_module._long_forward(cost, mode, 0.1, checkpoints=True)
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)
    grad_out = torch.linspace(0.5, 1.5, 37, device=DEVICE)
    short_grad = dtw_module._short_backward(cost, grad_out, mode, 0.1)
    long_grad = dtw_module._long_backward(cost, checkpoints, grad_out, mode, 0.1, cost.dtype)
    torch.testing.assert_close(short_grad, long_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shape", fast_first([(SHORT_MAX + 1, 3), *SHAPES], keep=2))
def test_value_and_length_equal_path_average(backend, shape):
    gen = torch.Generator().manual_seed(3 + sum(shape))
    cost = (torch.rand(5, *shape, generator=gen, dtype=torch.float64) * 2).to(DEVICE)
    cost[0] = 0.5  # all ties: the documented tie-break decides the path and its length
    path = dtw_path(cost, backend="torch").to(cost.dtype)
    length = path.sum(dim=(1, 2))
    value, got_length = dtw_with_length(cost, mode="hard", backend=backend)
    torch.testing.assert_close(got_length, length)
    torch.testing.assert_close(value / got_length, (cost * path).sum(dim=(1, 2)) / length)
    soft, soft_length = dtw_with_length(cost, mode="soft", gamma=0.2, backend=backend)
    torch.testing.assert_close(soft_length, length)  # the hard path's length, in soft mode too
    torch.testing.assert_close(soft, dtw_reference(cost, mode="soft", gamma=0.2))


def test_length_is_brute_force_optimal_path_length():
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(6, 4, 5, generator=gen, dtype=torch.float64)
    paths = all_warping_paths(4, 5)
    best = path_sums(cost).argmin(dim=1)
    _, length = dtw_with_length(cost.to(DEVICE), mode="hard", backend="triton")
    assert length.cpu().tolist() == [float(len(paths[b])) for b in best]


def test_value_and_length_gradient_and_dtypes():
    cost = (torch.rand(4, 6, 6) * 2).to(DEVICE, torch.bfloat16).requires_grad_()
    value, length = dtw_with_length(cost, mode="hard", backend="triton")
    assert value.dtype == torch.float32 and length.dtype == torch.float32 and not length.requires_grad
    (value / length).sum().backward()
    path = dtw_path(cost.detach().float(), backend="torch")
    expected = path.float().to(DEVICE) / length[:, None, None]
    torch.testing.assert_close(cost.grad.float(), expected, rtol=1e-2, atol=1e-2)  # bf16 gradient
    empty_value, empty_length = dtw_with_length(torch.rand(0, 3, 3, device=DEVICE), backend="triton")
    assert empty_value.shape == empty_length.shape == (0,)
    with pytest.raises(ValueError, match="soft' or 'hard"):
        dtw_with_length(torch.rand(1, 3, 3), mode="otam")


@pytest.mark.parametrize("batch", [1, 31, 33, 300])
def test_block_size_from_batch_covers_every_pair(batch):
    cost = (torch.rand(batch, 3, 5) * 2).to(DEVICE)
    value, grad = _grad(dtw, cost, mode="soft", backend="triton")
    ref_value, ref_grad = _grad(dtw_reference, cost, mode="soft")
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_strided_costs_short_path():
    base = (torch.rand(9, 7, 6) * 2).to(DEVICE)
    for view in (base.transpose(1, 2), base[::2, 1:, ::2]):
        for mode in ("soft", "hard", "otam"):
            value, grad = _grad(dtw, view, mode=mode, backend="triton")
            ref_value, ref_grad = _grad(dtw_reference, view.contiguous(), mode=mode)
            torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_static_sm90_targets():
    """The static targets: soft forward 8x8 fp32 <= 1,500 SASS/pair without spills, its cost read as 16
    vector loads without a barrier, backward traffic <= 800 B/pair (compiled for sm_90 without a GPU, in
    a subprocess)."""
    script = (
        "import json; import static_sm90 as s; "
        "print('ROWS' + json.dumps(s.measure(lambda path, mode, p, n, m, dt, sim: path == 'short' and mode == 'soft' "
        "and (n, m, dt) == (8, 8, 'fp32') and p in ('fwd', 'bwd'))[0]))"
    )
    env = env_with_tools({k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})  # static_sm90: a tool
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    if "triton.backends.nvidia" in proc.stderr and "No module named" in proc.stderr:
        pytest.skip("this triton wheel has no CUDA backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["pass"]: r for r in json.loads(proc.stdout.split("ROWS", 1)[1])}
    assert rows["fwd"]["sass_per_pair"] <= 1500 and rows["fwd"]["spills"] == rows["fwd"]["spill_instructions"] == 0
    # each pair's 8 x 8 fp32 tile: one 16-byte load per half row, straight into the thread's registers
    assert rows["fwd"]["global_loads"] == 16 and rows["fwd"]["barriers"] == 0
    assert rows["bwd"]["bytes_per_pair"] <= 800 and rows["bwd"]["spills"] == rows["bwd"]["spill_instructions"] == 0


@pytest.mark.parametrize("mode", ["otam", "soft", "hard"])
# (9, 3): fused forward, one backward launch per direction; (SHORT_MAX + 1, 2): two calls on the long path
@pytest.mark.parametrize("shape", fast_first([(9, 3), (SHORT_MAX + 1, 2), (3, 5), (8, 8), (1, 4)], keep=1))
def test_symmetric_is_both_directions(mode, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    cost = (torch.rand(33, *shape, generator=gen) * 2).to(DEVICE)
    value, grad = _grad(dtw_symmetric, cost, mode=mode, backend="triton")

    def two_calls(c, mode):
        return dtw_reference(c, mode=mode) + dtw_reference(c.transpose(1, 2), mode=mode)

    ref_value, ref_grad = _grad(two_calls, cost, mode=mode)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", fast_first(["otam", "soft"], keep=1))
def test_switch_point_both_sides(mode):
    """N or M = SHORT_MAX runs the short kernel, SHORT_MAX + 1 the long one; both equal the reference,
    values and gradients (thin grids keep the interpreter fast; the slow test below is square, all modes)."""
    for shape in [(SHORT_MAX, 2), (SHORT_MAX + 1, 2), (2, SHORT_MAX), (2, SHORT_MAX + 1)]:
        kernel = dtw_module.launch_configs(mode, *shape, "fwd")[0].kernel.fn.__name__
        assert kernel == ("_dtw_short_fwd_kernel" if max(shape) <= SHORT_MAX else "_dtw_long_fwd_kernel")
        gen = torch.Generator().manual_seed(sum(shape))
        cost = (torch.rand(2, *shape, generator=gen) * 2).to(DEVICE)
        value, grad = _grad(dtw, cost, mode=mode, backend="triton")
        ref_value, ref_grad = _grad(dtw_reference, cost, mode=mode)
        torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [SHORT_MAX, SHORT_MAX + 1, 33])
def test_switch_point_square(mode, dtype, t):
    gen = torch.Generator().manual_seed(t)
    cost = (torch.rand(3, t, t, generator=gen) * 2).to(DEVICE, dtype)
    value, grad = _grad(dtw, cost, mode=mode, backend="triton")
    ref_value, ref_grad = _grad(dtw_reference, cost, mode=mode)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(value, ref_value, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=tol, atol=tol)


def _specialisation(launch):
    """What Triton's JITFunction.run keys a compile on for this launch on an sm_90 GPU: the specialised
    signature (types, == 1 / % 16 / alignment) of its arguments, from Triton's own binder."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    kernel = launch.kernel  # under TRITON_INTERPRET an InterpretedFunction: rebuild the JIT function
    kernel = kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn, **kernel.kwargs)
    binder = create_function_from_signature(kernel.signature, kernel.params, make_backend(GPUTarget("cuda", 90, 32)))
    _, specialization, _ = binder(*launch.args, **launch.constexprs, num_warps=launch.num_warps)
    return kernel.fn.__name__, specialization, launch.num_warps


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (20, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_launches_compile_once_with_fp64_scale(shape, dtype):
    """Every batch size reuses one compiled variant per pass (num_warps pinned, batch arguments not
    specialised), the soft-min scale is an fp64 argument (no per-call tensor, γ not rounded to fp32
    for fp64 costs), and no launch takes a one-element tensor."""
    pytest.importorskip("triton.backends.nvidia")
    for pass_ in dtw_module.PASSES:
        for similarity in (False, True) if pass_ != "fwd (training)" else (False,):
            variants = [[_specialisation(launch) for launch in
                         dtw_module.launch_configs("soft", *shape, pass_, dtype, similarity=similarity, batch=batch)]
                        for batch in (1, 5, 32)]
            assert variants[0] and all(v == variants[0] for v in variants[1:]), (pass_, similarity)
            for launch in dtw_module.launch_configs("soft", *shape, pass_, dtype, similarity=similarity):
                assert not any(isinstance(a, torch.Tensor) and a.numel() == 1 for a in launch.args)
                floats = [spec for arg, spec in zip(launch.args, _specialisation(launch)[1]) if isinstance(arg, float)]
                assert all(spec[0] == "fp64" for spec in floats), floats


@pytest.mark.parametrize("backend, shape", [("triton", (5, 5)), ("triton", (9, 3)), ("torch", (5, 5))])
def test_symmetric_16_bit_gradient_rounded_once(backend, shape):
    """dtw_symmetric's 16-bit gradient is the two directions' sum rounded once: equal to the fp32
    computation on the same (upcast) costs, rounded. (5, 5): one program for both directions, (9, 3):
    one launch each; torch: two calls on one fp32 copy (as the long path). bf16 where the rounding is the GPU's (or
    torch's); the Triton interpreter truncates fp32 -> bf16 instead of rounding, so there fp16 (rounded
    by numpy) stands in: the kernels treat both 16-bit dtypes alike."""
    interpreted = backend == "triton" and DEVICE == "cpu"
    dtype = torch.float16 if interpreted else torch.bfloat16
    gen = torch.Generator().manual_seed(sum(shape))
    cost = (torch.rand(8, *shape, generator=gen) * 2).to(DEVICE, dtype)
    _, grad = _grad(dtw_symmetric, cost, mode="otam", backend=backend)
    _, grad32 = _grad(dtw_symmetric, cost.float(), mode="otam", backend=backend)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, grad32.to(dtype), rtol=0, atol=0)
