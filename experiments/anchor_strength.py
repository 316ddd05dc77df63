#!/usr/bin/env python3
"""How strongly should an anchored head be pulled towards BirdNET's own columns?

Cross-validates the anchor strength of the `anchored` architecture (model/src/anchor.rs)
over recordings of a manifest's training split, with the same objective written in
numpy/scipy: per species, a logistic regression on the raw BirdNET embedding
(class-balanced weights, windows 20 dB below their recording's loudest as negatives)
minimising the summed loss + strength * |w - w_birdnet|^2, starting from BirdNET's
column (zero for species BirdNET lacks); the served score is the mean of its sigmoid
and BirdNET's. Prints recording accuracy, window macro F1 (top species per window)
and, with --unknown, the open-set AUROC per fold and strength.

Inputs are `birdsong-model features --backbone birdnet` exports and the BirdNET install:

    B=target/release/birdsong-model
    $B features --manifest /data/pr18/manifest.csv --audio-root /data/pr18 \\
        --split train --hop-s 1.5 --backbone birdnet --out /tmp/pr18-train.csv
    $B features --manifest xc3.csv --audio-root ../shared/data/xc3 --split eval \\
        --hop-s 3 --backbone birdnet --out /tmp/xc3.csv       # optional, unknown species
    python3 experiments/anchor_strength.py --train /tmp/pr18-train.csv \\
        --manifest /data/pr18/manifest.csv --unknown /tmp/xc3.csv

Needs numpy, scipy and onnx (pip). The calibration share detection_compare.py holds out
(every fifth training recording per species) is left out here too.
"""

import argparse
import csv
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from scipy.optimize import minimize
from scipy.stats import rankdata

BIRDNET_DIR = Path.home() / ".local/share/birdsong/birdnet"


def load(path):
    recs, labels = defaultdict(list), {}
    with open(path) as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            recs[row[0]].append(np.array(row[2:], dtype=np.float32))
            labels[row[0]] = row[1]
    return {k: np.stack(v) for k, v in recs.items()}, labels


def sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def design(recs, labels, classes):
    xs, ys = [], []
    for p, x in recs.items():
        db = 20 * np.log10(np.maximum(x[:, -1], 1e-10))
        quiet = db < db.max() - 20.0
        xs.append(x[:, :1024])
        ys.append(np.where(quiet, len(classes), classes.index(labels[p])))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def fit(x, t, w, anchor, offset, strength):
    d = x.shape[1]

    def f(params):
        v, c = params[:d], params[d]
        z = x @ v + c + offset
        r = v - anchor
        loss = (w * (np.logaddexp(0, z) - t * z)).sum() + strength * (r @ r)
        g = w * (sigmoid(z) - t)
        return loss, np.concatenate([x.T @ g + 2 * strength * r, [g.sum()]])

    res = minimize(f, np.concatenate([anchor, [0.0]]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500})
    return res.x[:d], res.x[d] + offset


def birdnet_layer(birdnet_dir, manifest, classes):
    """BirdNET's species layer (weights [1024, 6522], biases) and, per class, its
    column (matched by common or scientific name, None where BirdNET lacks it)."""
    graph = onnx.load(str(birdnet_dir / "birdnet_v2.4.onnx")).graph
    init = {i.name: i for i in graph.initializer}
    w0, b0 = numpy_helper.to_array(init["c188"]), numpy_helper.to_array(init["c189"])
    index = {}
    for i, label in enumerate(open(birdnet_dir / "labels.txt")):
        sci, common = label.strip().split("_", 1)
        index.setdefault(sci.lower(), i)
        index.setdefault(common.lower(), i)
    rows = list(csv.DictReader(open(manifest)))
    scientific = {r["species"]: r.get("scientific_name", "") for r in rows}
    column = {c: index.get(c.lower(), index.get(scientific.get(c, "").lower())) for c in classes}
    return w0, b0, column


def calibration_share(ps):
    """Every fifth recording of a species in xeno-canto id order (from the third), as
    detection_compare.py holds out for calibration; none of a species with two."""
    ps = sorted(ps, key=lambda p: (int("".join(ch for ch in Path(p).name if ch.isdigit()) or 0), p))
    return {p for i, p in enumerate(ps) if i % 5 == 2 and len(ps) > 2}


