#!/usr/bin/env bash
# The "see it work" demo, on the stack from scripts/stack.sh:
#
#   scripts/demo.sh [--workers N]
#
# 1. starts the stack (scripts/stack.sh up; already running roles are kept);
# 2. ingests the `train` recordings of ../shared/data/xc3 with their labels;
# 3. requests a retrain and waits for the run (a promoted model);
# 4. waits until every worker serves the promoted version;
# 5. ingests the `test` recordings without labels and waits for the job;
# 6. prints, per test recording, the true species (from the manifest), the
#    predicted species and its confidence, then the accuracy (a recording
#    with no detection counts as wrong) and the accuracy of the top-scoring
#    species whether detected or not, computed by SQL over the results joined
#    with the manifest.
#
# Needs psql. BIRDSONG_DEMO_DATA points at another dataset laid out like
# xc3 (a manifest.csv with path,species,…,split columns);
# BIRDSONG_DEMO_PARAMS passes retrain parameters, space-separated key=value
# (e.g. "refit=false members=3"); BIRDSONG_DEMO_TIMEOUT is how long the
# retrain may take, in seconds (default 7200: the default CNN with its refit
# took 29 min on pr18 beside a build). Timings are printed on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA="${BIRDSONG_DEMO_DATA:-$ROOT/../shared/data/xc3}"
PROFILE="${BIRDSONG_STACK_PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/$PROFILE"
export BIRDSONG_S3_LISTEN="${BIRDSONG_S3_LISTEN:-127.0.0.1:9000}"
export BIRDSONG_S3_ENDPOINT="${BIRDSONG_S3_ENDPOINT:-http://$BIRDSONG_S3_LISTEN}"
# shellcheck source=scripts/services.sh
source scripts/services.sh
WORKERS=1
while [ $# -gt 0 ]; do
  case $1 in
    --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
    *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done

command -v psql >/dev/null || { echo "the demo needs psql" >&2; exit 1; }
[ -f "$DATA/manifest.csv" ] || { echo "no manifest at $DATA/manifest.csv" >&2; exit 1; }
sql() { psql "$DB_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

scripts/stack.sh up --workers "$WORKERS"
# The database role stack.sh set up (unless BIRDSONG_DATABASE_URL was set).
load_saved_database_url
DB_URL="${BIRDSONG_DATABASE_URL:-$BIRDSONG_DEFAULT_DATABASE_URL}"

# The producer ingests paths: lay out one folder per split (copies, since
# the producer never follows links).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tail -n +2 "$DATA/manifest.csv" | while IFS=, read -r path _species _sci split _rest; do
  mkdir -p "$work/$split/$(dirname "$path")"
  cp "$DATA/$path" "$work/$split/$path"
done
stamp=$(date +%Y%m%dT%H%M%S)

echo
echo "== ingesting the train split with labels"
t0=$(now)
"$BIN/birdsong-producer" ingest "$work/train" --labels "$DATA/manifest.csv" \
  --description "demo $stamp train" --progress none
echo "   ($(secs "$t0" "$(now)") s)"

echo
echo "== retraining"
t0=$(now)
params=()
for p in ${BIRDSONG_DEMO_PARAMS:-}; do params+=(--param "$p"); done
"$BIN/birdsong-retrainer" request --wait --timeout "${BIRDSONG_DEMO_TIMEOUT:-7200}" "${params[@]}"
version=$(sql -At -c "SELECT version FROM model_versions WHERE status = 'promoted'")
[ -n "$version" ] || { echo "no model is promoted" >&2; exit 1; }
t_run=$(now)
# Every worker reports the version it serves on its metrics port.
for i in $(seq 1 "$WORKERS"); do
  port=$((9464 + i - 1))
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null \
      | grep -q "birdsong_model_info{version=\"$version\"} 1" && break
    sleep 0.1
  done
done
t_served=$(now)
echo "   $version promoted; run finished after $(secs "$t0" "$t_run") s, all $WORKERS workers serving it after $(secs "$t0" "$t_served") s"

echo
echo "== classifying the test split (no labels)"
t0=$(now)
"$BIN/birdsong-producer" ingest "$work/test" --description "demo $stamp test" --progress none
job=$(sql -At -c "SELECT id FROM jobs WHERE description = 'demo $stamp test'")
until [ "$(sql -At -c "SELECT finished FROM job_progress WHERE job_id = '$job'")" = t ]; do
  sleep 0.5
done
echo "   job $job finished in $(secs "$t0" "$(now)") s"

echo
sql <<SQL
CREATE TEMP TABLE manifest (path text, species text, scientific_name text, split text,
  duration_s text, bytes text, container text, xc_id text, recordist text, licence text,
  source text);
\copy manifest FROM '$DATA/manifest.csv' WITH (FORMAT csv, HEADER true)
\pset footer off
\echo Per recording (model $version):
SELECT regexp_replace(r.source_path, '^.*/', '') AS recording,
       m.species AS true_species,
       r.species AS predicted,
       round(r.confidence::numeric, 3) AS confidence,
       CASE WHEN r.species = m.species THEN '' ELSE 'WRONG' END AS " "
FROM job_file_results r
JOIN manifest m ON regexp_replace(m.path, '^.*/', '') = regexp_replace(r.source_path, '^.*/', '')
WHERE r.job_id = '$job' AND m.split = 'test'
ORDER BY m.species, recording;
SELECT count(*) AS recordings,
       count(*) FILTER (WHERE r.species = m.species) AS correct,
       count(*) FILTER (WHERE r.species IS NULL) AS no_detection,
       round(avg((r.species IS NOT DISTINCT FROM m.species)::int)::numeric, 3) AS accuracy,
       round(avg((r.top_k -> 0 ->> 'species' IS NOT DISTINCT FROM m.species)::int)::numeric, 3)
         AS top_species_accuracy
FROM job_file_results r
JOIN manifest m ON regexp_replace(m.path, '^.*/', '') = regexp_replace(r.source_path, '^.*/', '')
WHERE r.job_id = '$job' AND m.split = 'test';
SQL
