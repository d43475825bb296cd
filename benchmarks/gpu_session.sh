#!/usr/bin/env bash
# The GPU measurements and GPU tests in one device call that fits the lease (issues #23, #31).
#
#   OUT=dir bash benchmarks/gpu_session.sh all          # correctness, then timings, then tests (BUDGET_S, below)
#   OUT=dir bash benchmarks/gpu_session.sh bench        # smoke, warm, verify, the DTW figures, bench-train, bench-finetune
#   OUT=dir bash benchmarks/gpu_session.sh tests        # the GPU-marked tests at T <= 8 and the kernel tests
#   OUT=dir bash benchmarks/gpu_session.sh tests-long   # the T = 16 GPU test and the T = 16 matchers (compile-bound)
#   OUT=dir bash benchmarks/gpu_session.sh steps dtw-floor tests-gpu   # a rerun of chosen steps
#   QUICK=1 OUT=dir bash benchmarks/gpu_session.sh all  # the rehearsal: every step at tiny sizes, on a CPU
#   PYTHON=V/bin/python QUICK=1 OUT=dir bash benchmarks/gpu_session.sh all  # the rehearsal in a venv V pinned
#       like the device: python3.12 -m venv V && V/bin/pip install torch==2.11.0 triton==3.6.0 "numpy<2.4" h5py
#       click tqdm matplotlib pytest pytest-xdist (numpy < 2.4: Triton 3.6's interpreter int()s 1-element arrays)
#
# Each step is its own process (python tools/gpu_session.py STEP; the steps and their sizes are
# documented in tools/gpu_session_steps.py) and appends one JSON line to $OUT/bench.jsonl or $OUT/tests.jsonl as soon as it
# ends; everything printed goes to $OUT/session.log as it is printed. A step that fails or outlives
# its limit is logged (a "failed" line if it died without writing its own) and the next step runs:
# no `set -e`. Whatever finished is in $OUT when the session is killed. $OUT holds 3 files (the
# device returns at most 8). Without a GPU the kernels run interpreted (TRITON_INTERPRET=1).
#
# Budget: BUDGET_S (default 540, under the device's 10-minute call with the machine's start before it)
# is the whole session's. Each step runs under the smaller of its own limit and the time left less a
# 20 s margin (timeout's 10 s from TERM to KILL, the summary); a step left less than 15 s is not started
# and gets a "skipped" line. So the script ends by itself within BUDGET_S, every step has a line, and the
# summary prints last (an EXIT trap: also after a killed step or a TERM). TRITON_CACHE_DIR, if set, is
# Triton's cache as usual (a cache compiled elsewhere for the device's versions spares the compiles it holds).
#
# Steps of `all`, in this order (correctness first, so a call cut short has still checked the kernels):
#   smoke            versions, GPU, measured copy bandwidth, one compile timed, soft 8x8 fwd+bwd vs the fp64 reference
#   warm             every kernel variant that verify, the DTW timings and tests-gpu launch, recorded from their own
#                    calls and compiled once each (JITFunction.warmup, up to 16 processes), then one episode of
#                    bench-train and bench-finetune
#   verify           values, gradients and path lengths vs the float64 reference: soft, hard, otam 8x8, with length,
#                    symmetric, the similarity paths (with length, symmetric), the long path at 32x32 (all modes,
#                    fwd and bwd), one launch of pysdtw's kernel where it is installed
#   tests-gpu        the GPU-marked tests at T <= 8
#   dtw-floor        % of the bandwidth floor at 1M pairs of 8x8 fp32: soft, hard, otam x fwd, bwd, fwd+bwd
#                    (floors 260 / 516 / 776 B per pair: m3net.bench.dtw.floor_bytes_per_pair)
#   dtw-competitors  x eager and x pysdtw's forward kernel at 4k and 32k pairs of 8x8 (+ the torch reference)
#   dtw-matchers     the I-M matcher and the OTAM head end to end at T = 8 (32k pairs, d = 2048)
#   dtw-long         the long path: soft fwd at T = 16 (short), 17, 32; fwd+bwd at 17, 32; 1M pairs (the torch
#                    reference and the eager loop on 64k of them)
#   tests-kernel     tests/test_dtw*.py, not slow, xdist on every core
#   bench-train      m3net, m3net proj_dim=128, trx on generated features (no decoder)
#   bench-finetune   ResNet-50 + m3net head on random frames, 1 and 5 shot, checkpointing off/on (no decoder)
# tests-long: tests-warm-long (the T = 16 GPU test's and dtw-matchers-long's variants, one process each),
# tests-gpu-long (-m gpu, T = 16), dtw-matchers-long (the matchers at T = 16). Only the GPU-marked files
# and the kernel test files are collected: no decoder is imported. make-synthetic and bench-extract
# need PyAV, which the device image lacks: they are not in this script.
#
# Time estimate, from compile counts and sizes. Compiles dominate, and Triton's make_ttgir pass is
# single-threaded, so 16 cores shorten the sum, not the longest compile. sm_90 compile times with
# Triton 3.6 (the device's), each timed by tools/static_sm90.py (benchmarks/dtw_static_sm90.md, column
# "compile"): on this project's 2-core CPU, 2 compiles at a time, load average 2 to 4.4 with the
# Table 1 job paused (upper bounds: the same variant took 132 s and 281 s in two windows):
#   8x8 short fwd 1-6 s (fwd symmetric 11-12 s), 8x8 bwd 8-18 s, 8x8 OTAM symmetric bwd 125-128 s;
#   long path (T > 16): fwd under 1 s, bwd (recomputing from checkpoints) 8-11 s;
#   16x16 short fwd 6-122 s (fwd+length 47-281 s), 16x16 bwd 209-683 s (spilling).
# warm compiles each variant once, in parallel: its longest chain is one 8x8 OTAM symmetric backward.
#   smoke            ~30 s   2 compiles (~20 s), a 1 GiB copy, the fp64 reference on 1000 pairs, process start
#   warm             ~150 s  33 variants, 864 s of compiling here (`cache` below), on 16 processes the longest
#                            (an 8x8 OTAM symmetric backward, 138-165 s here) + start-up,
#                            and one episode of each head step alongside; ~30 s where a carried cache hits
#   verify           ~20 s   14 checks at 1000 pairs (cached kernels), the fp64 reference at 32x32 the slowest
#   tests-gpu        ~60 s   variants warmed; one Inductor compile; two 8.6 GB batch-innermost tests
#   dtw-floor        ~20 s   9 timings (do_bench: 25 ms warm-up + 100 ms of repeats) at 1M pairs
#   dtw-competitors  ~40 s   48 timings at 4k/32k pairs incl. the eager loop's graphs, pysdtw's numba JIT
#   dtw-matchers     ~15 s   dtw-long ~30 s (the reference and eager loop at 64k pairs)
#   tests-kernel     ~3 min  ~350 kernel specializations, 2-3x Triton 3.9's ~1,050 s of compiling on 16 workers
#   bench-train      ~30 s   bench-finetune ~50 s (4 settings x 7 steps of 400 frames at 224)
#   all              ~10.5 min without a cache: with BUDGET_S=540 everything up to dtw-long ends (~6 min),
#                    tests-kernel runs on what is left (about 2.5 min) and the heads' steps are skipped
#   tests-long       ~12 min at 16 processes: 16x16 backward compiles (209-683 s each) in parallel, more
#                    than one call's budget: `steps tests-warm-long` in one call fills the cache dir for
#                    `tests-long` in the next only where the machine is kept (or carry a cache, below)
# So one call runs `all` (its budget cuts what does not fit); a second runs `steps tests-kernel
# bench-train bench-finetune`. Every step's measured time comes back in its JSON line ("seconds"), and
# each warm unit's in warm's result: correct this estimate from them after the first session.
#
# The device call, after fetching pysdtw's wheel once here into the ignored folder .whl/ (7 KB; its
# kernel needs numba, which the device has) and, optionally, compiling warm's variants here into a
# Triton cache for the device (33 variants, 864 s of compiling: 8.5 min on 2 processes here; the pinned
# venv's Triton 3.6 and its bundled ptxas, as on the device; pruned to the metadata and cubins, 3.9 MB;
# built again in a moved and relocated copy, all 33 load from it in 1 s):
#   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: -d .whl pysdtw==0.0.5
#   V/bin/python tools/gpu_session.py cache .triton-cache --jobs 2   # optional; .triton-cache/ is ignored
#   run(carry=[".whl", ".triton-cache"], timeout_s=590, command="python3 -m pip install -q --no-index --no-deps
#       --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
#       TRITON_CACHE_DIR=$PWD/.triton-cache M3NET_GIT_SHA=<the commit sent> bash benchmarks/gpu_session.sh all")
# (one line in the call; the tree sent to the device has no .git: M3NET_GIT_SHA stamps the records
# with the commit sent; the script points the carried cache's group files at where it lies, and a
# variant whose key differs there simply compiles). For the T = 16 test: the same with `tests-long`.
# Then, here, with the returned files under FILES:
#   python tools/gpu_session.py summary FILES/*.jsonl
#   python tools/gpu_session.py unpack FILES/bench.jsonl && python tools/docs_sections.py
set -u -o pipefail
stage=${1:?usage: gpu_session.sh bench|tests|tests-long|all|steps NAME...}
cd "$(dirname "$0")/.."
# m3net from this checkout (the device machine gets a copy of the tree and no install); the steps run as
# tools/gpu_session.py, whose own folder is then first on sys.path.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
log="$out/session.log"
quick=$([ "${QUICK:-0}" = 1 ] && echo true || echo false)
budget=${BUDGET_S:-540}
# Kept free at the end: timeout's 10 s between TERM and KILL, the failed line and the summary.
margin=20
min_step=15  # a step given less than this would only start, compile and be killed: skipped instead
summary() { "$py" tools/gpu_session.py summary "$out"/*.jsonl 2>&1 | tee -a "$log"; }
trap summary EXIT  # also when a step is killed or the script is stopped
trap 'exit 143' TERM INT
if [ -n "${TRITON_CACHE_DIR:-}" ] && [ -d "$TRITON_CACHE_DIR" ]; then
    "$py" tools/gpu_session.py cache "$TRITON_CACHE_DIR" --relocate  # a cache built elsewhere: its paths, here
fi
if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    export TRITON_INTERPRET=1  # no GPU: the Triton kernels run interpreted (tiny sizes with QUICK=1)
fi
echo "gpu_session $stage: OUT=$out QUICK=${QUICK:-0} BUDGET_S=$budget TRITON_INTERPRET=${TRITON_INTERPRET:-0}" \
    "TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-default} $(date -u +%FT%TZ)" | tee -a "$log"

line() {  # line STAGE NAME STATUS RC SECONDS ERROR: the script's own JSON line for a step
    printf '{"step": "%s", "stage": "%s", "status": "%s", "rc": %d, "seconds": %d, "quick": %s, "error": "%s"}\n' \
        "$2" "$1" "$3" "$4" "$5" "$quick" "$6" >>"$out/$1.jsonl"
}

step() {  # step NAME LIMIT_S STAGE: one process, one JSON line in $out/STAGE.jsonl whatever happens
    local name=$1 jsonl="$out/$3.jsonl" before after rc start=$SECONDS
    # The step's limit: its own, or what is left of the budget less the margin, whichever is smaller.
    local left=$((budget - SECONDS - margin)) limit=$2
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt "$min_step" ]; then
        line "$3" "$name" skipped 0 0 "not started: ${left} s left of BUDGET_S=${budget} after the ${margin} s margin"
        echo "== $name: skipped (${left} s left of the budget)" | tee -a "$log"
        return
    fi
    # Without a GPU the kernels are interpreted; every bench DTW call takes the Triton path, as on the device.
    [ "$3" = bench ] && [ "${TRITON_INTERPRET:-0}" = 1 ] && local -x M3NET_DTW_BACKEND=triton
    before=$(grep -c "\"step\": \"$name\"" "$jsonl" 2>/dev/null)
    echo "== $name (limit ${limit} s, ${SECONDS} s into the session) $(date -u +%T)" | tee -a "$log"
    timeout -k 10 "$limit" "$py" tools/gpu_session.py "$name" --jsonl "$jsonl" 2>&1 \
        | sed -u "s/^/[$name] /" | tee -a "$log"
    rc=${PIPESTATUS[0]}
    after=$(grep -c "\"step\": \"$name\"" "$jsonl" 2>/dev/null)
    if [ "${after:-0}" = "${before:-0}" ]; then  # killed (124: over its limit) or crashed before its line
        line "$3" "$name" failed "$rc" $((SECONDS - start)) \
            "exit status $rc without a result line$([ "$rc" = 124 ] && echo ": over its ${limit} s limit")"
        echo "== $name: failed (exit status $rc)" | tee -a "$log"
    fi
}

# Correctness first: a call cut short by the budget has still checked the kernels on the device.
correctness() {
    step smoke 120 bench
    step warm 300 bench
    step verify 120 bench
}

timings() {
    step dtw-floor 120 bench
    step dtw-competitors 180 bench
    step dtw-matchers 120 bench
    step dtw-long 180 bench
}

heads() {
    step bench-train 180 bench
    step bench-finetune 240 bench
}

case "$stage" in
bench) correctness; timings; heads ;;
tests) step tests-gpu 240 tests; step tests-kernel 300 tests ;;
tests-long) step tests-warm-long 420 tests; step tests-gpu-long 240 tests; step dtw-matchers-long 120 bench ;;
all) correctness; step tests-gpu 240 tests; timings; step tests-kernel 300 tests; heads ;;
steps)  # a rerun of chosen steps: gpu_session.sh steps dtw-floor tests-gpu
    shift
    for name in "$@"; do
        case "$name" in tests-*) step "$name" 420 tests ;; *) step "$name" 300 bench ;; esac
    done ;;
*) echo "unknown stage $stage: expected bench, tests, tests-long, all or steps NAME..." >&2; trap - EXIT; exit 2 ;;
esac
