#!/usr/bin/env bash
# Worker-count scaling: builds the release worker and bench binaries, then
# runs the same workloads (N 10-second MP3 clips and ../shared/data/xc3)
# end to end with each worker count, against the in-process rate measured
# in the same run. Writes report.md, results.json and chart.png into
# bench/results/latest (or the folder given with --out).
#
#   scripts/scale.sh                       # 1, 2 and 4 workers, 200 clips
#   scripts/scale.sh --workers 1,2,3,6 --clips 400
#   scripts/scale.sh --threads 0           # each worker gets cores / workers
#
# Each worker count runs twice: streaming (the producer ingests while the
# workers consume) and backlog (everything ingested first, then the workers
# timed alone on it). By default every worker runs one CPU thread, so that the scaling
# efficiency is throughput(N) / (N x throughput(1)) with one worker as one
# core's worth.
#
# PostgreSQL and RabbitMQ run locally, set up as by scripts/stack.sh (see
# scripts/services.sh); the object store is an in-process S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=1,2,4
clips=200
threads=1
feed=streaming,backlog
out=bench/results/latest
shared=${BIRDSONG_SHARED_DIR:-../shared}
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=$2; shift 2 ;;
        --clips) clips=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --feed) feed=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--workers 1,2,4] [--clips N] [--threads T] [--feed streaming,backlog] [--out DIR]" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
cargo build --release --locked --bins
thread_arg=()
[ "$threads" = 0 ] || thread_arg=(--threads "$threads")
"$target/release/birdsong-bench" pipeline --shared "$shared" --workers "$workers" \
    --clips "$clips" --feed "$feed" "${thread_arg[@]}" --out "$out"
