"""The steps of a GPU session (``benchmarks/gpu_session.sh`` runs each one as its own process).

    python tools/gpu_session.py STEP --jsonl OUT/bench.jsonl   # run STEP, append its one JSON line
    python tools/gpu_session.py summary OUT/*.jsonl             # the short table printed last
    python tools/gpu_session.py unpack OUT/bench.jsonl          # GPU records -> benchmarks/bench_*.{json,csv}
    python tools/gpu_session.py cache DIR [--jobs N]             # warm's variants compiled for sm_90 into DIR
    python tools/gpu_session.py cache DIR --relocate              # DIR's group files pointed at DIR (the device)

Run from the repository root (the tests steps collect tests/ from there). The steps and their sizes are in
tools/gpu_session_steps.py, warm and the carried Triton cache in tools/gpu_session_warm.py; this file runs
them and reads their lines. A repository tool, not part of
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
import datetime
import json
import os
import sys
import time
import traceback

from gpu_session_steps import (
    FAIL_ENV,
    dtw_step,
    head_step,
    quick,
    sizes,
    smoke,
    tests_gpu,
    tests_gpu_long,
    tests_kernel,
    verify,
)
from gpu_session_warm import build_cache, relocate_cache, tests_warm_long, warm

# --------------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------------
STEPS = {  # name -> (stage, function of Sizes -> (result, records))
    "smoke": ("bench", smoke),
    "warm": ("bench", warm),
    "dtw-floor": ("bench", dtw_step("dtw-floor")),
    "dtw-competitors": ("bench", dtw_step("dtw-competitors")),
    "dtw-matchers": ("bench", dtw_step("dtw-matchers")),
    "dtw-long": ("bench", dtw_step("dtw-long")),
    "dtw-matchers-long": ("bench", dtw_step("dtw-matchers-long")),
    "verify": ("bench", verify),
    "bench-train": ("bench", head_step("train")),
    "bench-finetune": ("bench", head_step("finetune")),
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
