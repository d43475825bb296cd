#!/usr/bin/env bash
# The GPU measurements the issues ask for, in as few device calls as possible.
#
#   bash benchmarks/gpu_session.sh tests   # the test suite on the GPU (Triton compiled, not interpreted)
#   bash benchmarks/gpu_session.sh bench   # bench-dtw --sweep (soft/hard/otam, fwd and fwd+bwd, 4k/32k/1M pairs
#                                          # of TxT, T = 8..64), bench-dtw --matchers, bench-dtw --static,
#                                          # bench-extract, bench-train, bench-finetune
#
# Results (CSV + JSON with device, versions, git SHA) go to benchmarks/ and, on the device machine,
# into one archive $OUT/gpu-benchmarks.tgz (the device returns at most 8 files). QUICK=1 shrinks every
# size so the script itself can be checked on a CPU in a minute; those numbers mean nothing.
#
# The device image has torch, triton, h5py, click, tqdm, matplotlib, tensorboard but no decoder:
# carry decord (and tslearn, scikit-video, pysdtw for the tests/benchmarks that use them) as wheels,
# see the device README, and start the device command with its `pip install --target` line.
set -euo pipefail
stage=${1:?usage: gpu_session.sh tests|bench}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
m3net() { python3 -m m3net "$@"; }
quick=${QUICK:-0}
work=$(mktemp -d)
dest=benchmarks
if [ "$quick" = 1 ]; then dest="$work/benchmarks"; export TRITON_INTERPRET=${TRITON_INTERPRET:-1}; fi

case "$stage" in
tests)
    python3 -m pytest -q -x tests 2>&1 | tee "$work/tests.log"
    ;;
bench)
    if [ "$quick" = 1 ]; then pairs=512 size=(--clips-per-class 2 --frames 16 --size 64); extract_clips=8
         train=(--channels 64 --train-episodes 2 --eval-episodes 3); finetune=(--shot 1 --queries 1 --frames 2 --crop 32 --steps 1 --warmup 1)
    else pairs=sweep size=(); extract_clips=0; train=(); finetune=(); fi
    for mode in soft hard otam; do
        for pass in fwd fwd+bwd; do
            if [ "$pairs" = sweep ]; then sizes=(--sweep); else sizes=(--pairs "$pairs"); fi
            m3net bench-dtw --mode "$mode" --pass "$pass" "${sizes[@]}" --out-dir "$dest"
        done
    done
    m3net bench-dtw --mode soft --dtype bfloat16 "${sizes[@]}" --out-dir "$dest"  # pysdtw: a skipped row
    m3net bench-dtw --matchers "${sizes[@]}" --out-dir "$dest"  # I-M and OTAM end to end vs one plain forward
    m3net bench-dtw --static --out-dir "$dest"
    m3net make-synthetic --out "$work/synthetic" "${size[@]}"
    m3net bench-extract --root "$work/synthetic" --clips "$extract_clips" --workers 8 --batch-size 16 --out-dir "$dest"
    m3net bench-train --head m3net "${train[@]}" --out-dir "$dest"
    m3net bench-train --head m3net --head-opt proj_dim=128 "${train[@]}" --out-dir "$dest"
    m3net bench-train --head trx "${train[@]}" --out-dir "$dest"
    m3net bench-finetune "${finetune[@]}" --out-dir "$dest"
    ;;
*)
    echo "unknown stage $stage: expected tests or bench" >&2
    exit 2
    ;;
esac
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu-benchmarks.tgz" "$dest" $(ls "$work"/*.log 2>/dev/null)
fi
