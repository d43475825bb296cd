"""The steps of a GPU session (``benchmarks/gpu_session.sh`` runs each one as its own process).

    python tools/gpu_session.py STEP --jsonl OUT/bench.jsonl   # run STEP, append its one JSON line
    python tools/gpu_session.py summary OUT/*.jsonl             # the short table printed last
    python tools/gpu_session.py unpack OUT/bench.jsonl          # GPU records -> benchmarks/bench_*.{json,csv}
    python tools/gpu_session.py cache DIR [--jobs N]             # warm's variants compiled for sm_90 into DIR
    python tools/gpu_session.py cache DIR --relocate              # DIR's group files pointed at DIR (the device)

Run from the repository root (the tests steps collect tests/ from there). A repository tool, not part of
the installed package: it imports the product as m3net, which gpu_session.sh takes from the checkout
(PYTHONPATH), since the device machine gets a copy of the working tree and no install.

Every step appends exactly one line, as soon as it ends: ``{"step", "stage", "status": "ok" | "error",
"seconds", "quick", "result", "records": [benchmark records], "error"}``, written in one ``write`` and
fsynced, so whatever finished is on disk when the session is killed. A step that raises is an
``error`` line (its traceback goes to the log) and the next step still runs: each step is its own
process, so a CUDA fault or a timeout ends only that step (the shell script writes a ``failed``
line for a step that died without writing one).

A line's status is ``ok``, ``error`` (the step raised), ``failed`` (the script's line for a step that
died or was killed at its limit without writing one) or ``skipped`` (the script's line for a step the
session's budget, BUDGET_S, left no time to start).

QUICK=1 shrinks every size so the whole session rehearses on a CPU (Triton interpreted); those
numbers mean nothing, and ``unpack`` refuses them. M3NET_SESSION_FAIL=step[,step] makes those steps
raise at their start (the test that a failing step does not stop the next one);
M3NET_SESSION_PYTEST_K=EXPR narrows the tests steps to ``-k EXPR``.

The warm step records the launches the later steps make (m3net.kernels.dtw_grid.recorded_launches around
their own calls, at WARM_BATCH pairs: no variant depends on the batch) and compiles each distinct
variant once (JITFunction.warmup with the argument types). ``cache`` compiles the same variants here, on
a machine without a GPU, into a Triton cache folder to carry to the device as TRITON_CACHE_DIR.

Decoders: no step imports PyAV or decord (the device image has neither); bench-train and
bench-finetune use generated features and random frames, and each step's result lists the decoder
modules it found imported (a step that imported one is an error).
"""
import argparse
import dataclasses
import datetime
import functools
import glob
import json
import os
import sys
import time
import traceback

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


def _run_plan(plan):
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


def _dtw_step(name):
    return lambda s: _run_plan(dtw_plans(s)[name])


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
# warm: every kernel variant of the later steps compiled once, in parallel processes
# --------------------------------------------------------------------------------------------
WARM_BATCH = 64  # pairs of the recorded calls: a variant does not depend on the batch (nothing specialises on it)


@dataclasses.dataclass(frozen=True)
class WarmUnit:
    """One process's share of a warm-up: ``kind`` "kernel" (one Triton variant, compiled with
    ``JITFunction.warmup`` from a recorded launch) or "train" / "finetune" (one episode of the heads' steps)."""
    label: str
    kind: str
    launch: tuple = ()  # kernel: (module, kernel name, grid, args with tensors as dtype names, constexprs, warps)
    weight: int = 0  # units that compile longest start first


def _picklable(launch):
    """A recorded dtw_grid.KernelLaunch as plain values: tensors become their dtype's name (Triton's warmup
    takes a torch dtype for a pointer; every tensor the launchers pass is 16-byte aligned, as a dtype's
    mock pointer is)."""
    import torch

    args = tuple(("tensor", str(a.dtype).removeprefix("torch.")) if isinstance(a, torch.Tensor) else a
                 for a in launch.args)
    fn = launch.kernel.fn
    return fn.__module__, fn.__name__, launch.grid, args, dict(launch.constexprs), launch.num_warps


