"""``m3net bench-dtw``: the DTW implementations side by side, on the same costs, over a sweep of sizes.

Implementations: the Triton kernels (``dtw(backend="triton")``), the vectorised torch reference,
the eager per-cell loop that few-shot action code commonly uses (m3net.kernels.eager), and
pysdtw's soft-DTW forward kernel (soft mode, fp32/fp64) where pysdtw is installed. pysdtw is timed
as its kernel alone (``compute_softdtw_cuda`` launched on prepared buffers; on the CPU its numba
``compute_softdtw``), not through its ``SoftDTW`` wrapper, whose forward takes a B x B ``diag()``
of the values and whose backward loops over every pair in Python: that would time the wrapper,
not the kernel. Its backward is not timed for the same reason (its rows in ``bwd`` and ``fwd+bwd``
say so). Every implementation is timed at the same number of pairs B; on the CPU the eager loop and
the Triton interpreter are capped (the row's note says at how many pairs), and on CUDA the eager
loop, whose autograd graph keeps every cell, at most EAGER_CUDA_MAX_CELLS cells; ``reference_max_pairs``
caps the torch reference and the eager loop further (the GPU session times them on 64k of 1M pairs of
the long path, where the Triton rows run all of them). The device's copy rate (``% copy``) is measured
once per process. Rates are per
pair; every row also checks its values on the first CHECKED_PAIRS pairs against the float64
reference (``max_abs_err``).

Passes: ``fwd`` (the value), ``bwd`` (the gradient alone, from a forward done before the timing)
and ``fwd+bwd`` (a training step: forward then gradient).

Timing: on CUDA ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repeat, median);
on the CPU the median wall time of ``repeats`` calls. Costs are drawn on the device (seeded).

Bandwidth floor (the one definition: ``floor_bytes_per_pair``): the DRAM bytes one pair must move
in the pass, whatever the implementation:

    fwd      the cost read once (N·M elements) + the value written (one element of the
             accumulation dtype: fp32 for 16-bit costs, fp64 for fp64)            260 B at 8×8 fp32
    bwd      the cost read again (the gradient depends on all of it) + the incoming gradient of
             the value read + the gradient written (N·M elements, the cost's dtype) 516 B
    fwd+bwd  both, a whole training step                                         776 B

The same for every mode: OTAM's zero padding and dtw_symmetric's transpose are formed in
registers, never moved. The Triton kernels move the floor on the short path and a little more on the
long path, whose training forward writes checkpoint rows for the backward (``triton_bytes_per_pair``).
``% floor`` = floor bytes / time / the device's datasheet DRAM bandwidth
(PEAK_BANDWIDTH, known GPUs only), always against the floor of the timed pass; ``% copy`` = the same
against the device-to-device copy rate measured in the same process (bytes read + written), the
ceiling a real kernel can reach. ``x pysdtw`` and ``x eager`` = the row's pairs/s over that
competitor's at the same size.
"""
import dataclasses
import functools
import os
import time
from dataclasses import field

import torch

from m3net.bench.record import RecordSettings, benchmark_record, write_benchmark
from m3net.config import RunSettings, setting, settings
from m3net.kernels.dtw import MODES, dtw, dtw_reference, dtw_similarity, dtw_with_length
from m3net.kernels.dtw_grid import _recording
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
PASSES = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
SWEEP_PAIRS = (4096, 32768, 1_000_000)  # an episode's pairs .. a large batch
SWEEP_T = (8, 16, 32, 64)
EAGER_CUDA_MAX_CELLS = 1 << 26  # the eager loop's autograd graph keeps every cell: 1M pairs of 8x8 fit, 64x64 not
CHECKED_PAIRS = 256  # values compared with the float64 reference on this many pairs per row
COPY_BYTES = 1 << 30  # the copy that measures the device's practical bandwidth ceiling


