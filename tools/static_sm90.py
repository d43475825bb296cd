"""Static cost of the DTW kernels on Hopper (sm_90), measured without a GPU.

Each row compiles the launches the launchers themselves issue for that pass (dtw.launch_configs, or the
long-path launchers directly where the dispatch would pick the short path), with the specialisation
Triton's runtime would give those arguments, for ``GPUTarget("cuda", 90, 32)``. Registers, stack,
local and static shared memory come from the cubin (``cuobjdump -res-usage``, bundled with Triton's
NVIDIA backend); SASS and its spill instructions (LDL / STL) from ``nvdisasm``. SASS per pair = the
instructions one thread executes (straight-line code once, every loop body times its trip count)
times the threads of a program, over the pairs of a program. Branches that skip code are counted as
taken-through, so the number is an upper bound.

bytes_per_pair is the DRAM traffic the pass moves by construction: every distinct tensor argument
of a launch read or written once, per pair.

Run in a process without TRITON_INTERPRET (the kernels must be defined for the compiler), from the
repository root:

    python tools/static_sm90.py --out benchmarks/dtw_static_sm90.json

``--before FILE`` stores FILE's rows as the "before" block of the new table (the kernels as they were
at FILE's commit); a regeneration keeps the before block of the file it overwrites.

Every compile is timed (``compile_s``: triton.compile from source, so run it with an empty
TRITON_CACHE_DIR, or a hit reads as a compile of a fraction of a second); ``--jobs N`` compiles N
variants at a time, and the table records the machine's cores and its load average before and after.
``--rows FILE`` keeps each measured variant's rows in FILE (JSON lines) as it is measured and skips the
variants already there: a table too long to compile in one sitting is measured over several runs.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

TARGET = "cuda sm_90 (GPUTarget('cuda', 90, 32))"
MODES = ("soft", "hard", "otam")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}


def _tool(name):
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: this triton wheel has no bundled {name}")
    return path


def compile_for_sm90(kernel, pointer_types, constexprs, num_warps=4):
    """``kernel`` compiled ahead of time for Hopper (sm_90) without a GPU: pointers typed by
    ``pointer_types``, ``gamma`` fp32, every other scalar i32."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointer_types[name]
        else:
            signature[name] = "fp32" if name == "gamma" else "i32"
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def compile_launch(launch):
    """A recorded launch (dtw_grid.KernelLaunch) compiled for sm_90 exactly as JITFunction.run would
    compile it on a Hopper GPU: Triton's own binder specialises the arguments (pointer alignment,
    integers equal to 1 or divisible by 16, annotated types) and packs signature, constexprs and attrs,
    so the compile lands in Triton's cache (TRITON_CACHE_DIR) under the key the GPU's JIT looks up."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    kernel = launch.kernel
    # The two options JITFunction.run adds before binding: the same options, the same cache key.
    kwargs = {**launch.constexprs, "num_warps": launch.num_warps, "debug": kernel.debug or knobs.runtime.debug,
              "instrumentation_mode": knobs.compilation.instrumentation_mode}
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def _instruction_lines(sass):
    """[(address, text)] of the SASS instructions, and {label: address}."""
    instructions, labels, pending = [], {}, []
    for line in sass.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line.strip())
        if label:
            pending.append(label.group(1))
            continue
        match = re.match(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?);?\s*$", line)
        if match:
            address = int(match.group(1), 16)
            for name in pending:
                labels[name] = address
            pending = []
            instructions.append((address, match.group(2)))
    return instructions, labels


def dynamic_instructions(sass, trip_counts):
    """Instructions one thread executes: each loop's body times its trip count.

    Loops are the backward branches; ``trip_counts[d]`` is the trip count of a loop nested d + 1
    deep. Padding after the last EXIT (NOPs, the trap self-loop) is not counted.
    """
    instructions, labels = _instruction_lines(sass)
    last_exit = max(addr for addr, text in instructions if "EXIT" in text)
    loops = []
    for address, text in instructions:
        branch = re.search(r"BRA\s+`?\(?(\.L_x_\d+)", text)
        if branch and labels.get(branch.group(1), address + 1) < address:
            loops.append((labels[branch.group(1)], address))
    total = 0
    for address, text in instructions:
        if address > last_exit or text.startswith("NOP"):
            continue
        depth = sum(start <= address <= end for start, end in loops)
        weight = 1
        for d in range(depth):
            weight *= trip_counts[d]
        total += weight
    return total


def count_instructions(sass, *opcodes):
    """How many instructions of the SASS (statically, not executed) have one of these opcodes."""
    pattern = re.compile(r"(@!?U?P\w+\s+)?(" + "|".join(opcodes) + r")\b")
    return sum(1 for _, text in _instruction_lines(sass)[0] if pattern.match(text))


def resource_usage(cubin_path):
    """{REG, STACK, SHARED, LOCAL} of the cubin's kernel, as ``cuobjdump -res-usage`` reports them."""
    report = subprocess.run([_tool("cuobjdump"), "-res-usage", cubin_path], capture_output=True, text=True,
                            check=True).stdout
    line = next(text for text in report.splitlines() if "REG:" in text)
    return {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}


