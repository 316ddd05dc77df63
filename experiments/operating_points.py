#!/usr/bin/env python3
"""Do two models differ in what they can tell apart, or only in where they detect?

A change that lowers every score (more negatives, a tighter quiet margin) detects
fewer unknown-species windows at the same threshold, and also fewer of the known
species'. Compared at one threshold it looks like better open-set behaviour; compared
where both detect the same share of unknown windows it may be none. This prints, for
each model, every threshold from 0.2 to 0.8 applied to all species: test recordings
whose most detected species is right, test recordings with no detection, window
precision and recall, and the share of each unknown set's windows with a detection.

    birdsong-model predict --model DIR --top-k 18 TEST_FILES... > test.jsonl
    birdsong-model predict --model DIR --top-k 18 UNKNOWN_FILES... > unknown.jsonl
    python3 experiments/operating_points.py MANIFEST \
        --model NAME test.jsonl unknown.jsonl [unknown2.jsonl ...] [--model ...]

`--top-k` must be the number of classes, so every window carries every score. Test
labels come from MANIFEST by file name.
"""

import csv
import os
import sys

from threshold_floor import load, score

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def parse(args):
    """MANIFEST, then (name, test path, unknown paths) per `--model` group."""
    if len(args) < 5 or args[1] != "--model":
        sys.exit(__doc__)
    models, current = [], None
    for a in args[1:]:
        if a == "--model":
            current = []
            models.append(current)
        else:
            current.append(a)
    if any(len(m) < 3 for m in models):
        sys.exit(__doc__)
    return args[0], [(m[0], m[1], m[2:]) for m in models]


def main():
    manifest, models = parse(sys.argv[1:])
    with open(manifest, newline="") as f:
        labels = {os.path.basename(r["path"]): r["species"] for r in csv.DictReader(f)}
    for name, test_path, unknown_paths in models:
        test = load(test_path)
        unknowns = [load(p) for p in unknown_paths]
        classes = next(iter(test.values()))[0].keys()
        print(f"{name}: {len(test)} test recordings; unknown sets "
              + ", ".join(os.path.basename(p) for p in unknown_paths))
        print("| threshold | detected species right | no detection | window precision / recall | "
              "unknown windows detected |")
        print("|---|---|---|---|---|")
        for t in THRESHOLDS:
            thresholds = {c: t for c in classes}
            r = score(test, {}, labels, thresholds)
            shares = [score({}, u, labels, thresholds)["unknown"] for u in unknowns]
            print(f"| {t} | {r['right']}/{len(test)} | {r['no_detection']} | "
                  f"{r['precision']:.3f} / {r['recall']:.3f} | "
                  + ", ".join(f"{100 * s:.1f} %" for s in shares) + " |")
        print()


if __name__ == "__main__":
    main()