def _variant_key(launch):
    """What Triton compiles a launch for: the kernel, its constexprs, warps and argument types (every
    integer argument is unspecialised, every pointer aligned)."""
    module, name, _, args, constexprs, warps = launch
    return name, tuple(sorted(constexprs.items())), warps, tuple(a if isinstance(a, tuple) else type(a).__name__
                                                                 for a in args)


def _compile_weight(launch):
    """Rough compile cost, to start the longest first: short kernels unroll N·M cells (the backward twice,
    SYMMETRIC both directions); the long kernels unroll a row of K cells (the backward a segment of them)."""
    _, name, _, _, c, _ = launch
    cells = c["N"] * c["M"] if "N" in c else c["K"] * (c.get("S", 1))
    return cells * (3 if "bwd" in name else 1) * (2 if c.get("SYMMETRIC") else 1)


def _recorded_units(sources):
    """Runs each (label, call) of ``sources`` with the kernel launches recorded, not run, and returns one
    "kernel" unit per distinct variant among them (the first source that launches it names it)."""
    from m3net.kernels.dtw_grid import recorded_launches

    units, seen = [], set()
    for label, call in sources:
        with recorded_launches() as launches:
            call()
        for launch in map(_picklable, launches):
            key = _variant_key(launch)
            if key not in seen:
                seen.add(key)
                units.append(WarmUnit(f"{label}: {launch[1]}", "kernel", launch, _compile_weight(launch)))
    return units


def _device():
    from m3net.runtime import resolve_device

    return resolve_device("auto")


def _dtw_sources(s, steps):
    """(label, call) of every DTW call the timed ``steps`` make, each once at WARM_BATCH pairs."""
    from m3net.bench.dtw import run_bench, run_matcher_bench

    sources = []
    for step, plan in dtw_plans(s).items():
        if step not in steps:
            continue
        for kind, config, dim in plan:
            for n, m in config.sizes:
                small = dataclasses.replace(config, pairs=(WARM_BATCH,), sizes=((n, m),), implementations=("triton",),
                                            compile_only=True)
                if kind == "matchers":
                    small = dataclasses.replace(small, pairs=(WARM_BATCH * 25,))  # 25 supports per query
                    sources.append((f"{step} T={n}", functools.partial(run_matcher_bench, small, dim=dim)))
                else:
                    sources.append((f"{step} {config.mode} {config.timed_pass} {n}x{m}",
                                    functools.partial(run_bench, small)))
    return sources


def _warm_units(s):
    """One unit per kernel variant that verify (smoke's among them), the DTW timings and tests-gpu launch (recorded from
    their own calls, de-duplicated), then (``warm_heads``) the heads' steps, one episode each."""
    device = _device()
    sources = [(f"verify {case.label}", functools.partial(_verify_case, case, device, None))
               for case in _verify_cases(s)]
    sources += _dtw_sources(s, ("dtw-floor", "dtw-competitors", "dtw-matchers", "dtw-long"))
    sources += _gpu_test_sources(8)
    units = sorted(_recorded_units(sources), key=lambda unit: unit.weight, reverse=True)
    return units + ([WarmUnit("bench-train", "train"), WarmUnit("bench-finetune", "finetune")] if s.warm_heads else [])


def _warm_one(unit):
    """Runs one warm unit in a pool worker; (label, seconds, error or None)."""
    start = time.perf_counter()
    try:
        if unit.kind == "kernel":
            import importlib

            import torch

            from m3net.kernels.dtw_grid import _interpreting

            module, name, grid, args, constexprs, warps = unit.launch
            if not _interpreting():  # interpreted kernels compile nothing (the rehearsal)
                kernel = getattr(importlib.import_module(module), name)
                args = [getattr(torch, a[1]) if isinstance(a, tuple) else a for a in args]
                kernel.warmup(*args, grid=grid, **constexprs, num_warps=warps)
        else:
            _head_records(sizes(), unit.kind, warm=True)
        return unit.label, time.perf_counter() - start, None
    except Exception as err:  # reported in the warm step's result; the timed step will show it too
        return unit.label, time.perf_counter() - start, f"{type(err).__name__}: {err}"


