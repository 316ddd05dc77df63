#!/usr/bin/env python3
"""Does a window's neighbourhood help say which species is calling in it?

The anchored head (model/src/anchor.rs) scores every 3-s window on its own. A call
rarely fits one window: songs repeat and calls cluster, so the windows around a
window say something about it. This cross-validates, over pr18's training
recordings with the folds, objective and anchor strength of anchor_strength.py, the
anchored head's served scores averaged over the window and its `k` neighbours on each
side (k = 0 is today's scoring), on windows 3 s apart (what the worker computes). It
prints, per fold and k, recording accuracy, window macro F1 (top species per window)
and, with --unknown, the open-set AUROC (unknown recordings smoothed alike). With
--test it also trains on the whole training split (the calibration fifth left out, as
detection_compare.py does) and reports the test split the same way.

    B=target/release/birdsong-model
    $B features --manifest /data/pr18/manifest.csv --audio-root /data/pr18 \\
        --split train --hop-s 1.5 --backbone birdnet --out /tmp/pr18-train.csv
    $B features --manifest /data/pr18/manifest.csv --audio-root /data/pr18 \\
        --split test --hop-s 1.5 --backbone birdnet --out /tmp/pr18-test.csv
    python3 experiments/temporal_context.py --train /tmp/pr18-train.csv \\
        --manifest /data/pr18/manifest.csv --unknown /tmp/xc3.csv --test /tmp/pr18-test.csv

Needs numpy, scipy and onnx (pip), as anchor_strength.py.

For any other model, --predictions reads the out-of-fold window scores of
`birdsong-model cross-validate --predictions JSONL` (each recording's windows in time
order, scored alone) and reports the same figures per fold and k, without the open-set
column:

    $B cross-validate --manifest /data/pr18/manifest.csv --audio-root /data/pr18 \
        --folds 4 --members 1 --predictions /tmp/cv.jsonl
    python3 experiments/temporal_context.py --predictions /tmp/cv.jsonl
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from anchor_strength import (  # noqa: E402
    BIRDNET_DIR, birdnet_layer, design, figures, fit, folds, load, sigmoid,
)


def smooth(s, k):
    """Mean of each window's scores with its k neighbours on each side (fewer at the
    ends of the recording)."""
    if k == 0:
        return s
    c = np.cumsum(np.vstack([np.zeros((1, s.shape[1])), s]), axis=0)
    n = len(s)
    lo = np.clip(np.arange(n) - k, 0, n)
    hi = np.clip(np.arange(n) + k + 1, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


def report(name, held, labels, classes, unknown, score, ks):
    for k in ks:
        right, acc, f1, auroc = figures(
            {p: smooth(score(e[::2]), k) for p, e in held.items()}, labels, classes,
            [smooth(score(e), k) for e in unknown.values()])
        print(f"{name} | {k} | {right / len(held):.3f} | {acc:.3f} | {f1:.3f} | {auroc}",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path)
    ap.add_argument("--manifest", type=Path)
    ap.add_argument("--predictions", type=Path)
    ap.add_argument("--unknown", type=Path)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--birdnet-dir", type=Path, default=BIRDNET_DIR)
    ap.add_argument("--strength", type=float, default=10.0)
    ap.add_argument("--context", default="0,1,2,3")
    ap.add_argument("--folds", type=int, default=4)
    args = ap.parse_args()
    ks = [int(k) for k in args.context.split(",")]
    if args.predictions:
        by_fold = defaultdict(dict)
        labels = {}
        for line in open(args.predictions):
            r = json.loads(line)
            classes = r["classes"]
            by_fold[r["fold"]][r["recording"]] = np.array(r["windows"], dtype=np.float64)
            labels[r["recording"]] = r["label"]
        print("fold | context k | recording acc | window acc | window macro F1 | open-set AUROC")
        for f in sorted(by_fold):
            # The windows are scored already (and at the evaluation hop): score() is the
            # identity and report() must not thin them out.
            held = {p: np.repeat(w, 2, axis=0) for p, w in by_fold[f].items()}
            report(str(f), held, labels, classes, {}, lambda e: e, ks)
        return
    if not (args.train and args.manifest):
        ap.error("--train and --manifest, or --predictions")

    recs, labels = load(args.train)
    unknown = load(args.unknown)[0] if args.unknown else {}
    classes = sorted(set(labels.values()))
    w0, b0, column = birdnet_layer(args.birdnet_dir, args.manifest, classes)
    fold = folds(recs, labels, args.folds)

    def train_head(train):
        x, y = design(train, labels, classes)
        weights = np.ones(len(y))
        for c in np.unique(y):
            weights[y == c] = len(y) / (len(np.unique(y)) * (y == c).sum())
        v, bias, prior = np.zeros((1024, len(classes))), np.zeros(len(classes)), {}
        for c, name in enumerate(classes):
            j = column[name]
            anchor = w0[:, j].astype(np.float64) if j is not None else np.zeros(1024)
            offset = float(b0[j]) if j is not None else 0.0
            v[:, c], bias[c] = fit(x, (y == c).astype(float), weights, anchor, offset,
                                   args.strength)
            if j is not None:
                prior[c] = j

        def score(e):
            s = sigmoid(e[:, :1024] @ v + bias)
            for c, j in prior.items():
                s[:, c] = (s[:, c] + sigmoid(e[:, :1024] @ w0[:, j] + b0[j])) / 2
            return s

        return score

    print("fold | context k | recording acc | window acc | window macro F1 | open-set AUROC")
    for f in range(args.folds):
        score = train_head({p: recs[p] for p in fold if fold[p] != f})
        report(str(f), {p: recs[p] for p in fold if fold[p] == f}, labels, classes, unknown,
               score, ks)
    if args.test:
        test, test_labels = load(args.test)
        labels.update(test_labels)
        score = train_head({p: recs[p] for p in fold})
        report("test", test, labels, classes, unknown, score, ks)


if __name__ == "__main__":
    main()
