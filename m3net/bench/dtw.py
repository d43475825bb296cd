"""``m3net bench-dtw``: the DTW implementations side by side, on the same costs, over a sweep of sizes.

Implementations: the Triton kernels (``dtw(backend="triton")``), the vectorised torch reference,
the eager per-cell loop that few-shot action code commonly uses (m3net.kernels.eager), and pysdtw
(soft mode, fp32/fp64 only) where it is installed. Every implementation is timed at the same
number of pairs B; on the CPU the eager loop and the Triton interpreter are capped (the
row's note says at how many pairs), and on CUDA the eager loop, whose autograd graph keeps every
cell, at most EAGER_CUDA_MAX_CELLS cells. Rates are per pair.

Timing: on CUDA ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repeat, median);
on the CPU the median wall time of ``repeats`` calls.

Bandwidth floor (the one definition, used by ``floor_bytes``): the bytes any implementation must
move per pair: the cost matrix in and one value out; with the backward also the gradient out
(same dtype as the cost). ``% of floor`` = floor bytes / time / the device's peak DRAM bandwidth
(known GPUs only). ``x pysdtw`` and ``x eager`` = the row's pairs/s over that competitor's at the
same size.
"""
import dataclasses
import os
import time
from dataclasses import field

import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, setting, settings
from m3net.kernels.dtw import dtw, dtw_reference, dtw_similarity, dtw_with_length
from m3net.kernels.eager import eager_dtw
from m3net.runtime import resolve_device, synchronize

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
SWEEP_PAIRS = (4096, 32768, 1_000_000)  # an episode's pairs .. a large batch
SWEEP_T = (8, 16, 32, 64)
EAGER_CUDA_MAX_CELLS = 1 << 26  # the eager loop's autograd graph keeps every cell: 1M pairs of 8x8 fit, 64x64 not


@settings
class DTWBenchConfig(RecordSettings, RunSettings):
    pairs: tuple = (0,)  # 0: 1M on CUDA, 4096 on CPU
    sizes: tuple = ((8, 8),)  # (N, M) cost shapes
    dtype: str = setting("float32", "Cost dtype.", choices=("float32", "float16", "bfloat16", "float64"))
    mode: str = setting("soft", "DTW mode.", choices=("soft", "hard", "otam"))
    gamma: float = setting(0.1, "Soft-min smoothing (soft, otam).", minimum=0, exclusive=True)
    backward: bool = False
    repeats: int = setting(10, "Timed calls per implementation on CPU (median).", minimum=1)
    warmup: int = 2
    eager_max_pairs: int = setting(4096, "CPU only: cap on pairs for the slow per-cell Python loop.", minimum=1)
    interpret_max_pairs: int = 256  # CPU only: the Triton interpreter, at most this many pairs
    implementations: tuple = IMPLEMENTATIONS
    extra: dict = field(default_factory=dict)


