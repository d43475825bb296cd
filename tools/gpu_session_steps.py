"""The steps of a GPU session but warm (tools/gpu_session_warm.py): their sizes, the DTW timings, smoke, verify,
the heads' benchmarks and the pytest steps. tools/gpu_session.py runs one per process and documents the
session (lines, statuses, QUICK, the environment switches).
"""
import dataclasses
import functools
import glob
import json
import os
import sys
import time

WARM_BATCH = 64  # pairs of the recorded calls: a variant does not depend on the batch (nothing specialises on it)


def session_device():
    from m3net.runtime import resolve_device

    return resolve_device("auto")


DECODERS = ("av", "decord")
FAIL_ENV = "M3NET_SESSION_FAIL"
PYTEST_K_ENV = "M3NET_SESSION_PYTEST_K"


def quick():
    return os.environ.get("QUICK", "0") == "1"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the session uses; ``QUICK`` shrinks them (the T values only where the same code paths still run)."""
    floor_pairs: int = 1_000_000
    competitor_pairs: tuple = (4096, 32768)
    matcher_pairs: int = 32768
    matcher_dim: int = 2048
    long_pairs: int = 1_000_000
    long_sizes: tuple = ((16, 16), (17, 17), (32, 32))  # the last short size, then the long path
    reference_pairs: int = 65536  # dtw-long's torch reference and eager loop: rates per pair at 64k pairs
    train: dict = dataclasses.field(default_factory=dict)  # TrainBenchConfig overrides
    finetune: dict = dataclasses.field(default_factory=dict)  # FinetuneBenchConfig overrides
    timing: dict = dataclasses.field(default_factory=dict)  # DTWBenchConfig overrides (CPU repeats)
    smoke_pairs: int = 1000
    verify_pairs: int = 1000  # verify: pairs per check (the long path's float64 reference is the slowest part)
    verify_long: int = 32  # verify: the long path's T (past SHORT_MAX: several segments of its backward)
    episode_queries: int = 40  # the GPU test's episode: 40 queries x 25 supports
    # warm also runs one episode of each head step, on the GPU beside the compiles (cuDNN, allocator, first
    # launches); the rehearsal's tiny heads have nothing to warm and would take half its budget on 2 cores
    warm_heads: bool = True


FULL = Sizes()
QUICK_SIZES = Sizes(
    floor_pairs=256, competitor_pairs=(64, 128), matcher_pairs=50, matcher_dim=32, long_pairs=8,
    long_sizes=((16, 16), (17, 17)),  # interpreted, the long kernel's cost grows with N·M loop steps
    reference_pairs=4,
    train={"channels": 64, "train_episodes": 2, "eval_episodes": 3, "warmup": 1},
    finetune={"shots": (1,), "queries": 1, "frames": 2, "crop": 32, "steps": 1, "warmup": 1},
    timing={"repeats": 1, "warmup": 0}, smoke_pairs=64, verify_pairs=4, verify_long=17, episode_queries=4,
    warm_heads=False)


def sizes():
    return QUICK_SIZES if quick() else FULL


# --------------------------------------------------------------------------------------------
# DTW plans: the configs each DTW step times (the warm step compiles what they launch)
# --------------------------------------------------------------------------------------------
def dtw_plans(s):
    """step -> [(kind "table" | "matchers", DTWBenchConfig, matcher dim)]."""
    from m3net.bench.dtw import PASSES, DTWBenchConfig
    from m3net.kernels import MODES

    def config(**kw):
        return DTWBenchConfig(**{"sizes": ((8, 8),), "dtype": "float32", **s.timing, **kw})

    all_impls = ("triton", "torch-reference", "eager-loop")
    # The long path (T > SHORT_MAX = 16) beside the last short size: forwards at 16, 17, 32; steps at 17, 32
    # (a 16x16 short backward compiles for minutes: the T = 16 GPU test covers it). The torch reference and
    # the eager loop are timed on reference_pairs of the pairs (their rates are per pair).
    long = {"pairs": (s.long_pairs,), "mode": "soft", "implementations": all_impls,
            "reference_max_pairs": s.reference_pairs}
    return {
        # % of the bandwidth floor: 1M pairs of 8x8, every mode, forward / backward alone / whole step.
        "dtw-floor": [("table", config(pairs=(s.floor_pairs,), mode=mode, timed_pass=p, implementations=("triton",)),
                       None) for mode in MODES for p in PASSES],
        # x eager and x pysdtw's forward kernel at an episode batch's sizes.
        "dtw-competitors": [("table", config(pairs=s.competitor_pairs, mode=mode, timed_pass=p), None)
                            for mode in MODES for p in ("fwd", "fwd+bwd")],
        # T = 8 here; T = 16 (its 16x16 similarity kernels compile for minutes) is dtw-matchers-long, in tests-long.
        "dtw-matchers": [("matchers", config(pairs=(s.matcher_pairs,)), s.matcher_dim)],
        "dtw-matchers-long": [("matchers", config(pairs=(s.matcher_pairs,), sizes=((16, 16),)), s.matcher_dim)],
        "dtw-long": [("table", config(sizes=s.long_sizes, timed_pass="fwd", **long), None),
                     ("table", config(sizes=tuple(t for t in s.long_sizes if t[0] > 16), timed_pass="fwd+bwd", **long),
                      None)],
    }


def run_plan(plan):
    from m3net.bench import dtw as bench

    records = []
    for kind, config, dim in plan:
        if kind == "matchers":
            record = bench.run_matcher_bench(config, dim=dim)
            print(bench.format_matcher_table(record), flush=True)
        else:
            record = bench.run_bench(config)
            print(bench.format_table(record), flush=True)
        records.append(record)
    return {}, records


def dtw_step(name):
    return lambda s: run_plan(dtw_plans(s)[name])


# --------------------------------------------------------------------------------------------
# smoke and warm
# --------------------------------------------------------------------------------------------
def smoke(s):
    """Versions, one compile (timed), one forward and backward against the float64 reference."""
    import torch

    from m3net.bench.dtw import copy_bandwidth, peak_bandwidth, random_costs
    from m3net.bench.record import provenance_sha
    from m3net.kernels.dtw import dtw, dtw_reference
    from m3net.runtime import device_name, resolve_device, synchronize, versions

    device = resolve_device("auto")
    result = {"device": device_name(device), "versions": versions(), "git_sha": provenance_sha(),
              "interpreted": os.environ.get("TRITON_INTERPRET") == "1", "cpus": os.cpu_count(),
              "pysdtw": _importable("pysdtw"), "numba": _importable("numba"), "xdist": _importable("xdist")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        result.update(sms=props.multi_processor_count, memory_gib=props.total_memory / 2**30,
                      peak_bandwidth=peak_bandwidth(device), copy_bandwidth=copy_bandwidth(device))
    cost = random_costs(s.smoke_pairs, 8, 8, torch.float32, device, seed=0).requires_grad_()
    start = time.perf_counter()
    value = dtw(cost, mode="soft", gamma=0.1, backend="triton")
    (grad,) = torch.autograd.grad(value.sum(), cost)
    synchronize(device)
    result["first_call_s"] = time.perf_counter() - start  # compile(s) + launch on a fresh cache
    leaf = cost.detach().double().requires_grad_()
    expected = dtw_reference(leaf, mode="soft", gamma=0.1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), leaf)
    result["value_max_abs_err"] = (value.double() - expected).abs().max().item()
    result["grad_max_abs_err"] = (grad.double() - expected_grad).abs().max().item()
    print(json.dumps(result, indent=1), flush=True)
    if not (result["value_max_abs_err"] < 1e-4 and result["grad_max_abs_err"] < 1e-4):
        raise AssertionError(f"Triton soft 8x8 disagrees with the float64 reference: {result}")
    return result, []


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------------------------
# verify: values and gradients against the float64 reference, every path the timings run
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VerifyCase:
    label: str
    mode: str
    n: int
    call: str = "dtw"  # dtw | with_length | symmetric | similarity+length | similarity+symmetric
    m: int = 0  # 0: square


def verify_cases(s):
    from m3net.kernels import MODES

    cases = [VerifyCase(f"{mode} 8x8", mode, 8) for mode in MODES]
    cases += [VerifyCase("soft 8x8 with length", "soft", 8, "with_length"),
              VerifyCase("otam 8x8 symmetric", "otam", 8, "symmetric"),
              VerifyCase("soft 8x8 similarity with length", "soft", 8, "similarity+length"),
              VerifyCase("hard 8x8 similarity with length", "hard", 8, "similarity+length"),
              VerifyCase("otam 8x8 similarity symmetric", "otam", 8, "similarity+symmetric")]
    cases += [VerifyCase(f"{mode} {s.verify_long}x{s.verify_long} long", mode, s.verify_long) for mode in MODES]
    return cases


def _dtw_call(case, x, backend):
    """The case's call on ``x``: its outputs as a tuple, the value first."""
    from m3net.kernels.dtw import dtw, dtw_similarity, dtw_symmetric, dtw_with_length

    if case.call == "dtw":
        return (dtw(x, case.mode, 0.1, backend=backend),)
    if case.call == "with_length":
        return dtw_with_length(x, case.mode, 0.1, backend=backend)
    if case.call == "symmetric":
        return (dtw_symmetric(x, case.mode, 0.1, backend=backend),)
    flags = {"with_length": True} if case.call.endswith("length") else {"symmetric": True}
    out = dtw_similarity(x, case.mode, 0.1, backend=backend, **flags)
    return out if isinstance(out, tuple) else (out,)


