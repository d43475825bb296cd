"""dtw_similarity: strided (Q, S, N, M) similarities with the cost 1 - s formed in the kernel, the
matchers on it, and the DTW custom ops under torch.compile.

Oracles: the existing cost path on a materialised 1 - s (dtw / dtw_with_length / dtw_symmetric),
float64 gradcheck, the torch reference vs the Triton kernel (interpreted on CPU, compiled on CUDA),
and eager vs torch.compile. GPU-only tests (marked ``gpu``) repeat the strided checks at the
matchers' sizes with the compiled kernel.
"""
import sys

import pytest
import torch
from helpers_params import fast_first, fast_first_rows
from test_dtw import DEVICE, TOLERANCES

from m3net.kernels import SHORT_MAX, dtw, dtw_similarity, dtw_symmetric, dtw_with_length
from m3net.kernels.dtw_short import _divisor_magic
from m3net.model.baselines import OTAM, otam_scores
from m3net.model.episode_ops import cosine_cost_all_pairs, similarity_all_pairs
from m3net.model.matchers import instance_matching

dtw_module = sys.modules["m3net.kernels.dtw"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def matmul_view(q, s, n, m, dtype=torch.float32, device=DEVICE, seed=0):
    """The (Q, S, N, M) view of a (Q·N, S·M) matmul-shaped buffer, permuted, not copied (as the matchers
    build it), with values in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    flat = (torch.rand(q * n, s * m, generator=gen, dtype=torch.float64) * 2 - 1).to(device, dtype)
    return flat.view(q, n, s, m).transpose(1, 2)


def layouts(q, s, n, m, dtype=torch.float32):
    """Odd layouts of the same kind of input: the permuted matmul view, a contiguous tensor, and a
    view with a sliced batch and a transposed matrix."""
    wide = matmul_view(q, 2 * s, m, n, dtype, seed=1)[:, ::2].transpose(2, 3)  # (Q, S, N, M), every stride odd
    return {"matmul view": matmul_view(q, s, n, m, dtype), "contiguous": matmul_view(q, s, n, m, dtype).contiguous(),
            "sliced, transposed": wide}


FLAGS = {  # the public cost-path function each dtw_similarity flag combination stands for
    "plain": ({}, lambda c, mode, **kw: dtw(c, mode=mode, **kw)),
    "with_length": ({"with_length": True}, lambda c, mode, **kw: dtw_with_length(c, mode=mode, **kw)),
    "symmetric": ({"symmetric": True}, lambda c, mode, **kw: dtw_symmetric(c, mode=mode, **kw)),
}


def _value_and_grad(fn, x):
    """(outputs, d(Σ w·value)/dx) with uneven weights w, so a gradient routed to the wrong pair shows."""
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf)
    value = out[0] if isinstance(out, tuple) else out
    weights = torch.linspace(0.5, 1.5, value.numel(), device=value.device, dtype=torch.float64)
    (grad,) = torch.autograd.grad((value.double().flatten() * weights).sum(), leaf)
    return out, grad


def _check_against_cost_path(sim, mode, flag, backend, tol, gamma=0.1):
    """dtw_similarity(sim) against the existing path: 1 - s materialised, pairs flattened, the torch
    reference. The short kernel forms 1 - s of 16-bit similarities in fp32 (its accumulation dtype),
    so there the oracle does too (rounding 1 - s to 16 bits could flip a hard path)."""
    kwargs, cost_fn = FLAGS[flag]
    q, s = sim.shape[:2]
    out, grad = _value_and_grad(lambda x: dtw_similarity(x, mode, gamma, backend=backend, **kwargs), sim)
    in_kernel = backend == "triton" and max(sim.shape[-2:]) <= SHORT_MAX
    acc = torch.float32 if in_kernel and sim.dtype in (torch.float16, torch.bfloat16) else sim.dtype
    ref, ref_grad = _value_and_grad(lambda x: cost_fn((1 - x.to(acc)).flatten(0, 1), mode, gamma=gamma,
                                                      backend="torch"), sim)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for got, expected in zip(outs, refs):
        assert got.shape == (q, s) and got.dtype == expected.dtype
        torch.testing.assert_close(got.double(), expected.view(q, s).double(), rtol=tol, atol=tol)
    assert grad.dtype == sim.dtype
    torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=tol, atol=tol)
    return grad


@pytest.mark.parametrize("mode, flag", [("soft", "plain"), ("hard", "with_length"), ("soft", "with_length"),
                                        ("otam", "symmetric"), ("otam", "plain")])
@pytest.mark.parametrize("qs", [(1, 1), (1, 5), (4, 1), (3, 7)])
def test_reference_path_equals_materialised_cost(mode, flag, qs):
    """On the torch path dtw_similarity forms 1 - s itself: bit-identical to the existing path."""
    sim = matmul_view(*qs, 5, 6, torch.float64, device="cpu")
    _check_against_cost_path(sim, mode, flag, "torch", tol=0)


@pytest.mark.parametrize("mode, fast_mode", fast_first_rows(
    [("soft", True), ("soft", False), ("hard", False), ("otam", False)], keep=1))  # fast_mode: a random projection
def test_gradcheck_float64(mode, fast_mode):
    sim = matmul_view(1, 2, 3, 4, torch.float64)  # two pairs: the second's offset comes from the strides
    flags = {"symmetric": True} if mode == "otam" else {"with_length": True}
    for backend in ("torch", "triton"):
        if backend == "triton":
            pytest.importorskip("triton")

        def value(x, backend=backend):
            out = dtw_similarity(x, mode, 0.3, backend=backend, **flags)
            return out[0] if isinstance(out, tuple) else out

        assert torch.autograd.gradcheck(value, (sim.detach().clone().requires_grad_(),), fast_mode=fast_mode)


@pytest.mark.parametrize("layout", ["matmul view", "contiguous", "sliced, transposed"])
@pytest.mark.parametrize("mode, flag", [("soft", "with_length"), ("hard", "with_length"), ("otam", "symmetric"),
                                        ("soft", "plain")])
@pytest.mark.parametrize("shape", fast_first([(2, 3, 9, 3), (1, 3, 2, 5), (1, 1, 1, 1), (5, 1, 4, 3), (3, 4, 8, 8)],
                                             keep=1))
def test_triton_strided_matches_cost_path(layout, mode, flag, shape):
    """The short kernel reading s in place (two batch strides, any matrix strides) against the cost
    path; (2, 3, 9, 3) takes the symmetric backward's one-launch-per-direction branch."""
    pytest.importorskip("triton")
    sim = layouts(*shape)[layout]
    grad = _check_against_cost_path(sim, mode, flag, "triton", tol=1e-5)
    if sim.is_contiguous() or sim.transpose(1, 2).is_contiguous():  # dense: dsim comes back in s's layout
        assert grad.stride() == sim.stride()


def test_kernel_reads_the_view_in_place(monkeypatch):
    """No copy on the short path: the kernel gets the caller's storage and strides, with SIMILARITY."""
    pytest.importorskip("triton")
    sim = matmul_view(2, 3, 4, 4)
    seen = []
    short_forward = dtw_module._short_forward

    def spy(cost, *args):
        seen.append((cost.data_ptr(), cost.stride(), args[-1]))
        return short_forward(cost, *args)

    monkeypatch.setattr(dtw_module, "_short_forward", spy)
    dtw_similarity(sim, "soft", backend="triton", with_length=True)
    assert seen == [(sim.data_ptr(), sim.stride(), True)]


@pytest.mark.parametrize("dtype", fast_first([torch.bfloat16, torch.float16], keep=1))
@pytest.mark.parametrize("mode, flag", [("soft", "with_length"), ("hard", "with_length"), ("otam", "symmetric")])
def test_triton_strided_16_bit(dtype, mode, flag):
    """16-bit s: values in fp32, dsim in the input dtype."""
    pytest.importorskip("triton")
    _check_against_cost_path(matmul_view(3, 5, 6, 7, dtype), mode, flag, "triton", tol=TOLERANCES[dtype])


@pytest.mark.parametrize("dtype, shape", fast_first_rows(  # the short kernel first, then the long path
    [(dtype, shape) for dtype in (torch.bfloat16, torch.float16) for shape in [(3, 4, 5, 6), (1, 2, SHORT_MAX + 1, 3)]],
    keep=1))
def test_16_bit_one_minus_s_in_fp32_on_every_path(dtype, shape):
    """1 - s of a 16-bit similarity is formed in fp32 (the accumulation dtype) on every path, as the
    short kernel forms it in its load: the torch fallback equals dtw on (1 - s.float()) bit for bit,
    and the Triton paths (short kernel, long path's materialised cost) agree with it to fp32 rounding
    (a 16-bit 1 - s would differ by its rounding, ~1e-3 relative). Gradients: one rounding to 16 bits."""
    sim = matmul_view(*shape, dtype, device=DEVICE)
    for flags in ({"with_length": True}, {"symmetric": True, "mode": "otam"}):
        kwargs = {"mode": "soft", **flags}
        fallback, fallback_grad = _value_and_grad(lambda x: dtw_similarity(x, backend="torch", **kwargs), sim)
        cost_fn = FLAGS["with_length" if "with_length" in flags else "symmetric"][1]
        oracle, oracle_grad = _value_and_grad(
            lambda x: cost_fn((1 - x.float()).flatten(0, 1), kwargs["mode"], backend="torch"), sim)
        for got, expected in zip(*[(o if isinstance(o, tuple) else (o,)) for o in (fallback, oracle)]):
            assert torch.equal(got.flatten(), expected.flatten())
        assert torch.equal(fallback_grad, oracle_grad)
        if dtw_module.triton is None:
            continue
        kernel, kernel_grad = _value_and_grad(lambda x: dtw_similarity(x, backend="triton", **kwargs), sim)
        kernel = kernel[0] if isinstance(kernel, tuple) else kernel
        fallback = fallback[0] if isinstance(fallback, tuple) else fallback
        torch.testing.assert_close(kernel, fallback, rtol=1e-5, atol=1e-5)
        one_ulp = 2.0 ** -(10 if dtype == torch.float16 else 7)  # relative, at the bottom of a binade
        torch.testing.assert_close(kernel_grad.float(), fallback_grad.float(), rtol=one_ulp, atol=1e-5)


def test_long_sequences_materialise_the_cost():
    """N > SHORT_MAX: the short kernel does not apply and 1 - s is formed before the cost path."""
    pytest.importorskip("triton")
    sim = matmul_view(1, 2, SHORT_MAX + 1, 2)
    _check_against_cost_path(sim, "soft", "with_length", "triton", tol=1e-5)
    _check_against_cost_path(sim, "otam", "symmetric", "triton", tol=1e-5)


def test_divisor_magic_is_exact_division():
    """q = b // S by multiply-high, over divisors and dividends up to the 2**31 bound of the kernel."""
    gen = torch.Generator().manual_seed(0)
    divisors = [1, 2, 3, 5, 7, 25, 100, 641, 2**16 + 1, 2**30, 2**31 - 1]
    divisors += torch.randint(1, 2**31 - 1, (200,), generator=gen).tolist()
    for d in divisors:
        magic, shift = _divisor_magic(d)
        assert 0 < magic < 2**32
        for n in [0, 1, d - 1, d, d + 1, 2**31 - 1, (2**31 - 1) // d * d, (2**31 - 1) // d * d - 1]:
            if 0 <= n < 2**31:
                assert ((n * magic >> 32) + n) >> shift == n // d, (n, d)


def test_empty_and_errors():
    for shape in [(0, 3, 4, 4), (2, 0, 4, 4)]:
        value, length = dtw_similarity(torch.rand(shape, device=DEVICE), with_length=True)
        assert value.shape == length.shape == shape[:2]
    with pytest.raises(ValueError, match=r"\(Q, S, N, M\)"):
        dtw_similarity(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="with_length"):
        dtw_similarity(torch.rand(1, 1, 3, 3), mode="otam", with_length=True)
    with pytest.raises(ValueError, match="with_length"):
        dtw_similarity(torch.rand(1, 1, 3, 3), mode="soft", with_length=True, symmetric=True)
    with pytest.raises(ValueError, match="N and M"):
        dtw_similarity(torch.rand(1, 2, 0, 3))


# --------------------------------------------------------------------------------------------
# The matchers on dtw_similarity
# --------------------------------------------------------------------------------------------
def _episode(queries=3, supports=4, frames=5, dim=16, shared=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(queries, frames, dim, generator=gen, dtype=torch.float64).to(DEVICE)
    support = torch.randn(1 if shared else queries, supports, frames, dim, generator=gen, dtype=torch.float64)
    labels = torch.arange(supports // 2, device=DEVICE).repeat_interleave(2)
    return query, support.to(DEVICE), labels


def test_similarity_all_pairs_is_a_view_of_one_matmul():
    for shared in (True, False):
        query, support, _ = _episode(shared=shared)
        sim = similarity_all_pairs(query, support)
        q = torch.nn.functional.normalize(query, dim=-1)
        s = torch.nn.functional.normalize(support, dim=-1).expand(3, -1, -1, -1)
        torch.testing.assert_close(sim, torch.einsum("qtd,qsud->qstu", q, s))
        assert sim.transpose(1, 2).is_contiguous()  # the (Q, T, S, T) matmul output, not a copy
        torch.testing.assert_close(cosine_cost_all_pairs(query, support), 1 - sim)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("shared", [True, False])
def test_instance_matching_equals_cost_path(backend, mode, shared, monkeypatch):
    """I-M on dtw_similarity against its previous form: dtw_with_length on the materialised cost."""
    if backend == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", backend)
    query, support, labels = _episode(shared=shared)

    def previous(q, s):
        cost = cosine_cost_all_pairs(q, s)  # (Q, S, T, T)
        total, length = dtw_with_length(cost.flatten(0, 1), mode=mode, gamma=0.2)
        pair = (total / length).view(cost.shape[:2])
        return torch.stack([pair[:, labels == c].mean(dim=1) for c in range(2)], dim=1)  # (Q, N)

    leaves = [t.detach().clone().requires_grad_() for t in (query, support)]
    got = instance_matching(*leaves, labels, 2, mode=mode, gamma=0.2)
    grads = torch.autograd.grad(got.sum(), leaves)
    leaves_ref = [t.detach().clone().requires_grad_() for t in (query, support)]
    expected = previous(*leaves_ref)
    grads_ref = torch.autograd.grad(expected.sum(), leaves_ref)
    torch.testing.assert_close(got, expected)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_otam_head_equals_cost_path(backend, monkeypatch):
    """The OTAM head on dtw_similarity against dtw_symmetric on the materialised cost."""
    if backend == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("M3NET_DTW_BACKEND", backend)
    gen = torch.Generator().manual_seed(1)
    support = torch.randn(4, 5, 2, 2, 16, generator=gen).to(DEVICE)
    query = torch.randn(3, 5, 2, 2, 16, generator=gen).to(DEVICE)
    labels = torch.tensor([0, 0, 1, 1], device=DEVICE)
    head = OTAM(OTAM.Config(feature_dim=16, num_frames=5, gamma=0.1))
    cost = cosine_cost_all_pairs(query.mean(dim=(2, 3)), support.mean(dim=(2, 3))[None])  # (Q, S, T, T)
    score = dtw_symmetric(cost.flatten(0, 1), mode="otam", gamma=0.1).view(3, 4)
    expected = -torch.stack([score[:, labels == c].mean(dim=1) for c in range(2)], dim=1)
    torch.testing.assert_close(head(support, labels, query)["y"], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Custom ops: torch.compile without graph breaks, opcheck
# --------------------------------------------------------------------------------------------
def test_opcheck_dtw_ops():
    """torch.library.opcheck: schema, fake (meta) functions, autograd registration, AOT dispatch."""
    sim = matmul_view(1, 2, 4, 5, torch.float64).detach().requires_grad_()
    cost = (1 - sim).flatten(0, 1).detach().requires_grad_()
    cases = [(cost, "soft", 0.1, "torch", True, False, False, True), (cost, "otam", 0.1, "torch", False, False, False,
                                                                          True)]
    if dtw_module.triton is not None:
        cases += [(sim, "hard", 0.1, "triton", True, False, True, True), (sim, "otam", 0.1, "triton", False, True,
                                                                             True, False)]
    for args in cases:
        torch.library.opcheck(torch.ops.m3net.dtw_forward, args)
    weights = torch.ops.m3net.dtw_forward(cost.detach(), "soft", 0.1, "torch", False, False, False, True)[2]
    grad_out = torch.rand(2, dtype=torch.float64)
    torch.library.opcheck(torch.ops.m3net.dtw_backward,
                          (cost.detach(), weights, grad_out, "soft", 0.1, "torch", False, False, 4, 5, torch.float64))


@pytest.mark.slow  # opcheck runs the op a dozen times: about 25 s interpreted
def test_opcheck_long_path_checkpoints():
    """The long path's ops: its checkpoint rows go from the forward op to the backward op (their fake shapes too)."""
    pytest.importorskip("triton")
    n = 2 * SHORT_MAX + 1
    long_cost = (torch.rand(2, n, 3, dtype=torch.float64) * 2).to(DEVICE).requires_grad_()
    args = (long_cost, "otam", 0.1, "triton", False, False, False, True)
    torch.library.opcheck(torch.ops.m3net.dtw_forward, args)
    checkpoints = torch.ops.m3net.dtw_forward(long_cost.detach(), *args[1:])[2]
    assert checkpoints.shape[0] >= 2  # segments past the first: a checkpoint row each
    grad_out = torch.rand(2, dtype=torch.float64).to(DEVICE)
    torch.library.opcheck(torch.ops.m3net.dtw_backward, (long_cost.detach(), checkpoints, grad_out, "otam", 0.1,
                                                         "triton", False, False, n, 3, torch.float64))


def _compiled_equals_eager(fn, inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)  # a graph break would raise here
    got = compiled(*leaves)
    grads = torch.autograd.grad(got.sum(), leaves)
    leaves_ref = [t.detach().clone().requires_grad_() for t in inputs]
    expected = fn(*leaves_ref)
    grads_ref = torch.autograd.grad(expected.sum(), leaves_ref)
    torch.testing.assert_close(got, expected)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_matchers_compile_fullgraph(backend, monkeypatch):
    """instance_matching and the OTAM head's scoring trace into one graph (the DTW ops are opaque
    nodes) and give the eager values and gradients."""
    if backend == "triton":
        pytest.importorskip("triton")
    torch._dynamo.reset()
    monkeypatch.setenv("M3NET_DTW_BACKEND", backend)
    query, support, labels = _episode(dim=8)
    _compiled_equals_eager(lambda q, s: instance_matching(q, s, labels, 2, mode="soft", gamma=0.2), (query, support))
    _compiled_equals_eager(lambda q, s: otam_scores(q, s, gamma=0.1), (query, support[0]))


# --------------------------------------------------------------------------------------------
# GPU only: the compiled kernel at the matchers' sizes (benchmarks/gpu_session.sh tests)
# --------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [8, 16])
def test_gpu_strided_similarity_matches_cost_path(dtype, t):
    """5-way 5-shot episodes of 40 queries: 1000 pairs, T = 8 and 16, every pass the matchers use."""
    sim = matmul_view(40, 25, t, t, dtype, device="cuda")
    for mode, flag in [("soft", "with_length"), ("hard", "with_length"), ("otam", "symmetric")]:
        grad = _check_against_cost_path(sim, mode, flag, "triton", tol=TOLERANCES[dtype])
        assert grad.stride() == sim.stride()


@pytest.mark.gpu
@needs_cuda
def test_gpu_matchers_compile_fullgraph():
    """On CUDA with Inductor: the DTW ops stay opaque nodes, values and gradients as in eager."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(40, 8, 64, generator=gen).cuda()
    support = torch.randn(1, 25, 8, 64, generator=gen).cuda()
    labels = torch.arange(5, device="cuda").repeat_interleave(5)
    for fn, inputs in [(lambda q, s: instance_matching(q, s, labels, 5, mode="soft"), (query, support)),
                       (lambda q, s: otam_scores(q, s, gamma=0.1), (query, support[0]))]:
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        got = torch.compile(fn, fullgraph=True)(*leaves)
        grads = torch.autograd.grad(got.sum(), leaves)
        leaves_ref = [t.detach().clone().requires_grad_() for t in inputs]
        expected = fn(*leaves_ref)
        grads_ref = torch.autograd.grad(expected.sum(), leaves_ref)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)
