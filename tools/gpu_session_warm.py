"""warm, and the Triton cache carried to the device: every kernel variant the later steps launch, recorded
from their own calls and compiled once (tools/gpu_session.py documents the session).
"""
import concurrent.futures
import dataclasses
import functools
import glob
import json
import multiprocessing
import os
import time

from gpu_session_steps import (
    FULL,
    WARM_BATCH,
    dtw_plans,
    gpu_test_sources,
    head_records,
    session_device,
    sizes,
    verify_case,
    verify_cases,
)

# --------------------------------------------------------------------------------------------
# warm: every kernel variant of the later steps compiled once, in parallel processes
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WarmUnit:
    """One process's share of a warm-up: ``kind`` "kernel" (one Triton variant, compiled with
    ``JITFunction.warmup`` from a recorded launch) or "train" / "finetune" (one episode of the heads' steps)."""
    label: str
    kind: str
    launch: tuple = ()  # kernel: (module, kernel name, grid, args with tensors as dtype names, constexprs, warps)
    weight: int = 0  # units that compile longest start first


def picklable(launch):
    """A recorded dtw_grid.KernelLaunch as plain values: tensors become their dtype's name (Triton's warmup
    takes a torch dtype for a pointer; every tensor the launchers pass is 16-byte aligned, as a dtype's
    mock pointer is)."""
    import torch

    args = tuple(("tensor", str(a.dtype).removeprefix("torch.")) if isinstance(a, torch.Tensor) else a
                 for a in launch.args)
    fn = launch.kernel.fn
    return fn.__module__, fn.__name__, launch.grid, args, dict(launch.constexprs), launch.num_warps


def variant_key(launch):
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
        for launch in map(picklable, launches):
            key = variant_key(launch)
            if key not in seen:
                seen.add(key)
                units.append(WarmUnit(f"{label}: {launch[1]}", "kernel", launch, _compile_weight(launch)))
    return units




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


def warm_units(s):
    """One unit per kernel variant that verify (smoke's among them), the DTW timings and tests-gpu launch (recorded from
    their own calls, de-duplicated), then (``warm_heads``) the heads' steps, one episode each."""
    device = session_device()
    sources = [(f"verify {case.label}", functools.partial(verify_case, case, device, None))
               for case in verify_cases(s)]
    sources += _dtw_sources(s, ("dtw-floor", "dtw-competitors", "dtw-matchers", "dtw-long"))
    sources += gpu_test_sources(8)
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
            head_records(sizes(), unit.kind, warm=True)
        return unit.label, time.perf_counter() - start, None
    except Exception as err:  # reported in the warm step's result; the timed step will show it too
        return unit.label, time.perf_counter() - start, f"{type(err).__name__}: {err}"


def _run_pool(units):
    """Runs ``units`` in spawned worker processes (one per CPU core up to 16): parallel compiles."""

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
    return _run_pool(warm_units(s)), []


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

    units = [unit for unit in warm_units(FULL) if unit.kind == "kernel" and (only or "") in unit.label]
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


def tests_warm_long(s):
    """Compiles the T = 16 GPU test's variants and dtw-matchers-long's, one process per variant (a 16x16
    backward compiles for minutes); tests-gpu-long and dtw-matchers-long then read them from Triton's cache."""
    units = _recorded_units(gpu_test_sources(16) + _dtw_sources(s, ("dtw-matchers-long",)))
    return _run_pool(sorted(units, key=lambda unit: unit.weight, reverse=True)), []
