#!/usr/bin/env bash
# The one test command: formatting, lints and every test, against the real
# PostgreSQL and RabbitMQ (the S3-protocol server is started by the tests).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p birdsong-audio   # extra arguments go to `cargo test`
#
# As root on Debian it installs what is missing (PostgreSQL, RabbitMQ,
# libsoxr), starts the services if they do not answer and creates the
# database role the tests connect as; otherwise it says what to install
# (scripts/services.sh). If that set-up fails, it stops what it started.
# The full run (no arguments) also checks that set-up against a throwaway
# cluster with Debian's default authentication (scripts/tests/scram-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

setup_failed() {
  local status=$?
  trap - EXIT
  stop_started_services
  exit "$status"
}
trap setup_failed EXIT
trap 'exit 130' INT TERM
ensure_services
# Services started here stay up for the next run; only a failed set-up
# stops them.
trap - EXIT INT TERM

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
if [ $# -eq 0 ]; then
  cargo test --workspace --locked
else
  # Not with --workspace, which would override -p (every member is the
  # default anyway).
  cargo test --locked "$@"
fi
if [ $# -eq 0 ]; then
  echo "== database set-up under Debian's default authentication"
  # cargo test built the workspace's binaries in the dev profile.
  scripts/tests/scram-cluster.sh "${CARGO_TARGET_DIR:-target}/debug/birdsong-migrate"
  # The cluster deployment: render deploy/ and validate it offline.
  echo "== deploy/check.sh"
  deploy/check.sh
fi