def _measure_launch(launch, workdir):
    start = time.perf_counter()
    compiled = compile_launch(launch)
    compile_s = time.perf_counter() - start
    cubin = os.path.join(workdir, "kernel.cubin")
    with open(cubin, "wb") as fh:
        fh.write(compiled.asm["cubin"])
    sass = subprocess.run([_tool("nvdisasm"), "-c", cubin], capture_output=True, text=True, check=True).stdout
    usage = resource_usage(cubin)
    per_thread = dynamic_instructions(sass, launch.loop_trips)
    return {
        "kernel": launch.kernel.fn.__name__, "num_warps": launch.num_warps,
        "sass_per_pair": round(per_thread * 32 * launch.num_warps / launch.pairs_per_program),
        "registers": usage["REG"], "spills": usage["STACK"],
        "spill_instructions": count_instructions(sass, "LDL", "STL"),
        "local_bytes": usage["LOCAL"], "shared_bytes": int(compiled.metadata.shared) + usage["SHARED"],
        "global_loads": count_instructions(sass, "LDG"), "barriers": count_instructions(sass, "BAR"),
        "compile_s": round(compile_s, 1),
    }


def _bytes_per_pair(launch, batch):
    """Every distinct tensor argument of the launch read or written once, per pair."""
    import torch

    storages = {arg.data_ptr(): arg.untyped_storage().nbytes() for arg in launch.args if isinstance(arg, torch.Tensor)}
    return round(sum(storages.values()) / batch)


def _long_launches(mode, n, m, pass_, dtype, batch):
    """The long path's launches for a pass (at sizes where the dispatch would take the short path)."""
    import torch

    from m3net.kernels import dtw_long
    from m3net.kernels.dtw_grid import recorded_launches

    cost = torch.zeros(batch, n, m, dtype=dtype)
    with recorded_launches() as launches:
        _, checkpoints = dtw_long._long_forward(cost, mode, 0.1, checkpoints=pass_ != "fwd")
        if pass_ == "bwd":
            launches.clear()
            dtw_long._long_backward(cost, checkpoints, torch.ones(batch), mode, 0.1, dtype)
    return launches


def variants():
    """(path, mode, pass, n, m, dtype name, similarity) of every row of the table."""
    rows = []
    for n, m in ((8, 8), (16, 16)):
        for mode in MODES:
            for dtype in ("fp32", "bf16") if (n, m, mode) == (8, 8, "soft") else ("fp32",):
                passes = ["fwd"] + (["fwd+length"] if mode != "otam" else []) + ["bwd"]
                passes += ["fwd symmetric", "bwd symmetric"] if mode == "otam" and dtype == "fp32" else []
                rows += [("short", mode, p, n, m, dtype, False) for p in passes]
                # dtw_similarity's passes: the I-M matcher (value + length, backward), the OTAM head (symmetric)
                sim = ["fwd symmetric", "bwd symmetric"] if mode == "otam" else ["fwd+length", "bwd"]
                rows += [("similarity", mode, p, n, m, dtype, True) for p in sim]
                if (n, m) == (16, 16) or dtype == "bf16":  # the long path at the switch point, for SHORT_MAX
                    rows += [("long", mode, p, n, m, dtype, False) for p in ("fwd", "fwd (training)", "bwd")]
    for mode in MODES:  # the long path where it runs
        rows += [("long", mode, p, 32, 32, "fp32", False) for p in ("fwd", "fwd (training)", "bwd")]
    return rows


