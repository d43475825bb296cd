"""``m3net bench-dtw``: the DTW implementations side by side, in one run, on the same costs.

Columns: the Triton kernel, the vectorised torch reference, the eager per-cell loop that
few-shot action code commonly uses (m3net.kernels.eager), and pysdtw (soft mode) where it is
installed. Each is timed on its own input size (the eager loop and the interpreted kernel are
capped, see ``DTWBenchConfig``) and reported per pair, so the ratios compare like with like.

Bandwidth floor: the bytes any implementation must move — the cost matrices in and one value per
pair out; with the backward also the gradient out (same dtype as the cost). ``% of floor`` is the
achieved bytes/s over the device's peak memory bandwidth, for known GPUs; CPU runs print CPU
numbers and leave it empty.
"""
import dataclasses
import os
import time
from dataclasses import dataclass, field

import torch

from m3net.kernels.dtw import dtw, dtw_reference
from m3net.kernels.eager import eager_dtw
from m3net.runtime import benchmark_record, resolve_device, synchronize, write_benchmark

# Peak DRAM bandwidth (bytes/s) by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
    ("RTX 4090", 1.008e12),
    ("V100", 0.9e12),
]
IMPLEMENTATIONS = ("triton", "torch-reference", "eager-loop", "pysdtw")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class DTWBenchConfig:
    pairs: int = 0  # 0: 1M on CUDA, 4096 on CPU
    n: int = 8
    m: int = 8
    dtype: str = "float32"
    mode: str = "soft"
    gamma: float = 0.1
    backward: bool = False
    repeats: int = 10
    warmup: int = 2
    device: str = "auto"
    eager_max_pairs: int = 4096  # the Python per-cell loop: timed on at most this many pairs
    interpret_max_pairs: int = 256  # the Triton interpreter (CPU only): at most this many pairs
    implementations: tuple = IMPLEMENTATIONS
    out_dir: str = "benchmarks"
    seed: int = 0
    extra: dict = field(default_factory=dict)


def peak_bandwidth(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)



def _pysdtw_fn(config, device):
    try:
        import pysdtw
    except ImportError:
        return None
    # pysdtw takes two sequences and a distance function: hand it the precomputed cost as X and
    # ignore Y, a zero-stride placeholder with the lengths and feature size pysdtw checks.
    sdtw = pysdtw.SoftDTW(gamma=config.gamma, dist_func=lambda x, _y: x, use_cuda=device.type == "cuda")

    def run(cost, mode, gamma):
        batch, _, m = cost.shape
        return sdtw(cost, cost.new_zeros(1, 1, 1).expand(batch, m, m))

    return run


def _with_backend(backend):
    def run(cost, mode, gamma):
        previous = os.environ.get("M3NET_DTW_BACKEND")
        os.environ["M3NET_DTW_BACKEND"] = backend
        try:
            return dtw(cost, mode=mode, gamma=gamma)
        finally:
            if previous is None:
                os.environ.pop("M3NET_DTW_BACKEND", None)
            else:
                os.environ["M3NET_DTW_BACKEND"] = previous

    return run


