#!/usr/bin/env bash
# Runs the whole birdsong system on one machine without Docker.
#
#   scripts/stack.sh up [--workers N]   install and start what is missing, build,
#                                       apply the schema, start everything
#   scripts/stack.sh status             what runs, where, and the queue depths
#   scripts/stack.sh down               stop everything cleanly (SIGTERM, then wait)
#   scripts/stack.sh env                the exports to run other binaries against it
#
# PostgreSQL and RabbitMQ run locally: as root on Debian, `up` installs (with
# libsoxr) and starts them and creates the database role it uses; otherwise
# it says what to install (scripts/services.sh). A failed `up` stops what it
# started. The object store is the bundled birdsong-s3 server over
# .stack/s3. Logs: .stack/logs/<role>.log. Every BIRDSONG_* variable is
# passed through, so the roles can be pointed elsewhere exactly as in a
# deployment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE="${BIRDSONG_STACK_DIR:-$ROOT/.stack}"
PROFILE="${BIRDSONG_STACK_PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/$PROFILE"

export BIRDSONG_S3_LISTEN="${BIRDSONG_S3_LISTEN:-127.0.0.1:9000}"
export BIRDSONG_S3_ENDPOINT="${BIRDSONG_S3_ENDPOINT:-http://$BIRDSONG_S3_LISTEN}"

# shellcheck source=scripts/services.sh
source scripts/services.sh

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

running() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() { # name command...
  local name=$1; shift
  if running "$STATE/pids/$name.pid"; then
    echo "  $name already running (pid $(cat "$STATE/pids/$name.pid"))"
    return
  fi
  nohup "$@" >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
  STARTED_ROLES+=("$STATE/pids/$name.pid")
  echo "  $name started (pid $!, log $STATE/logs/$name.log)"
}