def _launches(variant, batch):
    import torch

    from m3net.kernels.dtw import launch_configs

    path, mode, pass_, n, m, dtype, similarity = variant
    torch_dtype = getattr(torch, DTYPES[dtype])
    if path == "long" and max(n, m) <= 16:
        return _long_launches(mode, n, m, pass_, torch_dtype, batch)
    return launch_configs(mode, n, m, pass_, torch_dtype, similarity=similarity, batch=batch)


def _measure_variant_launch(variant, index, batch=4096):
    """The row of launch ``index`` of a variant's pass."""
    path, mode, pass_, n, m, dtype, _ = variant
    launch = _launches(variant, batch)[index]
    with tempfile.TemporaryDirectory() as workdir:
        row = {"path": path, "mode": mode, "pass": pass_, "n": n, "m": m, "dtype": DTYPES[dtype],
               **_measure_launch(launch, workdir), "bytes_per_pair": _bytes_per_pair(launch, batch)}
    print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
    return row


def measure(only=None, jobs=1, rows_file=None, batch=4096, compile_missing=True):
    """Compiles every launch of every variant (``jobs`` at a time, the long path's quick ones first); returns
    the table's rows in variants() order (``only``: a predicate on a variant tuple; ``rows_file``: rows kept
    from earlier runs, new ones appended as each launch is measured). ``compile_missing`` False: only the
    rows already in ``rows_file``, and the (variant, launch) pairs missing from it."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("static_sm90 compiles the kernels: run it without TRITON_INTERPRET=1")
    import concurrent.futures
    import multiprocessing

    wanted = [v for v in variants() if only is None or only(*v)]
    counts = {v: len(_launches(v, batch)) for v in wanted}  # recorded, not compiled
    done = {}
    if rows_file and os.path.exists(rows_file):
        with open(rows_file) as fh:
            for text in fh:
                entry = json.loads(text)
                variant = tuple(entry["variant"])
                indices = [entry["launch"]] if "launch" in entry else range(len(entry["rows"]))
                done.update({(variant, k): row for k, row in zip(indices, entry.get("rows") or [entry["row"]])})
    todo = sorted(((v, k) for v in wanted for k in range(counts[v]) if (v, k) not in done),
                  key=lambda task: task[0][0] != "long")
    if not compile_missing:
        return [done[v, k] for v in wanted for k in range(counts[v]) if (v, k) in done], todo
    def keep(variant, k, row):
        done[variant, k] = row
        if rows_file:
            with open(rows_file, "a") as fh:
                fh.write(json.dumps({"variant": variant, "launch": k, "row": row}) + "\n")

    if jobs <= 1:
        for variant, k in todo:
            keep(variant, k, _measure_variant_launch(variant, k, batch))
    else:
        context = multiprocessing.get_context("spawn")  # each worker a fresh interpreter: no shared compile state
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(_measure_variant_launch, v, k, batch): (v, k) for v, k in todo}
            for future in concurrent.futures.as_completed(futures):  # kept as each ends: a stop loses no row
                keep(*futures[future], future.result())
    return [done[v, k] for v in wanted for k in range(counts[v])], []


def _keyed(rows):
    """{(path, mode, pass, N, M, dtype, k): row}, k counting a pass's launches (kernels may be renamed)."""
    keyed, seen = {}, {}
    for row in rows:
        variant = (row["path"], row["mode"], row["pass"], row["n"], row["m"], row["dtype"])
        seen[variant] = seen.get(variant, -1) + 1
        keyed[variant + (seen[variant],)] = row
    return keyed


