#!/usr/bin/env bash
# The GPU measurements and GPU tests in one device call that fits the lease (issue #23).
#
#   OUT=dir bash benchmarks/gpu_session.sh bench   # smoke, warm, the DTW figures, bench-train, bench-finetune
#   OUT=dir bash benchmarks/gpu_session.sh tests   # the kernel tests and the GPU-marked tests
#   OUT=dir bash benchmarks/gpu_session.sh all     # bench, then tests
#   QUICK=1 OUT=dir bash benchmarks/gpu_session.sh all   # the rehearsal: every step at tiny sizes, on a CPU
#
# Each step is its own process (python -m m3net.bench.session STEP; the steps and their sizes are
# documented there) and appends one JSON line to $OUT/<stage>.jsonl as soon as it ends; everything
# printed goes to $OUT/session.log as it is printed. A step that fails or outlives its limit is
# logged (a "failed" line if it died without writing its own) and the next step runs: no `set -e`.
# Whatever finished is in $OUT when the session is killed. $OUT ends with 3 files (the device
# returns at most 8): session.log, bench.jsonl, tests.jsonl.
#
# Bench steps, in priority order:
#   smoke            versions, GPU, measured copy bandwidth, one compile timed, soft 8x8 fwd+bwd vs the fp64 reference
#   warm             every kernel variant of the steps below compiled once, in up to 16 parallel processes
#   dtw-floor        % of the bandwidth floor at 1M pairs of 8x8 fp32: soft, hard, otam x fwd, bwd, fwd+bwd
#   dtw-competitors  x eager and x pysdtw's forward kernel at 4k and 32k pairs of 8x8 (+ the torch reference)
#   dtw-matchers     the I-M matcher and the OTAM head end to end at T = 8 and 16 (32k pairs, d = 2048)
#   dtw-long         the long path: soft fwd at T = 16 (short), 17, 32; fwd+bwd at 17, 32; 1M pairs
#   bench-train      m3net, m3net proj_dim=128, trx on generated features (no decoder)
#   bench-finetune   ResNet-50 + m3net head on random frames, 1 and 5 shot, checkpointing off/on (no decoder)
# Tests steps: tests-warm-long (background: compiles the 16x16 variants of the T = 16 GPU test in
# parallel while the next two run), tests-kernel (tests/test_dtw*.py, not slow, xdist -n 8),
# tests-gpu (-m gpu, T <= 8), tests-gpu-long (-m gpu, T = 16). Only the GPU-marked files and the
# kernel test files are collected: no decoder is imported (make-synthetic and bench-extract need
# PyAV, which the device image lacks, and are not in this script).
#
# Time estimate (ESTIMATE.md-free: the numbers behind it are here). Compiles dominate: sm_90
# compiles timed with Triton 3.6 (the device's) on this project's 2-core CPU under load ~3:
# 8x8 short fwd 1-3 s, 8x8 bwd 6-8 s, 8x8 symmetric similarity bwd 23 s, 16x16 fwd 30-50 s,
# 16x16 bwd 205 s. Until the launcher pins num_warps per shape, each short variant compiles once
# per batch bucket (4k pairs: 1 warp, 32k: 2, 1M: 4).
#   smoke            ~30 s   (2 compiles 8x8, a 1 GiB copy, the fp64 reference on 1000 pairs)
#   warm             ~75 s   (~40 variants: 8x8 fwd/bwd x 3 modes x 3 buckets, the matchers' similarity
#                             variants at T = 8 and 16, 16x16 fwd, long fwd/bwd; 16 processes: the
#                             longest chain is a 16x16 fwd+length compile, ~50 s, plus start-up)
#   dtw-floor        ~25 s   (9 timings x ~2 s; do_bench 25 ms warm-up + 100 ms repeats each, 1M pairs)
#   dtw-competitors  ~40 s   (6 tables x 2 sizes x 4 implementations; the eager loop's graphs)
#   dtw-matchers     ~20 s   dtw-long ~35 s (the reference and eager loop at T = 32)
#   bench-train      ~30 s   bench-finetune ~60 s (4 settings x 7 steps of 400 frames at 224 + cuDNN set-up)
#   bench stage      ~5.3 min
#   tests stage      ~3.5 min: tests-warm-long ~3.5 min wall (12 units on 12 cores; the chain is a
#                    16x16 fwd + bwd compile, ~250 s) overlaps tests-kernel (~100 variants of small
#                    shapes on 8 xdist workers, ~90 s) and tests-gpu (~40 s incl. one Inductor compile);
#                    tests-gpu-long ~20 s once the variants are cached.
#   all              ~8 to 9 min: over 8 minutes only if the device CPU compiles no faster than this
#                    one; `bench` alone (~5.3 min) leaves room for a second call with `tests`.
# The measured times of every step come back in the JSON lines ("seconds") and the warm units' in
# warm's result: correct this estimate from them after the first session.
#
# The device call (one `run`, command, carry and timeout as below), after fetching pysdtw's wheel once
# here into the ignored folder .whl/ (7 KB; the device has numba, which its kernel needs):
#   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: -d .whl pysdtw==0.0.5
#   run(carry=[".whl"], timeout_s=590, command=
#     "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site
#      .whl/*.whl && export PYTHONPATH=/tmp/site; M3NET_GIT_SHA=<the commit sent> bash benchmarks/gpu_session.sh all")
# (the tree sent to the device has no .git: M3NET_GIT_SHA stamps the records with the commit sent).
# Then, here, with the returned files under FILES:
#   python -m m3net.bench.session summary FILES/*.jsonl
#   python -m m3net.bench.session unpack FILES/bench.jsonl && python -m m3net.readme_figures
set -u -o pipefail
stage=${1:?usage: gpu_session.sh bench|tests|all}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
log="$out/session.log"
quick=$([ "${QUICK:-0}" = 1 ] && echo true || echo false)
if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    export TRITON_INTERPRET=1  # no GPU: the Triton kernels run interpreted (tiny sizes with QUICK=1)
fi
echo "gpu_session $stage: OUT=$out QUICK=${QUICK:-0} TRITON_INTERPRET=${TRITON_INTERPRET:-0} $(date -u +%FT%TZ)" | tee -a "$log"

