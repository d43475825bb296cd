"""DTW kernel against independent oracles.

Oracles: brute force over every monotone warping path, float64 gradcheck, tslearn's soft-DTW,
the literal per-cell loops of m3net.kernels.eager, and the torch reference vs the Triton kernel
(interpreted on CPU, compiled on CUDA).
"""
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers_params import fast_first, fast_first_rows

from m3net.errors import ConfigError
from m3net.kernels import (
    MAX_KERNEL_WIDTH,
    SHORT_MAX,
    DTWFallbackWarning,
    cosine_cost,
    dtw,
    dtw_path,
    dtw_reference,
    dtw_with_length,
)
from m3net.kernels.eager import eager_dtw

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_backend(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", "triton")


def all_warping_paths(n, m):
    """Every monotone path (0,0) -> (n-1,m-1) with steps (1,1), (1,0), (0,1)."""
    paths = []

    def extend(path):
        i, j = path[-1]
        if (i, j) == (n - 1, m - 1):
            paths.append(path)
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                extend(path + [(i + di, j + dj)])

    extend([(0, 0)])
    return paths


def path_sums(cost):
    n, m = cost.shape[1:]
    return torch.stack([sum(cost[:, i, j] for i, j in p) for p in all_warping_paths(n, m)], dim=1)


@pytest.mark.parametrize("n", range(1, 6))
@pytest.mark.parametrize("m", range(1, 6))
def test_brute_force_all_paths(n, m):
    gen = torch.Generator().manual_seed(100 * n + m)
    cost = torch.rand(4, n, m, generator=gen, dtype=torch.float64) * 2
    sums = path_sums(cost)  # (B, paths)
    assert torch.allclose(dtw(cost, mode="hard"), sums.min(dim=1).values)
    for gamma in (0.01, 0.3, 2.0):
        expected = -gamma * torch.logsumexp(-sums / gamma, dim=1)
        assert torch.allclose(dtw(cost, mode="soft", gamma=gamma), expected, rtol=1e-10, atol=1e-10)


def test_hard_gradient_is_optimal_path_indicator():
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(6, 4, 5, generator=gen, dtype=torch.float64)
    sums = path_sums(cost)
    best = sums.argmin(dim=1)
    paths = all_warping_paths(4, 5)
    path = dtw_path(cost)
    for b in range(cost.shape[0]):
        expected = torch.zeros(4, 5, dtype=torch.bool)
        for i, j in paths[best[b]]:
            expected[i, j] = True
        assert torch.equal(path[b], expected)


@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
def test_gradcheck_float64_reference(mode):
    gen = torch.Generator().manual_seed(7)
    # Random costs have no hard ties, so the hard value is differentiable there.
    cost = (torch.rand(3, 4, 6, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: dtw_reference(c, mode=mode, gamma=0.2), (cost,))


@pytest.mark.parametrize("fast_mode", fast_first([True, False], keep=1))  # the whole Jacobian: 48 launches
@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
def test_gradcheck_float64_triton(mode, fast_mode, triton_backend):
    gen = torch.Generator().manual_seed(8)
    cost = (torch.rand(2, 3, 4, generator=gen, dtype=torch.float64) * 2).to(DEVICE).requires_grad_()  # 2 pairs
    assert torch.autograd.gradcheck(lambda c: dtw(c, mode=mode, gamma=0.2), (cost,), fast_mode=fast_mode)


# (mode, rows, columns, short_max): the fast case routes a 9x5 grid to the long path by lowering SHORT_MAX to 4
# (3 segments of SEGMENT_ROWS = 4, a tenth of the time interpreted); the full suite runs every mode at the real
# switch point, 2·SHORT_MAX + 1 rows (~14 s each interpreted).
@pytest.mark.parametrize("mode, rows, columns, short_max", fast_first_rows(
    [("otam", 9, 5, 4)] + [(mode, 2 * SHORT_MAX + 1, 9, SHORT_MAX) for mode in ("otam", "soft", "hard")], keep=1))
def test_gradcheck_float64_triton_long_path(mode, rows, columns, short_max, monkeypatch, triton_backend):
    """The long path's backward, recomputed a segment at a time from the forward's checkpoint rows, against
    finite differences (torch's fast gradcheck), over several segments."""
    monkeypatch.setattr(sys.modules["m3net.kernels.dtw"], "SHORT_MAX", short_max)
    gen = torch.Generator().manual_seed(9)
    cost = (torch.rand(2, rows, columns, generator=gen, dtype=torch.float64) * 2).to(DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: dtw(c, mode=mode, gamma=0.2), (cost,), fast_mode=True)


@pytest.mark.slow
@pytest.mark.parametrize("segment", [1, 3, 5])
def test_long_backward_at_other_segment_heights(segment, monkeypatch, triton_backend):
    """The long backward's segments (SEGMENT_ROWS rows recomputed at a time) at heights whose segment
    boundaries fall elsewhere against the lanes' skew: values and gradients equal the reference's."""
    from m3net.kernels import dtw_long

    monkeypatch.setattr(dtw_long, "SEGMENT_ROWS", segment)
    gen = torch.Generator().manual_seed(segment)
    for mode in ("soft", "hard", "otam"):
        for shape in [(SHORT_MAX + 3, 20), (2, SHORT_MAX + 2), (SHORT_MAX + 1, 1)]:
            cost = (torch.rand(3, *shape, generator=gen, dtype=torch.float64) * 2).to(DEVICE)
            value, grad = _value_and_grad(dtw, cost, mode, gamma=0.1)
            ref_value, ref_grad = _value_and_grad(dtw_reference, cost, mode, gamma=0.1)
            torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", fast_first([0.01, 10.0, 0.1, 1.0], keep=2))  # the extremes first
def test_soft_matches_tslearn(gamma):
    tslearn_metrics = pytest.importorskip("tslearn.metrics")
    rng = np.random.default_rng(int(gamma * 1000))
    for n, m in [(1, 1), (3, 7), (8, 8), (6, 2)]:
        cost = rng.random((n, m)) * 2
        oracle = tslearn_metrics.SoftDTW(cost, gamma=gamma)
        expected_value = oracle.compute()
        expected_grad = oracle.grad()
        c = torch.tensor(cost[None], requires_grad=True)
        value = dtw(c, mode="soft", gamma=gamma)
        (grad,) = torch.autograd.grad(value.sum(), c)
        np.testing.assert_allclose(value.item(), expected_value, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(grad[0].numpy(), expected_grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (8, 8), (5, 13)])
def test_reference_matches_literal_loop(mode, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    cost = (torch.rand(3, *shape, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    value = dtw_reference(cost, mode=mode, gamma=0.1)
    (grad,) = torch.autograd.grad(value.sum(), cost)
    loop_cost = cost.detach().clone().requires_grad_()
    expected = eager_dtw(loop_cost, mode=mode, gamma=0.1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), loop_cost)
    assert torch.allclose(value, expected, rtol=1e-10, atol=1e-10)
    assert torch.allclose(grad, expected_grad, rtol=1e-8, atol=1e-10)


TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 3e-2}


def _value_and_grad(fn, cost, mode, gamma=0.1):
    leaf = cost.detach().clone().requires_grad_()
    value = fn(leaf, mode=mode, gamma=gamma)
    weights = torch.linspace(0.5, 1.5, len(value), device=value.device)
    (grad,) = torch.autograd.grad((value.float() * weights).sum(), leaf)
    return value, grad


@pytest.mark.parametrize("mode", ["soft", "hard", "otam"])
@pytest.mark.parametrize(
    "dtype, shape",  # the fast loop: every dtype at the odd shape, fp32 at a single row and column; all in CI
    fast_first_rows([(dt, (5, 13)) for dt in (torch.float32, torch.float16, torch.bfloat16)]
                    + [(torch.float32, s) for s in [(1, 7), (7, 1), (1, 1), (8, 8)]]
                    + [(dt, s) for dt in (torch.float16, torch.bfloat16) for s in [(1, 1), (1, 7), (7, 1), (8, 8)]]
                    + [(torch.float32, (33, 17))], keep=5),  # (33, 17): the long path, slow interpreted
)
def test_triton_matches_reference(mode, dtype, shape, triton_backend):
    batch = 3
    gen = torch.Generator().manual_seed(11)
    cost = (torch.rand(batch, *shape, generator=gen) * 2).to(DEVICE, dtype)
    value, grad = _value_and_grad(dtw, cost, mode)
    ref_value, ref_grad = _value_and_grad(dtw_reference, cost, mode)
    assert value.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)  # fp32 values for 16-bit
    assert grad.dtype == dtype
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(value.double(), ref_value.double(), rtol=tol, atol=tol)
    torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("batch", fast_first([1, 257, 3], keep=1))
def test_triton_batches(batch, triton_backend):
    gen = torch.Generator().manual_seed(batch)
    cost = (torch.rand(batch, 8, 8, generator=gen) * 2).to(DEVICE)
    for mode in ("soft", "hard", "otam"):
        value, grad = _value_and_grad(dtw, cost, mode)
        ref_value, ref_grad = _value_and_grad(dtw_reference, cost, mode)
        torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


def _tie_cost():
    # All-zero costs make every predecessor tie: the documented order decides the path.
    return torch.zeros(1, 2, 3)


def test_path_tie_break_reference():
    path = dtw_path(_tie_cost())[0]
    # From (1,2): diag (0,1) wins the three-way tie; (0,1) can only come from (0,0).
    expected = torch.tensor([[True, True, False], [False, False, True]])
    assert torch.equal(path, expected)
    square = dtw_path(torch.zeros(1, 4, 4))[0]
    assert torch.equal(square, torch.eye(4, dtype=torch.bool))


def test_path_tie_break_triton(triton_backend):
    assert torch.equal(dtw_path(_tie_cost().to(DEVICE)).cpu(), dtw_path(_tie_cost()).cpu())
    up_or_left = torch.zeros(1, 3, 2, device=DEVICE)
    assert torch.equal(dtw_path(up_or_left)[0].cpu(), torch.tensor([[True, False], [True, False], [False, True]]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("gamma", fast_first([1e-3, 10.0, 1e-2, 0.1, 1.0], keep=2))
def test_extreme_gamma_is_finite(backend, gamma, monkeypatch):
    if backend == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", backend)
    gen = torch.Generator().manual_seed(5)
    cost = (torch.rand(4, 8, 8, generator=gen) * 2).to(DEVICE)
    cost[0] = 0  # the border of the cost range, both ends
    cost[1] = 2
    for mode in ("soft", "otam"):
        value, grad = _value_and_grad(dtw, cost, mode, gamma=gamma)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()
        # Soft-DTW lies below hard DTW by at most γ·log(#paths): a real bound, not just finiteness.
        if mode == "soft":
            hard = dtw_reference(cost.cpu(), mode="hard")
            assert (value.cpu() <= hard + 1e-4).all()
            assert (value.cpu() >= hard - gamma * np.log(3.0) * 15 - 1e-4).all()


def test_input_errors():
    with pytest.raises(ValueError, match=r"\(B, N, M\)"):
        dtw(torch.rand(4, 4))
    with pytest.raises(TypeError, match="floating"):
        dtw(torch.ones(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="mode"):
        dtw(torch.rand(1, 3, 3), mode="fast")
    with pytest.raises(ValueError, match="gamma"):
        dtw(torch.rand(1, 3, 3), mode="soft", gamma=0.0)
    with pytest.raises(ValueError, match="N and M"):
        dtw(torch.rand(2, 0, 3))


def test_bad_backend_env(monkeypatch):
    monkeypatch.setenv("M3NET_DTW_BACKEND", "cuda-please")
    with pytest.raises(ConfigError, match="M3NET_DTW_BACKEND"):
        dtw(torch.rand(1, 3, 3))
    with pytest.raises(ConfigError, match="backend"):
        dtw(torch.rand(1, 3, 3), backend="cuda-please")


def test_backend_argument_overrides_env(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", "cuda-please")  # never read when backend= is given
    cost = torch.rand(3, 4, 5, device=DEVICE)
    torch.testing.assert_close(dtw(cost, backend="triton"), dtw(cost, backend="torch"))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_batch_and_non_contiguous(backend, monkeypatch):
    if backend == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", backend)
    empty = torch.rand(0, 4, 4, device=DEVICE, requires_grad=True)
    out = dtw(empty)
    assert out.shape == (0,)
    out.sum().backward()
    assert empty.grad.shape == (0, 4, 4)
    assert dtw_path(torch.rand(0, 2, 3)).shape == (0, 2, 3)
    base = torch.rand(5, 7, 6, device=DEVICE)
    view = base.transpose(1, 2)  # (5, 6, 7), non-contiguous
    assert not view.is_contiguous()
    for mode in ("soft", "hard", "otam"):
        torch.testing.assert_close(dtw(view, mode=mode), dtw(view.contiguous(), mode=mode))


def test_width_past_kernel_limit_falls_back_with_one_warning(triton_backend):
    cost = torch.rand(2, 2, MAX_KERNEL_WIDTH + 5, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: once per call site
        values = [dtw(cost, mode="hard") for _ in range(2)]
    fallback = [w for w in caught if issubclass(w.category, DTWFallbackWarning)]
    assert len(fallback) == 1 and "falling back" in str(fallback[0].message)
    assert fallback[0].filename == __file__  # points at the caller, not into the kernel module
    torch.testing.assert_close(values[0], dtw_reference(cost, mode="hard"))


def test_cosine_cost():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, generator=gen)
    y = torch.randn(2, 4, 5, generator=gen)
    c = cosine_cost(x, y)
    expected = 1 - torch.nn.functional.cosine_similarity(x[:, :, None], y[:, None], dim=-1)
    torch.testing.assert_close(c, expected)
    assert c.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="expected x"):
        cosine_cost(x, torch.randn(2, 4, 6))


def _with_inf(shape, seed=2):
    """Costs with +inf cells no optimal path has to cross (one in the first column: next to OTAM's
    zero padding), and the same costs with a whole row of +inf (every path crosses it)."""
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(3, *shape, generator=gen, dtype=torch.float64) * 2
    cost[:, 1, 0] = float("inf")
    cost[0, 2, shape[1] - 2] = float("inf")
    blocked = cost.clone()
    blocked[:, 1, :] = float("inf")
    return cost, blocked


@pytest.mark.parametrize(
    "backend, shape", fast_first_rows([("torch", (4, 5)), ("triton", (4, 5)), ("triton", (SHORT_MAX + 1, 3))], keep=2))
def test_infinite_cost(backend, shape):
    """An inf cost is a cell no path should take: values, gradients and path lengths stay what the
    reference gives (finite where a path avoids it, inf where none can), never NaN. Short and long path."""
    if backend == "triton":
        pytest.importorskip("triton")
    cost, blocked = _with_inf(shape)
    long_path = max(shape) > SHORT_MAX  # slow interpreted: its hard DP is checked through the lengths below
    for mode in ("soft", "otam") if long_path else ("soft", "hard", "otam"):
        value, grad = _value_and_grad(lambda c, **kw: dtw(c, backend=backend, **kw), cost.to(DEVICE), mode)
        ref_value, ref_grad = _value_and_grad(dtw_reference, cost, mode)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), mode
        torch.testing.assert_close(value.cpu(), ref_value, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-10, atol=1e-10)
        assert (grad.cpu()[torch.isinf(cost)] == 0).all()
    for c in (blocked,) if long_path else (cost, blocked):
        # the long path's length is the hard DP's in both modes (one run); the short kernel's soft mode
        # runs the hard DP alongside the soft one
        for mode in ("hard",) if long_path else ("soft", "hard"):
            _, length = dtw_with_length(c.to(DEVICE), mode=mode, backend=backend)
            _, ref_length = dtw_with_length(c, mode=mode, backend="torch")
            assert torch.isfinite(length).all()
            torch.testing.assert_close(length.cpu(), ref_length)
    hard = dtw(blocked.to(DEVICE), mode="hard", backend=backend)
    assert torch.isinf(hard).all() and torch.isinf(dtw_reference(blocked, mode="hard")).all()
    otam = dtw(blocked.to(DEVICE), mode="otam", backend=backend)  # OTAM can go around a row through its padding
    torch.testing.assert_close(otam.cpu(), dtw_reference(blocked, mode="otam"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", fast_first([1e-3, 1 / 3], keep=1))
def test_fp64_gamma_long_path(gamma, triton_backend):
    """fp64 costs keep an fp64 γ on the long path (N > SHORT_MAX): values and gradients equal the
    float64 reference to float64 precision (a γ rounded to fp32 is off by ~1e-8 relative).
    test_dtw_short.test_launches_compile_once_with_fp64_scale checks the compiled argument's type."""
    gen = torch.Generator().manual_seed(1)
    cost = (torch.rand(2, SHORT_MAX + 1, 2, generator=gen, dtype=torch.float64) * 2).to(DEVICE)
    for mode in ("soft", "otam"):
        value, grad = _value_and_grad(dtw, cost, mode, gamma=gamma)
        ref_value, ref_grad = _value_and_grad(dtw_reference, cost, mode, gamma=gamma)
        torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("n, m", [(8, 8), (SHORT_MAX + 1, 8)])
def test_gpu_batch_innermost_past_2_31_elements(n, m):
    """A batch-innermost layout ((N, M, B) storage viewed as (B, N, M)) of more than 2^31 elements: the
    row offset i·stride_n of the last rows passes 2^31, so the kernels' offsets must be 64-bit.
    The short path (8 x 8) and the long path; 8.6 GB of fp32 each."""
    batch = 2**31 // (n * m) + 4096
    gen = torch.Generator(device="cuda").manual_seed(0)
    cost = torch.rand(n, m, batch, generator=gen, device="cuda").permute(2, 0, 1)  # strides (1, m·B, B)
    values = dtw(cost, mode="soft", backend="triton")
    check = torch.cat([torch.arange(4, device="cuda"), torch.arange(batch - 4, batch, device="cuda")])
    torch.testing.assert_close(values[check], dtw_reference(cost[check].contiguous().cpu(), mode="soft").cuda(),
                               rtol=1e-5, atol=1e-5)