def _run_pool(units):
    """Runs ``units`` in spawned worker processes (one per CPU core up to 16): parallel compiles."""
    import concurrent.futures
    import multiprocessing

    workers = max(1, min(16, os.cpu_count() or 1, len(units)))
    rows = []
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for label, seconds, error in pool.map(_warm_one, units):
            rows.append({"unit": label, "seconds": round(seconds, 2), "error": error})
            print(f"warm {label}: {seconds:.1f} s" + (f" ERROR {error}" if error else ""), flush=True)
    return {"workers": workers, "variants": sum(unit.kind == "kernel" for unit in units), "units": rows}


def warm(s):
    """Compiles every kernel variant of the later steps once, in parallel processes (Triton's disk cache
    then serves them). A kernel unit's time is its compile (or cache load); a head unit's, one episode."""
    return _run_pool(_warm_units(s)), []


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


def _verify_cases(s):
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


def _verify_case(case, device, pairs):
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
    device = _device()
    checks = []
    for case in _verify_cases(s):
        start = time.perf_counter()
        ((outs, grad), inference, (ref_outs, ref_grad)) = _verify_case(case, device, s.verify_pairs)
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


def _head_records(s, kind, warm=False):
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


def _head_step(kind):
    """The bench-train / bench-finetune step: its tables printed, and no decoder imported on the way."""
    def step(s):
        from m3net.bench import finetune, train

        records = _head_records(s, kind)
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


def _gpu_test_files():
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
    return _pytest(["-m", "gpu", *_gpu_test_files()], select=lambda item: not _long_compile(item), workers=4)


def tests_gpu_long(s):
    return _pytest(["-m", "gpu", *_gpu_test_files()], select=_long_compile, workers=2)


def _episode_pass(dtype_name, t, mode):
    """The GPU test's dtw_similarity pass (an episode's 40 x 25 pairs of its matmul view), forward and backward."""
    import torch

    from m3net.kernels.dtw import dtw_similarity

    q, supports = sizes().episode_queries, 25
    device = _device()
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

    dtw(torch.rand(n, m, WARM_BATCH, device=_device()).permute(2, 0, 1), mode="soft", backend="triton")


def _gpu_test_sources(t):
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


def tests_warm_long(s):
    """Compiles the T = 16 GPU test's variants and dtw-matchers-long's, one process per variant (a 16x16
    backward compiles for minutes); tests-gpu-long and dtw-matchers-long then read them from Triton's cache."""
    units = _recorded_units(_gpu_test_sources(16) + _dtw_sources(s, ("dtw-matchers-long",)))
    return _run_pool(sorted(units, key=lambda unit: unit.weight, reverse=True)), []


# --------------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------------
STEPS = {  # name -> (stage, function of Sizes -> (result, records))
    "smoke": ("bench", smoke),
    "warm": ("bench", warm),
    "dtw-floor": ("bench", _dtw_step("dtw-floor")),
    "dtw-competitors": ("bench", _dtw_step("dtw-competitors")),
    "dtw-matchers": ("bench", _dtw_step("dtw-matchers")),
    "dtw-long": ("bench", _dtw_step("dtw-long")),
    "dtw-matchers-long": ("bench", _dtw_step("dtw-matchers-long")),
    "verify": ("bench", verify),
    "bench-train": ("bench", _head_step("train")),
    "bench-finetune": ("bench", _head_step("finetune")),
    "tests-warm-long": ("tests", tests_warm_long),
    "tests-kernel": ("tests", tests_kernel),
    "tests-gpu": ("tests", tests_gpu),
    "tests-gpu-long": ("tests", tests_gpu_long),
}


