#!/usr/bin/env bash
# Quality and training time of birdsong-model on ../shared/data/xc3: train on the
# `train` split, evaluate on `test`, for several seeds; prints one line per seed and the
# mean [min-max]. Extra arguments go to `train` (e.g. --train-hop-s 5).
#
#   cargo build --release -p birdsong-model
#   experiments/xc3.sh                      # default recipe (band profile, 1.25 s training hop, 5 networks)
#   experiments/xc3.sh --members 1          # default recipe with a single network
#   experiments/xc3.sh --recipe reference   # reference recipe (the Python pipeline's)
#   experiments/xc3.sh --train-hop-s 5      # default, non-overlapping training windows
#
# Artifacts go to $OUT (default a temporary directory): they are derived from licensed
# recordings, keep them out of the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
data=${DATA:-$root/../shared/data/xc3}
bin=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/birdsong-model}
out=${OUT:-$(mktemp -d)}
seeds=${SEEDS:-1 2 3}
mkdir -p "$out"
for seed in $seeds; do
  "$bin" train --manifest "$data/manifest.csv" --audio-root "$data" --out "$out/seed$seed" \
    --seed "$seed" "$@" 2> "$out/seed$seed.log"
  "$bin" evaluate --model "$out/seed$seed" --manifest "$data/manifest.csv" --audio-root "$data" \
    --split test 2> /dev/null > "$out/seed$seed.test.json"
  seconds=$(sed -n 's/^trained .* in \([0-9.]*\) s;.*/\1/p' "$out/seed$seed.log")
  echo "$seed $seconds $out/seed$seed.test.json"
done | python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    seed, seconds, path = line.split()
    m = json.load(open(path))
    r = {"seed": int(seed), "train_seconds": float(seconds),
         "window_accuracy": m["window"]["accuracy"], "window_macro_f1": m["window"]["macro_avg"]["f1"],
         "recording_accuracy": m["recording"]["accuracy"], "window_log_loss": m["window"]["log_loss"],
         "windows": m["window"]["count"],
         "recordings": m["recording"]["count"]}
    rows.append(r)
    print(json.dumps(r))
for key in ["window_accuracy", "window_macro_f1", "recording_accuracy", "window_log_loss", "train_seconds"]:
    v = [r[key] for r in rows]
    print(f"{key}: {sum(v)/len(v):.3f} [{min(v):.3f}-{max(v):.3f}]")
'
