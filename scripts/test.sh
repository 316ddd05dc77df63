#!/usr/bin/env bash
# The one test command: formatting, lints and every test, against the real
# PostgreSQL and RabbitMQ (the S3-protocol server is started by the tests).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p birdsong-audio   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

# host:port of a URL such as postgres://user@host:5432/db
host_port() {
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  case $rest in
    *:*) echo "${rest%:*} ${rest##*:}" ;;
    *) echo "$rest $2" ;;
  esac
}

answers() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

read -r pg_host pg_port <<<"$(host_port "${BIRDSONG_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/birdsong}" 5432)"
read -r mq_host mq_port <<<"$(host_port "${BIRDSONG_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" 5672)"

missing=0
if ! answers "$pg_host" "$pg_port"; then
  echo "PostgreSQL does not answer on $pg_host:$pg_port. Start it with one of:" >&2
  echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
  echo "  docker compose up -d postgres" >&2
  missing=1
fi
if ! answers "$mq_host" "$mq_port"; then
  echo "RabbitMQ does not answer on $mq_host:$mq_port. Start it with one of:" >&2
  echo "  rabbitmq-server -detached   (then: until rabbitmqctl -q await_startup; do sleep 1; done)" >&2
  echo "  docker compose up -d rabbitmq" >&2
  missing=1
fi
[ "$missing" = 0 ] || exit 1
source scripts/native-deps.sh
ensure_native_deps

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked "$@"

# --- cluster deployment: render deploy/ and validate it offline ---
echo "== deploy/check.sh"
deploy/check.sh
