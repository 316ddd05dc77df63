"""What would a lower threshold floor give a model's detections?

Detection thresholds are chosen on held-out recordings for a precision target and
kept within [0.5, 0.99] (`THRESHOLD_RANGE` in model/src/detection.rs): a held-out
set never holds the species a model was not taught, so a threshold below 0.5 that
reaches its precision there can still report many of them. This script re-scores a
model's saved window scores with each species' threshold capped at C (min(threshold,
C)) and with uniform thresholds, and prints for each: test recordings whose most
detected species is right, recordings with no detection, window precision and the
share of the true species' windows detected, and the share of windows of unknown
species (another set's recordings) with any detection.

    birdsong-model predict --model DIR --top-k 18 TEST_FILES... > test.jsonl
    birdsong-model predict --model DIR --top-k 18 UNKNOWN_FILES... > unknown.jsonl
    python3 experiments/threshold_floor.py DIR test.jsonl unknown.jsonl manifest.csv

`--top-k` must be the number of classes, so every window carries every score.
Labels come from the manifest by file name.

The test split can only show what a floor does, not choose it. `--cv` chooses on
other data: the known species' side from out-of-fold window scores of cross-validation
on the training split (`birdsong-model cross-validate --predictions`, several seeds
allowed), the unknown side from models trained on that split scoring another set's
recordings, every threshold set to the same floor (where every species' threshold
sits on the floor, as the CNN's do, that is what a floor does):

    birdsong-model cross-validate --architecture cnn --manifest M --audio-root R \
        --folds 4 --seed 1 --predictions cv.jsonl
    birdsong-model train --architecture cnn --manifest M --audio-root R --seed 1 --out DIR
    birdsong-model predict --model DIR --top-k 18 UNKNOWN_FILES... > unknown.jsonl
    python3 experiments/threshold_floor.py --cv cv.jsonl [cv2.jsonl ...] --unknown unknown.jsonl [...]

`--context K` (in --cv mode, before --unknown) first averages every window's scores
with its K neighbours on each side in the same recording, as a model with
`context_windows` K serves them. The inputs must then be scores of windows alone:
cross-validate with `--context-windows 0`, and predict with a model whose
`training.context_windows` is 0. That compares contexts on the same networks.
"""

import collections
import csv
import json
import os
import sys


def window_lines(path):
    """The window lines of `predict` output, parsed."""
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if d.get("kind") == "window":
                yield d


def scores_of(window):
    """A window line's top scores by species."""
    return {x["species"]: x["probability"] for x in window["top"]}


def load(path):
    files = collections.defaultdict(list)
    for d in window_lines(path):
        files[d["file"]].append(scores_of(d))
    return files


def score(test, unknown, labels, thresholds):
    right = no_detection = tp = fp = windows = 0
    for f, rows in test.items():
        label = labels[f] if f in labels else labels[os.path.basename(f)]
        counts, highest = collections.Counter(), collections.defaultdict(float)
        for w in rows:
            windows += 1
            for c, s in w.items():
                if s >= thresholds[c]:
                    counts[c] += 1
                    highest[c] = max(highest[c], s)
                    tp += c == label
                    fp += c != label
        if not counts:
            no_detection += 1
        else:
            right += max(counts, key=lambda c: (counts[c], highest[c])) == label
    unknown_windows = sum(len(w) for w in unknown.values())
    unknown_detected = sum(
        any(s >= thresholds[c] for c, s in w.items()) for rows in unknown.values() for w in rows
    )
    return {
        "right": right,
        "no_detection": no_detection,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / windows if windows else float("nan"),
        "unknown": unknown_detected / unknown_windows if unknown_windows else float("nan"),
    }


def load_cv(path):
    """Out-of-fold windows of `cross-validate --predictions`: (recording, seed) -> rows,
    and their labels."""
    files, labels = collections.defaultdict(list), {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            key = (path, d["recording"])
            labels[key] = d["label"]
            files[key] = [dict(zip(d["classes"], w)) for w in d["windows"]]
    return files, labels


def smooth(rows, k):
    """Each window's scores averaged with its k neighbours on each side (fewer at the
    ends of the recording), as `Classifier::score_recordings` serves them."""
    if k == 0:
        return rows
    out = []
    for i in range(len(rows)):
        near = rows[max(0, i - k):i + k + 1]
        out.append({c: sum(w[c] for w in near) / len(near) for c in rows[i]})
    return out


def cross_validated(args):
    """Uniform floors scored on out-of-fold windows (known) and other models' unknowns."""
    context = 0
    if "--context" in args:
        at = args.index("--context")
        context = int(args[at + 1])
        args = args[:at] + args[at + 2:]
    split = args.index("--unknown")
    cv_paths, unknown_paths = args[1:split], args[split + 1:]
    if not cv_paths or not unknown_paths:
        sys.exit(__doc__)
    print(f"context: {context} window(s) each side")
    print("| floor | " + " | ".join(
        f"{os.path.basename(p)}: detected right / no detection / window precision / recall"
        for p in cv_paths) + " | unknown windows detected, each model |")
    print("|---" * (len(cv_paths) + 2) + "|")
    known = []
    for p in cv_paths:
        test, labels = load_cv(p)
        known.append(({r: smooth(w, context) for r, w in test.items()}, labels))
    unknowns = [{f: smooth(w, context) for f, w in load(p).items()} for p in unknown_paths]
    for floor in (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2):
        cells = []
        for test, labels in known:
            classes = next(iter(test.values()))[0].keys()
            r = score(test, {}, labels, {c: floor for c in classes})
            cells.append(f"{r['right']}/{len(test)} / {r['no_detection']} / {r['precision']:.3f}"
                         f" / {r['recall']:.3f}")
        shares = []
        for unknown in unknowns:
            classes = next(iter(unknown.values()))[0].keys()
            r = score({}, unknown, {}, {c: floor for c in classes})
            shares.append(f"{100 * r['unknown']:.1f} %")
        print(f"| {floor} | " + " | ".join(cells) + " | " + ", ".join(shares) + " |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--cv":
        return cross_validated(sys.argv[1:])
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    model_dir, test_path, unknown_path, manifest = sys.argv[1:]
    with open(os.path.join(model_dir, "model.json")) as f:
        meta = json.load(f)
    classes = meta["classes"]
    # A model trained without a holdout has no thresholds and detects at 0.5
    # (DEFAULT_THRESHOLD in model/src/report.rs).
    values = (meta.get("thresholds") or {}).get("values") or [0.5] * len(classes)
    chosen = dict(zip(classes, values))
    with open(manifest, newline="") as f:
        labels = {os.path.basename(r["path"]): r["species"] for r in csv.DictReader(f)}
    test, unknown = load(test_path), load(unknown_path)
    print(f"{len(classes)} classes, {len(test)} test recordings, {len(unknown)} unknown; "
          f"thresholds {sorted(round(t, 2) for t in chosen.values())}")
    print("| thresholds | detected species right | no detection | window precision "
          "| true windows detected | unknown windows detected |")
    print("|---|---|---|---|---|---|")
    variants = [("the model's", chosen)]
    variants += [(f"min(threshold, {c})", {k: min(t, c) for k, t in chosen.items()})
                 for c in (0.45, 0.4, 0.35, 0.3, 0.25, 0.2)]
    for name, thresholds in variants:
        r = score(test, unknown, labels, thresholds)
        print(f"| {name} | {r['right']}/{len(test)} | {r['no_detection']} | {r['precision']:.3f} "
              f"| {r['recall']:.3f} | {100 * r['unknown']:.1f} % |")


if __name__ == "__main__":
    main()