def markdown(result):
    lines = [
        "# DTW kernels: static cost on sm_90 (no GPU)",
        "",
        f"Generated by `{result['command']}` with triton {result['triton']} at {result['git_sha']} on "
        f"{result['date']}.",
        "Each row is one launch of the pass, compiled as the launcher issues it (dtw.launch_configs, Triton's own",
        "argument specialisation). SASS/pair: instructions one thread executes (loop bodies x trip counts;",
        "branches counted as taken-through, so an upper bound) x threads per program / pairs per program.",
        "regs, stack: from the cubin (`cuobjdump -res-usage`); LDL/STL, LDG, BAR: local (spill), global load and",
        "barrier instructions in the SASS (static count, not executed).",
        "shared: the launch's dynamic shared memory plus the cubin's static. bytes/pair: DRAM traffic of the",
        "pass by construction (every tensor it reads or writes, once). Timings need a GPU: `m3net bench-dtw`.",
        f"compile: seconds of triton.compile from source for sm_90 (an empty cache), {result.get('jobs', 1)} at a "
        f"time on {result.get('cpus', '?')} cores, load average {result.get('load_before', '?')} before and "
        f"{result.get('load_after', '?')} after ({result.get('load_note', 'other work on the machine included')}).",
        "",
        "| path | kernel | mode | pass | N×M | dtype | warps | SASS/pair | regs | stack (B) | LDL/STL | LDG | BAR "
        "| shared (B) | bytes/pair | compile (s) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['path']} | `{r['kernel']}` | {r['mode']} | {r['pass']} | {r['n']}×{r['m']} | {r['dtype']} | "
            f"{r['num_warps']} | {r['sass_per_pair']:,} | {r['registers']} | {r['spills']:,} | "
            f"{r['spill_instructions']} | {r.get('global_loads', '')} | {r.get('barriers', '')} | "
            f"{r['shared_bytes']:,} | {r['bytes_per_pair']:,} | {r.get('compile_s', '')} |"
        )
    before = result.get("before")
    if before:
        old = _keyed(before["rows"])
        lines += [
            "",
            f"## Before and after (before: the kernels at {before['git_sha']} with triton {before.get('triton')}, "
            f"measured the same way on {before['date']})",
            "",
            "| path | kernel | mode | pass | N×M | dtype | SASS/pair | regs | stack (B) | bytes/pair |",
            "|---|---|---|---|---|---|---:|---:|---:|---:|",
        ]
        for key, r in _keyed(result["rows"]).items():
            o = old.get(key)
            if o is None:
                continue
            kernel = r["kernel"] if o["kernel"] == r["kernel"] else f"{o['kernel']} → {r['kernel']}"
            lines.append(
                f"| {r['path']} | `{kernel}` | {r['mode']} | {r['pass']} | {r['n']}×{r['m']} | {r['dtype']} | "
                f"{o['sass_per_pair']:,} → {r['sass_per_pair']:,} | {o['registers']} → {r['registers']} | "
                f"{o['spills']:,} → {r['spills']:,} | {o['bytes_per_pair']:,} → {r['bytes_per_pair']:,} |"
            )
    if result.get("missing"):
        lines += ["", "Not in the table: these launches' compiles did not end within the measuring runs "
                  f"({result.get('missing_note', 'see the notes')}):", *[f"- {m}" for m in result["missing"]]]
    lines += ["", "Notes", *result.get("notes", [])]
    return "\n".join(lines) + "\n"