def peak_bandwidth(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


def floor_bytes(pairs, n, m, dtype, backward):
    """The bandwidth floor: cost in + one value out (+ the gradient out with the backward)."""
    elem = torch.empty(0, dtype=dtype).element_size()
    cost_bytes = pairs * n * m * elem
    total = cost_bytes + pairs * elem  # cost in, one value out
    if backward:
        total += cost_bytes  # gradient out
    return total


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


def _implementations(config, device):
    """name -> (callable(cost, mode, gamma), max pairs for (n, m) or None, reason it is skipped or None)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    on_cpu = device.type != "cuda"
    impls = {}
    if "triton" in config.implementations:
        try:
            import triton  # noqa: F401

            def run_triton(cost, mode, gamma):
                return dtw(cost, mode=mode, gamma=gamma, backend="triton")

            if not on_cpu:
                impls["triton"] = (run_triton, None, None)
            elif interpret:
                impls["triton"] = (run_triton, lambda n, m: config.interpret_max_pairs, None)
            else:
                impls["triton"] = (None, None, "no CUDA device (set TRITON_INTERPRET=1 to time the interpreter)")
        except ImportError:
            impls["triton"] = (None, None, "triton not installed")
    if "torch-reference" in config.implementations:
        impls["torch-reference"] = (dtw_reference, None, None)
    if "eager-loop" in config.implementations:
        if on_cpu:
            impls["eager-loop"] = (eager_dtw, lambda n, m: config.eager_max_pairs, None)
        else:
            impls["eager-loop"] = (eager_dtw, lambda n, m: max(1, EAGER_CUDA_MAX_CELLS // (n * m)), None)
    if "pysdtw" in config.implementations:
        fn = _pysdtw_fn(config, device)
        if config.mode != "soft":
            impls["pysdtw"] = (None, None, "soft mode only")
        elif DTYPES[config.dtype] in (torch.float16, torch.bfloat16):
            impls["pysdtw"] = (None, None, f"pysdtw does not take {config.dtype}")
        elif fn is None:
            impls["pysdtw"] = (None, None, "pysdtw not installed (pip install pysdtw)")
        else:
            impls["pysdtw"] = (fn, None, None)
    return impls


def _time(fn, cost, config, device):
    """Median seconds of one call (forward, or forward + backward)."""

    def once():
        leaf = cost.detach().requires_grad_(config.backward)
        value = fn(leaf, config.mode, config.gamma)
        if config.backward:
            value.sum().backward()

    if device.type == "cuda":
        import triton.testing

        with torch.cuda.device(device):
            return triton.testing.do_bench(once, warmup=25, rep=100, return_mode="median") / 1e3
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


def _bench_size(config, device, pairs, n, m):
    dtype = DTYPES[config.dtype]
    peak = peak_bandwidth(device)
    gen = torch.Generator().manual_seed(config.seed)
    cost = (torch.rand(pairs, n, m, generator=gen) * 2).to(device=device, dtype=dtype)
    rows = []
    for name, (fn, cap, skipped) in _implementations(config, device).items():
        row = {"implementation": name, "pairs": pairs, "n": n, "m": m, "pairs_timed": 0, "seconds": None,
               "pairs_per_s": None, "gb_per_s": None, "pct_of_floor": None, "note": skipped or ""}
        if fn is not None:
            timed = min(pairs, cap(n, m)) if cap else pairs
            try:
                seconds = _time(fn, cost[:timed], config, device)
            except torch.cuda.OutOfMemoryError:  # e.g. stored weights of 1M pairs of 64x64: a result, not a crash
                row["note"] = f"out of GPU memory at {timed} pairs"
                rows.append(row)
                torch.cuda.empty_cache()
                continue
            moved = floor_bytes(timed, n, m, dtype, config.backward)
            row.update(pairs_timed=timed, seconds=seconds, pairs_per_s=timed / seconds, gb_per_s=moved / seconds / 1e9)
            if peak:
                row["pct_of_floor"] = 100.0 * (moved / seconds) / peak
            if timed < pairs:
                row["note"] = f"timed on {timed} of {pairs} pairs (memory / CPU cap), rate per pair"
        rows.append(row)
    rates = {r["implementation"]: r["pairs_per_s"] for r in rows}
    for row in rows:
        for competitor, column in (("pysdtw", "x_pysdtw"), ("eager-loop", "x_eager")):
            base = rates.get(competitor)
            row[column] = row["pairs_per_s"] / base if base and row["pairs_per_s"] else None
    return rows


def run_bench(config):
    """Times every implementation at every (pairs, size); returns metadata and one row per implementation and size."""
    device = resolve_device(config.device)
    pairs_list = [p or (1_000_000 if device.type == "cuda" else 4096) for p in config.pairs]
    rows = [row for pairs in pairs_list for n, m in config.sizes for row in _bench_size(config, device, pairs, n, m)]
    config = {**dataclasses.asdict(config), "pairs": pairs_list, "sizes": [list(s) for s in config.sizes],
              "implementations": list(config.implementations), "floor": "cost in + one value out (+ gradient out)"}
    return benchmark_record("dtw", device, config, rows, peak_bandwidth_bytes_per_s=peak_bandwidth(device))


def run_matcher_bench(config, shots=5, ways=5, dim=2048):
    """End to end, per T in ``config.sizes`` (N = M = T) at ``config.pairs[0]`` pairs: the I-M matcher
    (frame similarity matmul + dtw_similarity's fused value/path length on its strided view + class
    means) and the OTAM head (spatial mean + similarity + dtw_similarity, both directions) beside one
    plain dtw forward on precomputed costs of the same pairs. Two more rows isolate the I-M DTW pass
    on a precomputed similarity: read in place (dtw_similarity) vs the cost 1 - s materialised first
    (dtw_with_length, the matchers' path before issue #10).

    ``x plain fwd`` = the row's time over that plain forward's (the issue's target for I-M: <= 2).
    """
    from m3net.model.baselines import OTAM
    from m3net.model.episode_ops import similarity_all_pairs
    from m3net.model.matchers import instance_matching

    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    supports = shots * ways
    pairs = config.pairs[0] or (1_000_000 if device.type == "cuda" else 4096)
    queries = max(1, pairs // supports)
    labels = torch.arange(ways, device=device).repeat_interleave(shots)
    gen = torch.Generator().manual_seed(config.seed)
    rows = []
    for t, _ in config.sizes:
        query = torch.randn(queries, t, dim, generator=gen).to(device, dtype)
        support = torch.randn(1, supports, t, dim, generator=gen).to(device, dtype)
        cost = (torch.rand(queries * supports, t, t, generator=gen) * 2).to(device, dtype)
        otam = OTAM(OTAM.Config(feature_dim=dim, num_frames=t, gamma=config.gamma)).to(device)
        maps = support[0, :, :, None, None, :], query[:, :, None, None, :]  # (S, T, 1, 1, d), (Q, T, 1, 1, d)
        sim = similarity_all_pairs(query, support)  # (Q, S, T, T), a view of the (Q·T, S·T) matmul
        calls = {
            "dtw forward (plain)": lambda: dtw(cost, mode="soft", gamma=config.gamma),
            "I-M matcher hard": lambda: instance_matching(query, support, labels, ways, mode="hard"),
            "I-M matcher soft": lambda: instance_matching(query, support, labels, ways, mode="soft",
                                                          gamma=config.gamma),
            "OTAM head": lambda: otam(maps[0], labels, maps[1]),
            "I-M dtw, s in place": lambda: dtw_similarity(sim, mode="soft", gamma=config.gamma, with_length=True),
            "I-M dtw, 1 - s copy": lambda: dtw_with_length((1 - sim).flatten(0, 1), mode="soft", gamma=config.gamma),
        }
        plain = None
        for name, call in calls.items():  # _time hands each call the cost; these ignore it
            seconds = _time(lambda *_: call(), cost, dataclasses.replace(config, backward=False), device)
            plain = plain or seconds
            rows.append({"implementation": name, "pairs": queries * supports, "n": t, "m": t, "seconds": seconds,
                         "pairs_per_s": queries * supports / seconds, "x_plain_fwd": seconds / plain})
    config = {**dataclasses.asdict(config), "pairs": [queries * supports], "sizes": [list(s) for s in config.sizes],
              "implementations": list(config.implementations), "shots": shots, "ways": ways, "dim": dim}
    return benchmark_record("dtw_matchers", device, config, rows)


def format_matcher_table(result):
    lines = [f"DTW matchers end to end ({result['config']['dtype']}) on {result['device']}",
             f"{'pairs':>8} {'T':>3} {'call':<22} {'s/call':>10} {'pairs/s':>10} {'x plain fwd':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['pairs']:>8} {r['n']:>3} {r['implementation']:<22} {r['seconds']:>10.4g} "
                     f"{r['pairs_per_s']:>10.4g} {r['x_plain_fwd']:>11.2f}")
    return "\n".join(lines)


def format_table(result):
    cfg = result["config"]
    kind = "forward+backward" if cfg["backward"] else "forward"
    lines = [f"DTW {cfg['mode']} {kind}, {cfg['dtype']}, on {result['device']}"]
    if result["cpu_numbers"]:
        lines.append("(CPU numbers: no GPU here, no bandwidth floor percentage)")
    header = (f"{'pairs':>8} {'NxM':>6} {'implementation':<16} {'pairs timed':>11} {'s/call':>10} {'pairs/s':>10} "
              f"{'GB/s':>7} {'% floor':>7} {'x pysdtw':>8} {'x eager':>8}  note")
    lines += [header, "-" * len(header)]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    for r in result["rows"]:
        lines.append(
            f"{r['pairs']:>8} {str(r['n']) + 'x' + str(r['m']):>6} {r['implementation']:<16} {r['pairs_timed']:>11} "
            f"{fmt(r['seconds'], '.4g'):>10} {fmt(r['pairs_per_s'], '.4g'):>10} {fmt(r['gb_per_s'], '.3g'):>7} "
            f"{fmt(r['pct_of_floor'], '.1f'):>7} {fmt(r['x_pysdtw'], '.1f'):>8} {fmt(r['x_eager'], '.1f'):>8}  "
            f"{r['note']}"
        )
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after mode, pass, sizes, dtype, device and date; returns the two paths."""
    cfg = result["config"]
    kind = "fwdbwd" if cfg["backward"] else "fwd"
    sizes = "-".join(f"{n}x{m}" for n, m in cfg["sizes"])
    sweep = "sweep_" if len(cfg["pairs"]) > 1 or len(cfg["sizes"]) > 1 else ""
    columns = {"mode": cfg["mode"], "pass": kind, "dtype": cfg["dtype"]}
    return write_benchmark(result, out_dir, f"dtw_{sweep}{cfg['mode']}_{kind}_{sizes}_{cfg['dtype']}", columns)