def verify_case(case, device, pairs):
    """((outputs, gradient), inference value) on the Triton path and (outputs, gradient) on the float64
    torch reference, for ``pairs`` pairs; ``pairs`` None: the Triton calls alone on WARM_BATCH pairs
    (what the warm step records)."""
    import torch

    n, m = case.n, case.m or case.n
    gen = torch.Generator(device=device).manual_seed(0)
    if case.call.startswith("similarity"):  # the matchers' (Q, S, N, M) view of a (Q·N, S·M) matmul, S = 25
        queries = -(-(pairs or WARM_BATCH) // 25)
        x = (torch.rand(queries * n, 25 * m, generator=gen, device=device) * 2 - 1).view(queries, n, 25, m)
        x = x.transpose(1, 2)
    else:
        x = torch.rand(pairs or WARM_BATCH, n, m, generator=gen, device=device) * 2

    def value_and_grad(x, backend):
        leaf = x.detach().clone().requires_grad_()
        out = _dtw_call(case, leaf, backend)
        (grad,) = torch.autograd.grad(out[0].sum(), leaf)
        return [o.detach() for o in out], grad

    got = value_and_grad(x, "triton")
    with torch.no_grad():  # the forward without a gradient: on the long path a kernel of its own
        inference = _dtw_call(case, x, "triton")[0]
    if pairs is None:
        return None
    return got, inference, value_and_grad(x.double(), "torch")


def verify(s):
    """Every check in one line: the largest value, gradient (and path length) errors of each case against
    the float64 reference; raises after all of them when one is over 1e-4 (hard gradients and path
    lengths: exact)."""
    device = session_device()
    checks = []
    for case in verify_cases(s):
        start = time.perf_counter()
        ((outs, grad), inference, (ref_outs, ref_grad)) = verify_case(case, device, s.verify_pairs)
        row = {"case": case.label, "value_err": (outs[0].double() - ref_outs[0]).abs().max().item(),
               "inference_value_err": (inference.double() - ref_outs[0]).abs().max().item(),
               "grad_err": (grad.double() - ref_grad).abs().max().item()}
        if len(outs) > 1:
            row["length_err"] = (outs[1].double() - ref_outs[1]).abs().max().item()
        tolerance = 0 if case.mode == "hard" else 1e-4
        row["ok"] = (max(row["value_err"], row["inference_value_err"]) < 1e-4 and row["grad_err"] <= tolerance
                     and row.get("length_err", 0) == 0)
        row["seconds"] = round(time.perf_counter() - start, 2)
        checks.append(row)
        print(json.dumps(row), flush=True)
    if _importable("pysdtw"):
        checks.append(_verify_pysdtw(s, device))
        print(json.dumps(checks[-1]), flush=True)
    failed = [check["case"] for check in checks if not check["ok"]]
    if failed:
        raise AssertionError(f"verify: {failed} disagree with the float64 reference: {checks}")
    return {"checks": checks}, []


def _verify_pysdtw(s, device):
    """One launch of pysdtw's forward kernel (soft 8x8) against the reference."""
    import torch

    from m3net.bench.dtw import _pysdtw_kernel, random_costs
    from m3net.kernels.dtw import dtw_reference

    start = time.perf_counter()
    cost = random_costs(s.verify_pairs, 8, 8, torch.float32, device, seed=0)
    got = _pysdtw_kernel(device)(cost, 0.1)()
    err = (got.double() - dtw_reference(cost.double(), "soft", 0.1)).abs().max().item()
    return {"case": "pysdtw soft 8x8 forward", "value_err": err, "seconds": round(time.perf_counter() - start, 2),
            "ok": err < 1e-4}


# --------------------------------------------------------------------------------------------
# bench-train and bench-finetune (generated features / random frames: no decoder)
# --------------------------------------------------------------------------------------------
TRAIN_HEADS = (("m3net", {}), ("m3net", {"proj_dim": 128}), ("trx", {}))


def head_records(s, kind, warm=False):
    """bench-train's records (three heads) or bench-finetune's; ``warm``: one episode of each setting
    the timed step compiles for, untimed."""
    if kind == "train":
        from m3net.bench.train import TrainBenchConfig, run_bench

        short = {"train_episodes": 1, "eval_episodes": 1, "warmup": 0} if warm else {}
        return [run_bench(TrainBenchConfig(head=head, head_options=options, **{**s.train, **short}))
                for head, options in (TRAIN_HEADS[:1] if warm else TRAIN_HEADS)]
    from m3net.bench.finetune import FinetuneBenchConfig, run_bench

    short = {"steps": 1, "warmup": 0, "checkpointing": (False,)} if warm else {}
    return [run_bench(FinetuneBenchConfig(**{**s.finetune, **short}), progress=None)]


def head_step(kind):
    """The bench-train / bench-finetune step: its tables printed, and no decoder imported on the way."""
    def step(s):
        from m3net.bench import finetune, train

        records = head_records(s, kind)
        for record in records:
            print((train if kind == "train" else finetune).format_table(record), flush=True)
        imported = [m for m in DECODERS if m in sys.modules]
        if imported:
            raise AssertionError(f"{kind} imported the decoder(s) {imported}: it must run on generated inputs")
        return {"decoders_imported": imported}, records

    return step


# --------------------------------------------------------------------------------------------
# tests: the GPU-marked tests and the kernel tests, collected without any decoder
# --------------------------------------------------------------------------------------------
KERNEL_TESTS = "tests/test_dtw*.py"


def gpu_test_files():
    """Test files holding a ``pytest.mark.gpu`` test (read as text: collecting every file would
    import the ones that need a decoder)."""
    return sorted(path for path in glob.glob("tests/test_*.py") if "mark.gpu" in open(path).read())


def _long_compile(item):
    """GPU tests at T > 8: their 16x16 short backward variants compile for minutes each."""
    callspec = getattr(item, "callspec", None)
    return bool(callspec) and callspec.params.get("t", 0) > 8


def _pytest(args, select=None, workers=0):
    from gpu_session_pytest import run_pytest

    if os.environ.get(PYTEST_K_ENV):  # a narrower selection (tests/test_gpu_session.py's rehearsal)
        args = [*args, "-k", os.environ[PYTEST_K_ENV]]
    return run_pytest(args, select, workers if _importable("xdist") else 0, DECODERS), []


def tests_kernel(s):  # ~350 small kernel variants to compile: every core
    return _pytest(["-m", "not slow and not gpu", *sorted(glob.glob(KERNEL_TESTS))], workers=os.cpu_count())


def tests_gpu(s):
    return _pytest(["-m", "gpu", *gpu_test_files()], select=lambda item: not _long_compile(item), workers=4)


def tests_gpu_long(s):
    return _pytest(["-m", "gpu", *gpu_test_files()], select=_long_compile, workers=2)


def _episode_pass(dtype_name, t, mode):
    """The GPU test's dtw_similarity pass (an episode's 40 x 25 pairs of its matmul view), forward and backward."""
    import torch

    from m3net.kernels.dtw import dtw_similarity

    q, supports = sizes().episode_queries, 25
    device = session_device()
    flat = torch.rand(q * t, supports * t, dtype=torch.float64).to(device, getattr(torch, dtype_name))
    sim = flat.view(q, t, supports, t).transpose(1, 2)  # (Q, S, T, T), as the test builds it
    flags = {"symmetric": True} if mode == "otam" else {"with_length": True}
    leaf = sim.detach().clone().requires_grad_()
    out = dtw_similarity(leaf, mode, 0.1, backend="triton", **flags)
    value = out[0] if isinstance(out, tuple) else out
    torch.autograd.grad(value.sum(), leaf)


def _batch_innermost_pass(n, m):
    """The GPU test's batch-innermost layout ((N, M, B) storage viewed as (B, N, M)), forward."""
    import torch

    from m3net.kernels.dtw import dtw

    dtw(torch.rand(n, m, WARM_BATCH, device=session_device()).permute(2, 0, 1), mode="soft", backend="triton")


def gpu_test_sources(t):
    """(label, call) of the DTW calls of the GPU-marked tests at T = ``t``: the episode's similarity passes
    in fp32 and bf16 (the matchers' compile test runs the fp32 ones), and at T = 8 the batch-innermost
    layout on the short and the long path."""
    from m3net.kernels import MODES

    sources = [(f"tests-gpu T={t} {dtype} {mode}", functools.partial(_episode_pass, dtype, t, mode))
               for dtype in ("float32", "bfloat16") for mode in MODES]
    if t == 8:
        sources += [(f"tests-gpu batch-innermost {n}x{m}", functools.partial(_batch_innermost_pass, n, m))
                    for n, m in ((8, 8), (17, 8))]
    return sources