@settings
class DTWBenchConfig(RecordSettings, RunSettings):
    pairs: tuple = setting((0,), "Cost matrices per call; 0: 1M on CUDA, 4096 on CPU.", minimum=0)
    sizes: tuple = ((8, 8),)  # (N, M) cost shapes
    dtype: str = setting("float32", "Cost dtype.", choices=("float32", "float16", "bfloat16", "float64"))
    mode: str = setting("soft", "DTW mode.", choices=("soft", "hard", "otam"))
    gamma: float = setting(0.1, "Soft-min smoothing (soft, otam).", minimum=0, exclusive=True)
    timed_pass: str = setting("fwd", "Time the forward, the backward alone (after an untimed forward) or forward + "
                              "backward.", choices=PASSES, option="--pass")
    repeats: int = setting(10, "Timed calls per implementation on CPU (median).", minimum=1)
    warmup: int = 2
    eager_max_pairs: int = setting(4096, "CPU only: cap on pairs for the slow per-cell Python loop.", minimum=1)
    interpret_max_pairs: int = 256  # CPU only: the Triton interpreter, at most this many pairs
    reference_max_pairs: int = 0  # the torch reference and the eager loop timed on at most this many pairs (0: all)
    implementations: tuple = setting(IMPLEMENTATIONS, "Implementations to time.", choices=IMPLEMENTATIONS,
                                     option="--impl")
    compile_only: bool = False  # one untimed call per implementation and size (warms the kernel caches)
    extra: dict = field(default_factory=dict)


def _accumulation_bytes(dtype):
    return 8 if dtype == torch.float64 else 4  # the kernels return fp32 values for 16-bit costs


def floor_bytes_per_pair(n, m, dtype, mode, pass_):
    """The bandwidth floor of one pair of an n x m cost of ``dtype`` in ``pass_`` (see the module docstring)."""
    if mode not in MODES or pass_ not in PASSES:
        raise ValueError(f"floor_bytes_per_pair: mode in {MODES} and pass in {PASSES}, got {mode!r}, {pass_!r}")
    cost = n * m * torch.empty(0, dtype=dtype).element_size()
    value = _accumulation_bytes(dtype)
    forward = cost + value  # cost in, value out
    backward = cost + value + cost  # cost in again, incoming gradient in, gradient out
    return {"fwd": forward, "bwd": backward, "fwd+bwd": forward + backward}[pass_]


def triton_bytes_per_pair(n, m, dtype, mode, pass_):
    """The DRAM bytes the Triton kernels move per pair in ``pass_`` by construction (every tensor a launch
    reads or writes, once), so floor / this is the most % of the floor they can reach. The short path
    (N, M <= SHORT_MAX) moves the floor; on the long path the training forward also writes its checkpoint
    rows (m3net.kernels.dtw_long, about one value per cell per SEGMENT_ROWS rows), which the backward
    reads back beside the cost: 14,600 B per training step of 32x32 fp32 against a floor of 12,296 B."""
    from m3net.kernels.dtw import SHORT_MAX
    from m3net.kernels.dtw_long import _checkpoint_shape

    floor = floor_bytes_per_pair(n, m, dtype, mode, pass_)
    if n <= SHORT_MAX and m <= SHORT_MAX or pass_ == "fwd":
        return floor
    checkpoints = _accumulation_bytes(dtype) * int(torch.Size(_checkpoint_shape(1, mode, n, m)).numel())
    return floor + checkpoints * (2 if pass_ == "fwd+bwd" else 1)  # written by the forward, read by the backward