wait_port() { # host:port seconds
  local host=${1%:*} port=${1##*:}
  for _ in $(seq $(( $2 * 10 ))); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

up() {
  local workers=1
  while [ $# -gt 0 ]; do
    case $1 in
      --workers) workers=${2:?--workers needs a number}; shift 2 ;;
      --workers=*) workers=${1#*=}; shift ;;
      *) usage ;;
    esac
  done
  case $workers in ''|*[!0-9]*) echo "--workers must be a number" >&2; exit 2 ;; esac
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/s3"

  # A failure from here on stops what this run started, newest first.
  trap up_failed EXIT
  trap 'exit 130' INT TERM
  ensure_services
  echo "building ($PROFILE)…"
  local flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" --locked --bins -q

  echo "starting:"
  start s3 "$BIN/birdsong-s3" "$STATE/s3"
  wait_port "$BIRDSONG_S3_LISTEN" 20 || { echo "birdsong-s3 did not start; see $STATE/logs/s3.log" >&2; exit 1; }
  echo "applying the schema…"
  "$BIN/birdsong-migrate" 2>&1 | tee -a "$STATE/logs/migrate.log"
  for role in api retrainer; do
    if [ -x "$BIN/birdsong-$role" ]; then start "$role" "$BIN/birdsong-$role"; fi
  done
  for i in $(seq 1 "$workers"); do
    # Each worker serves metrics on its own port.
    BIRDSONG_METRICS_LISTEN="127.0.0.1:$((9464 + i - 1))" start "worker-$i" "$BIN/birdsong-worker"
  done
  # Workers beyond the requested count (from an earlier `up`) are stopped.
  for pidfile in "$STATE"/pids/worker-*.pid; do
    [ -e "$pidfile" ] || continue
    local n=${pidfile##*/worker-}; n=${n%.pid}
    if [ "$n" -gt "$workers" ]; then stop_one "$pidfile"; fi
  done
  # A role that cannot start (a port in use, a refused connection) exits
  # within moments: that fails `up` too.
  local pidfile
  if [ ${#STARTED_ROLES[@]} -gt 0 ]; then sleep 3; fi
  for pidfile in "${STARTED_ROLES[@]}"; do
    running "$pidfile" || { echo "$(basename "$pidfile" .pid) exited at start; see $STATE/logs/$(basename "$pidfile" .pid).log" >&2; exit 1; }
  done
  trap - EXIT INT TERM
  echo "birdsong is up: objects at $BIRDSONG_S3_ENDPOINT; '$0 status' to watch, '$0 down' to stop"
  echo "  to run other binaries against it: eval \"\$($0 env)\""
}

STARTED_ROLES=()
up_failed() {
  local status=$? i
  trap - EXIT
  echo "up failed; stopping what it started" >&2
  for (( i = ${#STARTED_ROLES[@]} - 1; i >= 0; i-- )); do
    stop_one "${STARTED_ROLES[$i]}"
  done
  stop_started_services
  exit "$status"
}

stop_one() { # pidfile
  local pidfile=$1 name; name=$(basename "$pidfile" .pid)
  if running "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  $name did not stop in 60 s; killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "  $name stopped"
  fi
  rm -f "$pidfile"
}

down() {
  [ -d "$STATE/pids" ] || { echo "nothing is running"; return; }
  # Producers of work first, the object store last.
  for pidfile in "$STATE"/pids/api.pid "$STATE"/pids/worker-*.pid "$STATE"/pids/retrainer.pid "$STATE"/pids/s3.pid; do
    [ -e "$pidfile" ] && stop_one "$pidfile"
  done
  return 0
}

status() {
  local any=0
  for pidfile in "$STATE"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    any=1
    local name; name=$(basename "$pidfile" .pid)
    if running "$pidfile"; then
      echo "$name: running (pid $(cat "$pidfile"))"
    else
      echo "$name: NOT running (see $STATE/logs/$name.log)"
    fi
  done
  [ "$any" = 1 ] || echo "nothing is running"
  if command -v rabbitmqctl >/dev/null 2>&1; then
    echo "queues:"
    rabbitmqctl -q list_queues name messages messages_unacknowledged 2>/dev/null \
      | grep -E "^${BIRDSONG_QUEUE_PREFIX:-}(classify|retrain)" | sed 's/^/  /' || true
  fi
  model_hint
}

# Tasks wait (status awaiting_model) until a model is promoted: say so, and how
# to get one, rather than leave a user wondering why nothing is classified.
model_hint() {
  command -v psql >/dev/null 2>&1 || return 0
  load_saved_database_url
  local url="${BIRDSONG_DATABASE_URL:-$BIRDSONG_DEFAULT_DATABASE_URL}" row
  row=$(psql "$url" -XAtq -F ' ' -c "SELECT (SELECT count(*) FROM tasks WHERE status = 'awaiting_model'),
                                            (SELECT count(*) FROM promoted_model)" 2>/dev/null) || return 0
  local waiting promoted
  read -r waiting promoted <<<"$row"
  if [ "${promoted:-0}" = 0 ]; then
    echo "model: none promoted yet; ${waiting:-0} task(s) waiting for one."
    echo "  Get one with scripts/demo.sh (labelled example recordings, then a retrain), or label"
    echo "  recordings (birdsong-producer ingest --label-from-folder) and request a retrain"
    echo "  (birdsong-retrainer request); README, \"Run it\" and retrainer/README.md."
  elif [ "${waiting:-0}" != 0 ]; then
    echo "model: promoted; ${waiting} task(s) still marked as waiting for a model."
  fi
}

# The exports that point a shell at this stack: the database role `up` uses
# (when BIRDSONG_DATABASE_URL was not set) and the object store.
env_exports() {
  load_saved_database_url
  printf 'export BIRDSONG_DATABASE_URL=%q\n' "${BIRDSONG_DATABASE_URL:-$BIRDSONG_DEFAULT_DATABASE_URL}"
  printf 'export BIRDSONG_S3_ENDPOINT=%q\n' "$BIRDSONG_S3_ENDPOINT"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  env) env_exports ;;
  *) usage ;;
esac