NOTES = [
    "- Target (docs/design.md): soft forward 8×8 fp32 <= 1,500 SASS/pair without spills; backward traffic",
    "  <= 800 B/pair.",
    "- short: the register-resident kernels (N, M <= SHORT_MAX), one pair per thread, each thread reading its",
    "  pair's rows as 16-byte vectors where they are contiguous and aligned (LDG counts load instructions:",
    "  16 for an 8×8 fp32 tile), no shared memory, no barrier. similarity: the same kernels on dtw_similarity's",
    "  strided (Q, S, N, M) view of the (Q·N, S·M) frame matmul (S = 5), 1 - s formed in the load: the passes",
    "  the I-M matcher (fwd+length, bwd) and the OTAM head (fwd / bwd symmetric) run. long: the anti-diagonal",
    "  wavefront kernels (lanes of 8 columns), at 16×16 (where the dispatch takes the short path: the",
    "  comparison behind SHORT_MAX), at 8×8 bf16 and at 32×32, where they run.",
    "- fwd+length: value + hard path length (soft mode runs the hard DP alongside; on the long path a hard",
    "  forward with checkpoints and a backward follow). fwd / bwd symmetric: dtw(C) + dtw(Cᵀ) from one read of",
    "  C; past SYMMETRIC_BWD_MAX the backward is one launch per direction. fwd (training): the forward on an",
    "  input that needs a gradient; the long path then stores a checkpoint row every SEGMENT_ROWS steps, from",
    "  which its backward recomputes R (it reads the cost again, as the short backward does).",
    "- bytes/pair of a backward counts dvalue once per batch where autograd passes an expanded tensor (4 B",
    "  less per pair than the floor's accounting).",
    "- Every launch is a 1-warp program and the batch is not specialised: the rows hold for any batch.",
    "- The before block (if any) was measured the same way (the launches recorded at 4,096 pairs, Triton's",
    "  own specialisation, the cubin's resources) on the kernels as they were at its commit, with its Triton",
    "  version: a row's change is the kernel's and the compiler's together.",
]


def write(out_json, command, before_json=None, jobs=1, rows_file=None, load_note=None, compile_missing=True,
          missing_note=None):
    import triton

    from m3net.runtime import git_sha

    before = None
    source = before_json or (out_json if os.path.exists(out_json) else None)
    if source:
        with open(source) as fh:
            previous = json.load(fh)
        before = previous.get("before") if before_json is None else {
            key: previous.get(key) for key in ("git_sha", "date", "triton", "rows")}
    load_before = round(os.getloadavg()[0], 2)
    rows, missing = measure(jobs=jobs, rows_file=rows_file, compile_missing=compile_missing)
    result = {
        "target": TARGET, "triton": triton.__version__, "git_sha": git_sha(),
        "date": datetime.date.today().isoformat(), "command": command, "notes": NOTES, "rows": rows,
        "jobs": jobs, "cpus": os.cpu_count(), "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
    }
    if load_note:
        result["load_note"] = load_note
    if missing:  # launches whose compile never ended within a measuring run: named, not silently dropped
        result["missing_note"] = missing_note or "each run stopped first"
        result["missing"] = [f"{v[0]} {v[1]} {v[2]} {v[3]}x{v[4]} {DTYPES[v[5]]}, launch {k}" for v, k in missing]
    if before:
        result["before"] = before
    tmp = out_json + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=1)
    os.replace(tmp, out_json)
    md_path = os.path.splitext(out_json)[0] + ".md"
    with open(md_path + ".tmp", "w") as fh:
        fh.write(markdown(result))
    os.replace(md_path + ".tmp", md_path)
    return out_json, md_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/dtw_static_sm90.json")
    parser.add_argument("--before", help="A previous table whose rows become the before block.")
    parser.add_argument("--markdown-only", action="store_true", help="Rewrite the .md from the existing --out JSON.")
    parser.add_argument("--jobs", type=int, default=1, help="Variants compiled at a time (processes).")
    parser.add_argument("--rows", help="JSON-lines file of measured variants: kept, reused, appended to.")
    parser.add_argument("--load-note", help="How the load was held during the compiles (written in the table).")
    parser.add_argument("--no-compile", action="store_true", help="Write the table from --rows alone, naming the "
                        "launches missing from it.")
    parser.add_argument("--missing-note", help="Why launches are missing (written in the table).")
    args = parser.parse_args()
    if args.markdown_only:
        with open(args.out) as fh:
            result = json.load(fh)
        md_path = os.path.splitext(args.out)[0] + ".md"
        with open(md_path, "w") as fh:
            fh.write(markdown(result))
        print("wrote", md_path)
        return
    for path in write(args.out, "python tools/static_sm90.py --out " + args.out, args.before, args.jobs, args.rows,
                      args.load_note, not args.no_compile, args.missing_note):
        print("wrote", path)


if __name__ == "__main__":
    main()