def peak_bandwidth(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


@functools.lru_cache(maxsize=None)
def copy_bandwidth(device, nbytes=COPY_BYTES):
    """Bytes read + written per second by a large device-to-device copy (CUDA only; None elsewhere),
    measured once per process and device: every record of a process shares the ceiling."""
    if device.type != "cuda":
        return None
    import triton.testing

    def copy_ms():
        src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        with torch.cuda.device(device):
            return triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")

    ms = copy_ms()
    torch.cuda.empty_cache()  # the two buffers went with copy_ms
    return 2 * nbytes / (ms / 1e3)


def random_costs(pairs, n, m, dtype, device, seed):
    """(pairs, n, m) costs uniform in [0, 2), drawn on ``device`` (no host tensor of the whole batch)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return (torch.rand(pairs, n, m, generator=gen, device=device) * 2).to(dtype)


@dataclasses.dataclass
class Implementation:
    """One column of the table: ``fn(cost, mode, gamma) -> value`` through autograd, or ``prepare(cost,
    gamma) -> call`` for a forward kernel timed alone on buffers prepared outside the timing."""
    fn: object = None
    prepare: object = None
    cap: object = None  # (n, m) -> max pairs timed, or None
    skipped: str = None


def _pysdtw_kernel(device):
    """pysdtw's soft-DTW forward kernel alone: prepare(cost, gamma) -> call returning the values (B,)."""
    import math

    import numpy as np
    from pysdtw import sdtw_cpu, sdtw_cuda

    def prepare_cuda(cost, gamma):
        from numba import cuda

        batch, n, m = cost.shape
        d = cost.detach().contiguous()
        lengths = torch.tensor([n, m], device=cost.device).expand(batch, 2).contiguous()
        r = torch.full((batch, n + 2, m + 2), math.inf, dtype=cost.dtype, device=cost.device)
        r[:, 0, 0] = 0  # the wrapper's two fills, done here once: its kernel rewrites every inner cell
        threads = min(max(n, m), sdtw_cuda.MAX_THREADS_PER_BLOCK)
        passes = max(n, m) // sdtw_cuda.MAX_THREADS_PER_BLOCK + 1
        stream = cuda.external_stream(torch.cuda.current_stream(cost.device).cuda_stream)
        args = (cuda.as_cuda_array(d), float(gamma), 0.0, cuda.as_cuda_array(lengths), passes, n + m - 1,
                cuda.as_cuda_array(r))

        def call():  # one block per pair, one thread per anti-diagonal cell (pysdtw's launch)
            sdtw_cuda.compute_softdtw_cuda[batch, threads, stream](*args)
            return r[:, n, m]

        return call

    def prepare_cpu(cost, gamma):
        batch, n, m = cost.shape
        d = cost.detach().contiguous().numpy()
        lengths = np.tile(np.array([n, m], dtype=np.int64), (batch, 1))
        return lambda: torch.from_numpy(sdtw_cpu.compute_softdtw(d, lengths, float(gamma), 0.0)[:, n, m])

    return prepare_cuda if device.type == "cuda" else prepare_cpu


def _implementations(config, device):
    """name -> Implementation."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    on_cpu = device.type != "cuda"
    impls = {}
    if "triton" in config.implementations:
        try:
            import triton  # noqa: F401

            def run_triton(cost, mode, gamma):
                return dtw(cost, mode=mode, gamma=gamma, backend="triton")

            if not on_cpu or _recording():  # a recorded call launches nothing: any device records the launches
                impls["triton"] = Implementation(run_triton)
            elif interpret:
                impls["triton"] = Implementation(run_triton, cap=lambda n, m: config.interpret_max_pairs)
            else:
                impls["triton"] = Implementation(skipped="no CUDA device (set TRITON_INTERPRET=1 to time the "
                                                         "interpreter)")
        except ImportError:
            impls["triton"] = Implementation(skipped="triton not installed")
    limit = config.reference_max_pairs or float("inf")
    if "torch-reference" in config.implementations:
        impls["torch-reference"] = Implementation(dtw_reference, cap=lambda n, m: limit)
    if "eager-loop" in config.implementations:
        if on_cpu:
            impls["eager-loop"] = Implementation(eager_dtw, cap=lambda n, m: min(limit, config.eager_max_pairs))
        else:
            impls["eager-loop"] = Implementation(
                eager_dtw, cap=lambda n, m: min(limit, max(1, EAGER_CUDA_MAX_CELLS // (n * m))))
    if "pysdtw" in config.implementations:
        impls["pysdtw"] = _pysdtw_implementation(config, device)
    return impls


def _pysdtw_implementation(config, device):
    if config.mode != "soft":
        return Implementation(skipped="soft mode only")
    if DTYPES[config.dtype] in (torch.float16, torch.bfloat16):
        return Implementation(skipped=f"pysdtw does not take {config.dtype}")
    if config.timed_pass != "fwd":
        return Implementation(skipped="forward kernel only: pysdtw's backward loops over pairs in Python")
    try:
        return Implementation(prepare=_pysdtw_kernel(device))
    except ImportError as err:
        return Implementation(skipped=f"pysdtw not importable ({err})")


def _timed_call(impl, cost, config):
    """The zero-argument call that ``config.timed_pass`` times on ``cost``."""
    if impl.prepare is not None:
        return impl.prepare(cost, config.gamma)
    if config.timed_pass == "fwd":
        return lambda: impl.fn(cost, config.mode, config.gamma)
    leaf = cost.detach().requires_grad_(True)
    if config.timed_pass == "bwd":  # the forward once, outside the timing; its graph kept for every repeat
        value = impl.fn(leaf, config.mode, config.gamma)
        grad_out = torch.ones_like(value)
        return lambda: torch.autograd.grad(value, leaf, grad_out, retain_graph=True)

    def step():
        value = impl.fn(leaf, config.mode, config.gamma)
        return torch.autograd.grad(value, leaf, torch.ones_like(value))

    return step


def time_call(call, config, device):
    """Median seconds of one ``call()``; with ``config.compile_only`` one untimed call (returns None)."""
    if config.compile_only:
        call()
        synchronize(device)
        return None
    if device.type == "cuda":
        import triton.testing

        with torch.cuda.device(device):
            return triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median") / 1e3
    for _ in range(config.warmup):
        call()
    times = []
    for _ in range(config.repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def _max_abs_error(impl, cost, config):
    """Largest |value - float64 reference value| over the first CHECKED_PAIRS pairs."""
    sample = cost[:CHECKED_PAIRS]
    with torch.no_grad():
        got = impl.prepare(sample, config.gamma)() if impl.prepare else impl.fn(sample, config.mode, config.gamma)
        expected = dtw_reference(sample.double(), config.mode, config.gamma)
    return (got.double().cpu() - expected.cpu()).abs().max().item()


def _bench_size(config, device, pairs, n, m, ceilings):
    dtype = DTYPES[config.dtype]
    peak, copy = ceilings
    cost = random_costs(pairs, n, m, dtype, device, config.seed)
    floor = floor_bytes_per_pair(n, m, dtype, config.mode, config.timed_pass)
    rows = []
    for name, impl in _implementations(config, device).items():
        row = {"implementation": name, "pairs": pairs, "n": n, "m": m, "pairs_timed": 0, "seconds": None,
               "pairs_per_s": None, "floor_bytes_per_pair": floor, "gb_per_s": None, "pct_of_floor": None,
               "pct_of_copy": None, "max_abs_err": None, "note": impl.skipped or ""}
        if impl.skipped is None:
            timed = min(pairs, impl.cap(n, m)) if impl.cap else pairs
            try:
                seconds = time_call(_timed_call(impl, cost[:timed], config), config, device)
                if not config.compile_only:
                    row["max_abs_err"] = _max_abs_error(impl, cost, config)
            except torch.cuda.OutOfMemoryError:  # e.g. stored weights of 1M pairs of 64x64: a result, not a crash
                row["note"] = f"out of GPU memory at {timed} pairs"
                rows.append(row)
                torch.cuda.empty_cache()
                continue
            except Exception as err:  # pysdtw is third-party code on numba: its failure is its row's note
                if impl.prepare is None:
                    raise
                row["note"] = f"failed: {type(err).__name__}: {err}"[:300]
                rows.append(row)
                continue
            row["pairs_timed"] = timed
            if seconds:
                rate = floor * timed / seconds  # floor bytes per second
                row.update(seconds=seconds, pairs_per_s=timed / seconds, gb_per_s=rate / 1e9,
                           pct_of_floor=100.0 * rate / peak if peak else None,
                           pct_of_copy=100.0 * rate / copy if copy else None)
            if timed < pairs:
                row["note"] = f"timed on {timed} of {pairs} pairs (memory / CPU cap), rate per pair"
            if impl.prepare is not None:
                row["note"] = "forward kernel alone on prepared buffers (not its wrapper)"
        rows.append(row)
    rates = {r["implementation"]: r["pairs_per_s"] for r in rows}
    for row in rows:
        for competitor, column in (("pysdtw", "x_pysdtw"), ("eager-loop", "x_eager")):
            base = rates.get(competitor)
            row[column] = row["pairs_per_s"] / base if base and row["pairs_per_s"] else None
    return rows


def default_pairs(pairs, device):
    return pairs or (1_000_000 if device.type == "cuda" else 4096)


def run_bench(config):
    """Times every implementation at every (pairs, size); returns metadata and one row per implementation and size."""
    if config.timed_pass not in PASSES:
        raise ValueError(f"timed_pass must be one of {PASSES}, got {config.timed_pass!r}")
    device = resolve_device(config.device)
    pairs_list = [default_pairs(p, device) for p in config.pairs]
    ceilings = (peak_bandwidth(device), None if config.compile_only else copy_bandwidth(device))
    rows = [row for pairs in pairs_list for n, m in config.sizes
            for row in _bench_size(config, device, pairs, n, m, ceilings)]
    config = {**dataclasses.asdict(config), "pass": config.timed_pass, "pairs": pairs_list,
              "sizes": [list(s) for s in config.sizes], "implementations": list(config.implementations),
              "floor": "fwd: cost in + value out; bwd: cost in + value gradient in + gradient out; fwd+bwd: both "
                       "(m3net.bench.dtw.floor_bytes_per_pair)"}
    return benchmark_record("dtw", device, config, rows, peak_bandwidth_bytes_per_s=ceilings[0],
                            copy_bandwidth_bytes_per_s=ceilings[1])


MATCHER_CALLS = ("dtw forward (plain)", "I-M matcher hard", "I-M matcher soft", "OTAM head", "I-M dtw, s in place",
                 "I-M dtw, 1 - s copy")


def run_matcher_bench(config, shots=5, ways=5, dim=2048, only=None):
    """End to end, per T in ``config.sizes`` (N = M = T) at ``config.pairs[0]`` pairs: the I-M matcher
    (frame similarity matmul + dtw_similarity's fused value/path length on its strided view + class
    means) and the OTAM head (spatial mean + similarity + dtw_similarity, both directions) beside one
    plain dtw forward on precomputed costs of the same pairs. Two more rows isolate the I-M DTW pass
    on a precomputed similarity: read in place (dtw_similarity) vs the cost 1 - s materialised first
    (dtw_with_length, the matchers' path before issue #10). Forward passes only.

    ``x plain fwd`` = the row's time over that plain forward's (the issue's target for I-M: <= 2).
    ``only``: the names (MATCHER_CALLS) of the calls to run, all by default.
    """
    from m3net.model.baselines import OTAM
    from m3net.model.episode_ops import similarity_all_pairs
    from m3net.model.matchers import instance_matching

    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    supports = shots * ways
    queries = max(1, default_pairs(config.pairs[0], device) // supports)
    labels = torch.arange(ways, device=device).repeat_interleave(shots)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    rows = []
    for t, _ in config.sizes:
        query = torch.randn(queries, t, dim, generator=gen, device=device).to(dtype)
        support = torch.randn(1, supports, t, dim, generator=gen, device=device).to(dtype)
        cost = random_costs(queries * supports, t, t, dtype, device, config.seed)
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
        if set(only or ()) - set(calls):
            raise ValueError(f"run_matcher_bench: only= takes names among {tuple(calls)}, got {only}")
        plain = None
        for name, call in calls.items():
            if only is not None and name not in only:
                continue
            seconds = time_call(call, config, device)
            plain = seconds if name == "dtw forward (plain)" else plain
            rows.append({"implementation": name, "pairs": queries * supports, "n": t, "m": t, "seconds": seconds,
                         "pairs_per_s": queries * supports / seconds if seconds else None,
                         "x_plain_fwd": seconds / plain if seconds and plain else None})
    config = {**dataclasses.asdict(config), "pairs": [queries * supports], "sizes": [list(s) for s in config.sizes],
              "implementations": list(config.implementations), "shots": shots, "ways": ways, "dim": dim}
    return benchmark_record("dtw_matchers", device, config, rows)


def _fmt(value, spec):
    return format(value, spec) if value is not None else "-"


def format_matcher_table(result):
    lines = [f"DTW matchers end to end ({result['config']['dtype']}) on {result['device']}",
             f"{'pairs':>8} {'T':>3} {'call':<22} {'s/call':>10} {'pairs/s':>10} {'x plain fwd':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['pairs']:>8} {r['n']:>3} {r['implementation']:<22} {_fmt(r['seconds'], '>10.4g')} "
                     f"{_fmt(r['pairs_per_s'], '>10.4g')} {_fmt(r['x_plain_fwd'], '>11.2f')}")
    return "\n".join(lines)


def format_table(result):
    cfg = result["config"]
    lines = [f"DTW {cfg['mode']} {cfg['pass']}, {cfg['dtype']}, on {result['device']} "
             f"(% floor, % copy: against the {cfg['pass']} floor, 'floor B' per pair)"]
    if result["cpu_numbers"]:
        lines.append("(CPU numbers: no GPU here, no bandwidth floor percentage)")
    header = (f"{'pairs':>8} {'NxM':>6} {'implementation':<16} {'pairs timed':>11} {'s/call':>10} {'pairs/s':>10} "
              f"{'floor B':>7} {'GB/s':>7} {'% floor':>7} {'% copy':>6} {'x pysdtw':>8} {'x eager':>8} "
              f"{'max|err|':>8}  note")
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        lines.append(
            f"{r['pairs']:>8} {str(r['n']) + 'x' + str(r['m']):>6} {r['implementation']:<16} {r['pairs_timed']:>11} "
            f"{_fmt(r['seconds'], '.4g'):>10} {_fmt(r['pairs_per_s'], '.4g'):>10} {r['floor_bytes_per_pair']:>7} "
            f"{_fmt(r['gb_per_s'], '.3g'):>7} {_fmt(r['pct_of_floor'], '.1f'):>7} {_fmt(r['pct_of_copy'], '.1f'):>6} "
            f"{_fmt(r['x_pysdtw'], '.1f'):>8} {_fmt(r['x_eager'], '.1f'):>8} {_fmt(r['max_abs_err'], '.1e'):>8}  "
            f"{r['note']}"
        )
    return "\n".join(lines)


def write_results(result, out_dir):
    """CSV + JSON named after mode, pass, sizes, dtype, device and date; returns the two paths."""
    cfg = result["config"]
    kind = cfg["pass"].replace("+", "")  # fwd, bwd, fwdbwd
    sizes = "-".join(f"{n}x{m}" for n, m in cfg["sizes"])
    sweep = "sweep_" if len(cfg["pairs"]) > 1 or len(cfg["sizes"]) > 1 else ""
    columns = {"mode": cfg["mode"], "pass": cfg["pass"], "dtype": cfg["dtype"]}
    return write_benchmark(result, out_dir, f"dtw_{sweep}{cfg['mode']}_{kind}_{sizes}_{cfg['dtype']}", columns)


def write_matcher_results(result, out_dir):
    """CSV + JSON of a ``run_matcher_bench`` result; returns the two paths."""
    cfg = result["config"]
    sizes = "-".join(str(t) for t, _ in cfg["sizes"])
    return write_benchmark(result, out_dir, f"dtw_matchers_t{sizes}_{cfg['dtype']}", {"dtype": cfg["dtype"]})