def append_line(path, line):
    """One JSON line, written in one call and fsynced (a kill leaves whole lines behind)."""
    data = (json.dumps(line, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def run_step(name, jsonl):
    stage, function = STEPS[name]
    line = {"step": name, "stage": stage, "quick": quick(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    start = time.perf_counter()
    try:
        if name in os.environ.get(FAIL_ENV, "").split(","):
            raise RuntimeError(f"failed on purpose ({FAIL_ENV}={os.environ[FAIL_ENV]})")
        result, records = function(sizes())
        line.update(status="ok", result=result, records=records)
    except Exception as err:
        traceback.print_exc()
        line.update(status="error", error=f"{type(err).__name__}: {err}"[:4000])
    line["seconds"] = round(time.perf_counter() - start, 2)
    append_line(jsonl, line)
    print(f"== {name}: {line['status']} in {line['seconds']:.1f} s", flush=True)
    return 0 if line["status"] == "ok" else 1


def read_lines(paths):
    """Every whole JSON line of ``paths`` (a line cut by a kill is skipped)."""
    lines = []
    for path in paths:
        if not os.path.exists(path):  # the shell's glob of a stage that wrote nothing
            continue
        with open(path) as fh:
            for text in fh:
                try:
                    lines.append(json.loads(text))
                except json.JSONDecodeError:
                    pass
    return lines


def _headline(line):
    """The figures that matter from a step's records, in a few words."""
    parts = []
    for record in line.get("records") or []:
        cfg = record["config"]
        for row in record["rows"]:
            if record["benchmark"] == "dtw" and row["implementation"] == "triton" and row.get("pct_of_floor"):
                parts.append(f"{cfg['mode']} {cfg['pass']} {row['pairs']}x{row['n']}: {row['pct_of_floor']:.0f}% floor")
            elif record["benchmark"] == "dtw" and row["implementation"] == "triton" and row.get("x_pysdtw"):
                parts.append(f"{row['pairs']}x{row['n']}: {row['x_pysdtw']:.1f}x pysdtw")
    counts = (line.get("result") or {}).get("counts")
    if counts:
        parts.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "; ".join(parts)


def summary(paths):
    lines = read_lines(paths)
    print(f"{'step':<18} {'status':<7} {'seconds':>8}  headline")
    for line in lines:
        detail = line.get("error") or _headline(line)
        print(f"{line['step']:<18} {line['status']:<7} {line.get('seconds') or 0:>8.1f}  {detail[:200]}")
    return 0


def unpack(paths, out_dir):
    """Writes every record of the ok lines as benchmarks/bench_*.{json,csv}; refuses QUICK lines."""
    from m3net.bench import dtw, finetune, train
    from m3net.errors import ConfigError

    writers = {"dtw": dtw.write_results, "dtw_matchers": dtw.write_matcher_results,
               "train-head": train.write_results, "finetune": finetune.write_results}
    written = []
    for line in read_lines(paths):
        if line.get("quick"):
            raise ConfigError(f"unpack: step {line['step']} ran with QUICK=1: rehearsal numbers are not results")
        for record in line.get("records") or [] if line["status"] == "ok" else []:
            written += writers[record["benchmark"]](record, out_dir)
    for path in written:
        print("wrote", path)
    return 0


def build_cache(directory, jobs=1, only=None):
    """Compiles for sm_90, with this machine's Triton, every kernel variant the warm step compiles, into
    ``directory`` as Triton's cache. Carried to a GPU with the same Triton (and its bundled ptxas) and named
    TRITON_CACHE_DIR there, its compiles are cache loads: static_sm90.compile_launch binds and packs the
    arguments as JITFunction.run does, so the keys match; a variant whose key differs compiles as without
    the cache. Returns (one row per variant with its seconds, how many were loaded from the cache rather
    than compiled); ``only``: the variants whose label holds this text."""
    os.environ["TRITON_CACHE_DIR"] = os.path.abspath(directory)
    os.environ["M3NET_DTW_BACKEND"] = "triton"  # the recorded calls on CPU tensors take the kernels
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("cache compiles the kernels: run it without TRITON_INTERPRET=1")
    import concurrent.futures
    import multiprocessing

    units = [unit for unit in _warm_units(FULL) if unit.kind == "kernel" and (only or "") in unit.label]
    context = multiprocessing.get_context("spawn")
    rows = []
    def folders():
        return set(os.listdir(directory)) if os.path.isdir(directory) else set()

    before = folders()
    with concurrent.futures.ProcessPoolExecutor(max(1, jobs), mp_context=context) as pool:
        for unit, seconds in zip(units, pool.map(_compile_for_sm90, units)):
            rows.append({"unit": unit.label, "seconds": round(seconds, 2)})
            print(f"cache {unit.label}: {seconds:.1f} s", flush=True)
    compiled = len(folders() - before)  # a compile writes a folder for its key, a load none
    relocate_cache(directory, prune=True)
    return rows, len(rows) - compiled


CACHE_KEEP = (".json", ".cubin")  # what a cache hit loads (metadata, binary); the IR dumps are ~10x their size


def relocate_cache(directory, prune=False):
    """Points every group file of a Triton cache folder at the folder's own files. Triton writes a group's
    files as absolute paths and counts a group whose metadata file is missing as a miss, so a cache built
    at one path must be relocated where it is read (gpu_session.sh does so for TRITON_CACHE_DIR); ``prune``
    first deletes all but the CACHE_KEEP files."""
    directory = os.path.abspath(directory)
    for group_path in glob.glob(os.path.join(directory, "*", "__grp__*")):
        folder = os.path.dirname(group_path)
        if prune:
            for name in os.listdir(folder):
                if not name.startswith("__grp__") and not name.endswith(CACHE_KEEP):
                    os.remove(os.path.join(folder, name))
        with open(group_path) as fh:
            children = json.load(fh).get("child_paths") or {}
        kept = {name: os.path.join(folder, name) for name in children if os.path.exists(os.path.join(folder, name))}
        with open(group_path, "w") as fh:
            json.dump({"child_paths": kept}, fh)


def _compile_for_sm90(unit):
    import importlib

    import torch
    from triton.runtime.jit import MockTensor

    from m3net.kernels.dtw_grid import KernelLaunch
    from static_sm90 import compile_launch

    module, name, grid, args, constexprs, warps = unit.launch
    args = tuple(MockTensor(getattr(torch, a[1])) if isinstance(a, tuple) else a for a in args)  # as warmup() does
    start = time.perf_counter()
    compile_launch(KernelLaunch(getattr(importlib.import_module(module), name), grid, args, constexprs, warps, 1))
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*STEPS, "summary", "unpack", "cache"])
    parser.add_argument("files", nargs="*", help="summary / unpack: the JSON-lines files; cache: the cache folder")
    parser.add_argument("--jobs", type=int, default=1, help="cache: variants compiled at a time")
    parser.add_argument("--only", help="cache: only the variants whose label holds this text")
    parser.add_argument("--relocate", action="store_true", help="cache: compile nothing, point the folder's "
                        "group files at its own files (a cache built elsewhere)")
    parser.add_argument("--jsonl", help="the step's JSON-lines file (appended)")
    parser.add_argument("--out-dir", default="benchmarks", help="unpack: where the records go")
    args = parser.parse_args(argv)
    if args.step == "summary":
        return summary(args.files)
    if args.step == "unpack":
        return unpack(args.files, args.out_dir)
    if args.step == "cache":
        if len(args.files) != 1:
            parser.error("cache takes one folder")
        if args.relocate:
            return relocate_cache(args.files[0]) or 0
        rows, hits = build_cache(args.files[0], args.jobs, args.only)
        print(f"{len(rows)} variants, {hits} loaded from the cache, {sum(r['seconds'] for r in rows):.0f} s in all")
        return 0
    if not args.jsonl:
        parser.error("--jsonl is required for a step")
    return run_step(args.step, args.jsonl)


if __name__ == "__main__":
    sys.exit(main())
