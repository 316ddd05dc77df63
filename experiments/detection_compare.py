#!/usr/bin/env python3
"""Compare how models rank and detect on one manifest, and what they say to
species they do not know.

For every pipeline given with --pipeline NAME "train options", it trains
`birdsong-model` on the manifest's training recordings less a calibration
share (every fifth training recording of each species, in xeno-canto id
order, becomes split `calib`), chooses the detection thresholds on that
share, evaluates on --split (default `test`) with --unknown as recordings of
species the model does not know, and prints one row per pipeline:

  recording accuracy, window accuracy, window macro F1, mean average precision,
  detection precision / recall at the thresholds, open-set AUROC, share of the
  unknown windows detected, false detections per hour of unknown audio.

Example (pr18 laid out as ../shared/data/pr18/README.md says, xc3 as the
unknown species):

  python3 experiments/detection_compare.py \\
      --manifest /data/pr18/manifest.csv --audio-root /data/pr18 \\
      --unknown ../shared/data/xc3 --out /tmp/pr18-compare \\
      --pipeline sigmoid "" \\
      --pipeline softmax "--output softmax --no-quiet-negatives"

Models and reports go under --out (reused when present, so an interrupted
run resumes). BIRDSONG_MODEL_BIN names the `birdsong-model` binary (default:
target/release/birdsong-model, then target/debug/birdsong-model).
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path


def model_bin() -> str:
    if os.environ.get("BIRDSONG_MODEL_BIN"):
        return os.environ["BIRDSONG_MODEL_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    for profile in ("release", "debug"):
        candidate = target / profile / "birdsong-model"
        if candidate.exists():
            return str(candidate)
    sys.exit("birdsong-model not found: build it (cargo build --release -p birdsong-model) "
             "or set BIRDSONG_MODEL_BIN")


def calibration_manifest(manifest: Path, out: Path, every: int) -> Path:
    rows = list(csv.DictReader(manifest.open()))
    if not rows:
        sys.exit(f"{manifest} is empty")
    by_species = {}
    for r in rows:
        if r["split"] == "train":
            by_species.setdefault(r["species"], []).append(r)

    def order(r):
        digits = "".join(c for c in r.get("xc_id", "") if c.isdigit())
        return (int(digits) if digits else 0, r["path"])

    for recordings in by_species.values():
        recordings.sort(key=order)
        for i, r in enumerate(recordings):
            # Never the only recordings of a species: it must stay trainable.
            if i % every == 2 and len(recordings) > 2:
                r["split"] = "calib"
    path = out / "manifest-calib.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(cmd, log: Path):
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}); see {log}")
    return done.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--audio-root", type=Path, required=True)
    p.add_argument("--unknown", type=Path, help="folder of recordings of other species")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calibration-every", type=int, default=5)
    p.add_argument("--target-precision", type=float, default=0.9)
    p.add_argument("--pipeline", nargs=2, action="append", metavar=("NAME", "OPTIONS"), required=True)
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = calibration_manifest(args.manifest, args.out, args.calibration_every)
    binary = model_bin()
    data = ["--manifest", str(manifest), "--audio-root", str(args.audio_root)]
    rows = []
    for name, options in args.pipeline:
        model = args.out / name
        report = args.out / f"{name}.json"
        if not (model / "model.json").exists():
            run([binary, "train", *data, "--split", "train", "--out", str(model),
                 "--calibrate-split", "calib", "--target-precision", str(args.target_precision),
                 *shlex.split(options)], args.out / f"{name}.train.log")
        if not report.exists():
            cmd = [binary, "evaluate", *data, "--model", str(model), "--split", args.split]
            if args.unknown:
                cmd += ["--unknown", str(args.unknown)]
            out = run(cmd, args.out / f"{name}.evaluate.log")
            tmp = report.with_suffix(".part")
            tmp.write_text(out)
            tmp.rename(report)
        e = json.loads(report.read_text())
        d = e.get("detection") or {}
        o = e.get("open_set") or {}
        rows.append((name, e["recording"]["accuracy"], e["window"]["accuracy"],
                     e["window"]["macro_avg"]["f1"], d.get("mean_average_precision"),
                     d.get("precision"), d.get("recall"), o.get("auroc"),
                     o.get("unknown_windows_detected"), o.get("false_detections_per_hour")))

    def fmt(v, digits=3):
        return "–" if v is None else f"{v:.{digits}f}"

    print("| pipeline | recording acc | window acc | window macro F1 | mAP | det. precision | det. recall "
          "| open-set AUROC | unknown windows detected | false det. / h |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, *v in rows:
        print(f"| {name} | " + " | ".join(fmt(x) for x in v[:-1]) + f" | {fmt(v[-1], 0)} |")


if __name__ == "__main__":
    main()