def folds(recs, labels, n):
    """Recording -> fold (0..n-1), per species at random (seed 0), the calibration
    share left out."""
    by = defaultdict(list)
    for p in sorted(recs):
        by[labels[p]].append(p)
    random.seed(0)
    fold = {}
    for ps in by.values():
        ps.sort(key=lambda p: (int("".join(ch for ch in Path(p).name if ch.isdigit()) or 0), p))
        held = calibration_share(ps)
        ps = [p for p in ps if p not in held]
        random.shuffle(ps)
        for i, p in enumerate(ps):
            fold[p] = i % n
    return fold


def figures(scored, labels, classes, unknown_scores):
    """Recordings right (top mean score), window accuracy and macro F1 (top species per
    window) of `scored` (recording -> window scores), and the open-set AUROC of their
    windows' top scores against those of `unknown_scores` ("-" without)."""
    right, truth, top, tops = 0, [], [], []
    for p, s in scored.items():
        c = classes.index(labels[p])
        right += int(s.mean(0).argmax() == c)
        truth += [c] * len(s)
        top += list(s.argmax(1))
        tops += list(s.max(1))
    truth, top = np.array(truth), np.array(top)
    f1 = np.mean([2 * ((top == c) & (truth == c)).sum()
                  / max(1, (top == c).sum() + (truth == c).sum()) for c in range(len(classes))])
    auroc = "-"
    if unknown_scores:
        neg = np.concatenate([s.max(1) for s in unknown_scores])
        r = rankdata(np.concatenate([tops, neg]))
        auroc = f"{(r[:len(tops)].sum() - len(tops) * (len(tops) + 1) / 2) / (len(tops) * len(neg)):.3f}"
    return right, (top == truth).mean(), f1, auroc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--unknown", type=Path)
    ap.add_argument("--birdnet-dir", type=Path, default=BIRDNET_DIR)
    ap.add_argument("--strengths", default="1,3,10,30,100")
    ap.add_argument("--folds", type=int, default=4)
    args = ap.parse_args()

    recs, labels = load(args.train)
    unknown = load(args.unknown)[0] if args.unknown else {}
    classes = sorted(set(labels.values()))
    k = len(classes)
    w0, b0, column = birdnet_layer(args.birdnet_dir, args.manifest, classes)
    print(f"BirdNET knows {sum(v is not None for v in column.values())} of {k} species",
          file=sys.stderr)
    fold = folds(recs, labels, args.folds)

    print("fold | strength | recording acc | window macro F1 | open-set AUROC")
    for f in range(args.folds):
        train = {p: recs[p] for p in fold if fold[p] != f}
        held = {p: recs[p] for p in fold if fold[p] == f}
        x, y = design(train, labels, classes)
        weights = np.ones(len(y))
        for c in np.unique(y):
            weights[y == c] = len(y) / (len(np.unique(y)) * (y == c).sum())
        for strength in [float(s) for s in args.strengths.split(",")]:
            v, bias, prior = np.zeros((1024, k)), np.zeros(k), {}
            for c, name in enumerate(classes):
                j = column[name]
                anchor = w0[:, j].astype(np.float64) if j is not None else np.zeros(1024)
                offset = float(b0[j]) if j is not None else 0.0
                v[:, c], bias[c] = fit(x, (y == c).astype(float), weights, anchor, offset,
                                       strength)
                if j is not None:
                    prior[c] = j

            def score(e):
                s = sigmoid(e[:, :1024] @ v + bias)
                for c, j in prior.items():
                    s[:, c] = (s[:, c] + sigmoid(e[:, :1024] @ w0[:, j] + b0[j])) / 2
                return s

            right, _, f1, auroc = figures(
                {p: score(e) for p, e in held.items()}, labels, classes,
                [score(e) for e in unknown.values()])
            print(f"{f} | {strength:g} | {right / len(held):.3f} | {f1:.3f} | {auroc}")


if __name__ == "__main__":
    main()