def _implementations(config, device):
    """name -> (callable(cost, mode, gamma), max pairs or None, reason it is skipped or None)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    impls = {}
    if "triton" in config.implementations:
        try:
            import triton  # noqa: F401

            if device.type == "cuda":
                impls["triton"] = (_with_backend("triton"), None, None)
            elif interpret:
                impls["triton"] = (_with_backend("triton"), config.interpret_max_pairs, None)
            else:
                impls["triton"] = (None, None, "no CUDA device (set TRITON_INTERPRET=1 to time the interpreter)")
        except ImportError:
            impls["triton"] = (None, None, "triton not installed")
    if "torch-reference" in config.implementations:
        impls["torch-reference"] = (dtw_reference, None, None)
    if "eager-loop" in config.implementations:
        impls["eager-loop"] = (eager_dtw, config.eager_max_pairs, None)
    if "pysdtw" in config.implementations:
        fn = _pysdtw_fn(config, device)
        if config.mode != "soft":
            impls["pysdtw"] = (None, None, "soft mode only")
        elif fn is None:
            impls["pysdtw"] = (None, None, "pysdtw not installed (pip install pysdtw)")
        else:
            impls["pysdtw"] = (fn, None, None)
    return impls


def _time(fn, cost, config, device):
    """Median seconds of one call (forward, or forward + backward) over ``repeats``."""

    def once():
        leaf = cost.detach().requires_grad_(config.backward)
        value = fn(leaf, config.mode, config.gamma)
        if config.backward:
            value.sum().backward()

    for _ in range(config.warmup):
        once()
    times = []
    for _ in range(config.repeats):
        synchronize(device)
        start = time.perf_counter()
        once()
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def floor_bytes(pairs, n, m, dtype, backward):
    elem = torch.empty(0, dtype=dtype).element_size()
    cost_bytes = pairs * n * m * elem
    total = cost_bytes + pairs * elem  # cost in, one value out
    if backward:
        total += cost_bytes  # gradient out
    return total


def run_bench(config):
    """Times every implementation; returns a dict with metadata and one row per implementation."""
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    pairs = config.pairs or (1_000_000 if device.type == "cuda" else 4096)
    peak = peak_bandwidth(device)
    gen = torch.Generator().manual_seed(config.seed)
    full_cost = (torch.rand(pairs, config.n, config.m, generator=gen) * 2).to(device=device, dtype=dtype)
    rows = []
    for name, (fn, cap, skipped) in _implementations(config, device).items():
        row = {"implementation": name, "pairs_timed": 0, "seconds": None, "pairs_per_s": None,
               "gb_per_s": None, "pct_of_floor": None, "note": skipped or ""}
        if fn is not None:
            timed = min(pairs, cap) if cap else pairs
            seconds = _time(fn, full_cost[:timed], config, device)
            moved = floor_bytes(timed, config.n, config.m, dtype, config.backward)
            row.update(pairs_timed=timed, seconds=seconds, pairs_per_s=timed / seconds, gb_per_s=moved / seconds / 1e9)
            if peak:
                row["pct_of_floor"] = 100.0 * (moved / seconds) / peak
            if timed < pairs:
                row["note"] = f"timed on {timed} of {pairs} pairs (slow path), rate per pair"
        rows.append(row)
    reference_rate = {r["implementation"]: r["pairs_per_s"] for r in rows}.get("triton")
    for row in rows:
        if reference_rate and row["pairs_per_s"]:
            row["triton_speedup"] = reference_rate / row["pairs_per_s"]
        else:
            row["triton_speedup"] = None
    config = {**dataclasses.asdict(config), "pairs": pairs, "implementations": list(config.implementations)}
    return benchmark_record("dtw", device, config, rows, peak_bandwidth_bytes_per_s=peak)


def format_table(result):
    cfg = result["config"]
    kind = "forward+backward" if cfg["backward"] else "forward"
    lines = [
        f"DTW {cfg['mode']} {kind}: {cfg['pairs']} pairs of {cfg['n']}x{cfg['m']} {cfg['dtype']} on {result['device']}",
    ]
    if result["cpu_numbers"]:
        lines.append("(CPU numbers: no GPU here, no bandwidth floor percentage)")
    header = f"{'implementation':<16} {'pairs timed':>11} {'s/call':>11} {'pairs/s':>12} {'GB/s':>8} {'% floor':>8} {'triton x':>9}  note"
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        def fmt(value, spec):
            return format(value, spec) if value is not None else "-"

        lines.append(
            f"{r['implementation']:<16} {r['pairs_timed']:>11} {fmt(r['seconds'], '>11.4g'):>11} {fmt(r['pairs_per_s'], '>12.4g'):>12} "
            f"{fmt(r['gb_per_s'], '>8.3g'):>8} {fmt(r['pct_of_floor'], '>8.1f'):>8} {fmt(r['triton_speedup'], '>9.1f'):>9}  {r['note']}"
        )
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after mode, pass, size, dtype, device and date; returns the two paths."""
    cfg = result["config"]
    kind = "fwdbwd" if cfg["backward"] else "fwd"
    columns = {"mode": cfg["mode"], "pass": kind, "n": cfg["n"], "m": cfg["m"], "dtype": cfg["dtype"],
               "pairs": cfg["pairs"]}
    return write_benchmark(result, out_dir, f"dtw_{cfg['mode']}_{kind}_{cfg['n']}x{cfg['m']}_{cfg['dtype']}", columns)
