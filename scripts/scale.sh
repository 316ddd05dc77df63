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
#   scripts/scale.sh --cpu-quota 0.1 --workers 1,2,4,8,16 --clips 2000
#   scripts/scale.sh --cpu-quota 0.1 --netns --delay 2ms --workers 1,4,8
#
# Options:
#   --workers LIST     worker counts to run (default 1,2,4)
#   --clips N          10-second clips in the clip workload (default 200)
#   --corpus LIST      workloads: clips, xc3 (default both)
#   --xc3-copies K     K distinct copies of each xc3 recording (default 1)
#   --threads T        CPU threads per worker; 0: cores / workers (default 1)
#   --feed LIST        streaming, backlog (default both)
#   --prefetch LIST    BIRDSONG_WORKER_PREFETCH values to compare (e.g. 2,4,16):
#                      every worker count runs once per value, each against
#                      one worker at the same prefetch (default: the workers'
#                      default)
#   --out DIR          where report.md, results.json, chart.png go
#   --cpu-quota CORES  simulated hosts: each worker process capped at CORES
#                      of a core by a cgroup of its own (v1 cpu.cfs_quota_us,
#                      or v2 cpu.max); the services are not capped. Root.
#   --netns            simulated hosts: each worker in its own network
#                      namespace, joined to the host by a veth pair on
#                      10.203.<i>.0/30 and reaching the services through a
#                      forwarder in the bench. Root.
#   --delay D          with --netns: one-way delay on every worker's link in
#                      each direction (e.g. 2ms; a round trip takes 2 x D),
#                      by tc netem where the kernel has it, else the forwarder
#
# Each worker count runs twice: streaming (the producer ingests while the
# workers consume) and backlog (everything ingested first, then the workers
# timed alone on it). By default every worker runs one CPU thread, so that the scaling
# efficiency is throughput(N) / (N x throughput(1)) with one worker as one
# core's worth. With --cpu-quota, one worker is one quota's worth, and the
# report says what is simulated and how many cores are left for the
# services (cores - workers x quota), with a warning under 0.5.
#
# PostgreSQL and RabbitMQ run locally, set up as by scripts/stack.sh (see
# scripts/services.sh); the object store is birdsong-s3, started here as a
# process of its own on a free port (or BIRDSONG_TEST_S3_ENDPOINT if set).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit "${1:-2}"
}
workers=1,2,4
clips=200
corpus=clips,xc3
xc3_copies=1
threads=1
feed=streaming,backlog
out=bench/results/latest
shared=${BIRDSONG_SHARED_DIR:-../shared}
hosts=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=$2; shift 2 ;;
        --clips) clips=$2; shift 2 ;;
        --corpus) corpus=$2; shift 2 ;;
        --xc3-copies) xc3_copies=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --feed) feed=$2; shift 2 ;;
        --prefetch) extra+=(--prefetch "$2"); shift 2 ;;
        --out) out=$2; shift 2 ;;
        --cpu-quota) hosts+=(--cpu-quota "$2"); shift 2 ;;
        --netns) hosts+=(--netns); shift ;;
        --delay) hosts+=(--delay "$2"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2 ;;
    esac
done
if [ ${#hosts[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; then
    echo "--cpu-quota and --netns make cgroups and network namespaces: run as root" >&2
    exit 2
fi
target=${CARGO_TARGET_DIR:-target}
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
cargo build --release --locked -p birdsong-bench -p birdsong-worker -p birdsong-s3 --bins
# The object store runs as a process of its own, as in a deployment: inside
# the bench it would share the producer's runtime, which slowed the workers'
# fetches while the producer ingested (streaming, 8 workers at 0.1 core:
# efficiency 0.78 in-process, 0.84 apart). BIRDSONG_TEST_S3_ENDPOINT set by
# the caller (MinIO, say) is used as it is.
if [ -z "${BIRDSONG_TEST_S3_ENDPOINT:-}" ]; then
    s3_root=$(mktemp -d)
    s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    BIRDSONG_LOG=warn "$target/release/birdsong-s3" --listen "127.0.0.1:$s3_port" "$s3_root" &
    s3_pid=$!
    trap 'kill "$s3_pid" 2>/dev/null; wait "$s3_pid" 2>/dev/null; rm -rf "$s3_root"' EXIT
    export BIRDSONG_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break
        sleep 0.1
    done
fi
thread_arg=()
[ "$threads" = 0 ] || thread_arg=(--threads "$threads")
"$target/release/birdsong-bench" pipeline --shared "$shared" --workers "$workers" \
    --clips "$clips" --corpus "$corpus" --xc3-copies "$xc3_copies" --feed "$feed" "${thread_arg[@]}" \
    "${hosts[@]}" "${extra[@]}" --out "$out"