step() {  # step NAME LIMIT_S STAGE: one process, one JSON line in $out/STAGE.jsonl whatever happens
    local name=$1 limit=$2 jsonl="$out/$3.jsonl" before after rc start=$SECONDS
    before=$(grep -c "\"step\": \"$name\"" "$jsonl" 2>/dev/null)
    echo "== $name (limit ${limit} s) $(date -u +%T)" | tee -a "$log"
    timeout -k 10 "$limit" "$py" -m m3net.bench.session "$name" --jsonl "$jsonl" 2>&1 \
        | sed -u "s/^/[$name] /" | tee -a "$log"
    rc=${PIPESTATUS[0]}
    after=$(grep -c "\"step\": \"$name\"" "$jsonl" 2>/dev/null)
    if [ "${after:-0}" = "${before:-0}" ]; then  # killed (124: over its limit) or crashed before its line
        printf '{"step": "%s", "stage": "%s", "status": "failed", "rc": %d, "seconds": %d, "quick": %s, "error": "%s"}\n' \
            "$name" "$3" "$rc" $((SECONDS - start)) "$quick" \
            "exit status $rc without a result line$([ "$rc" = 124 ] && echo ": over its ${limit} s limit")" >>"$jsonl"
        echo "== $name: failed (exit status $rc)" | tee -a "$log"
    fi
}

bench() {
    # Without a GPU the kernels are interpreted; every DTW call takes the Triton path, as on the device.
    [ "${TRITON_INTERPRET:-0}" = 1 ] && local -x M3NET_DTW_BACKEND=triton
    step smoke 180 bench
    step warm 420 bench
    step dtw-floor 240 bench
    step dtw-competitors 300 bench
    step dtw-matchers 240 bench
    step dtw-long 300 bench
    step bench-train 300 bench
    step bench-finetune 360 bench
}

tests() {
    step tests-warm-long 600 tests &
    local warm_pid=$!
    step tests-kernel 600 tests
    step tests-gpu 300 tests
    wait "$warm_pid"
    step tests-gpu-long 300 tests
}

case "$stage" in
bench) bench ;;
tests) tests ;;
all) bench; tests ;;
*) echo "unknown stage $stage: expected bench, tests or all" >&2; exit 2 ;;
esac
"$py" -m m3net.bench.session summary "$out"/*.jsonl 2>&1 | tee -a "$log"
