#!/usr/bin/env python3
"""Does a window's distance from the training windows of its species tell unknown birds
from known ones, where its scores do not?

A per-species sigmoid says how much a window looks like one species *rather than the
other species it was trained against*; a bird from elsewhere can look more like one of
them than like the rest and score high. The CNN's embedding (its pooled features, what
the output layer reads) places every window in one space; this script asks whether
windows of species the model never heard lie further from the training windows of the
species they are scored as than test windows of that species do.

For each species it keeps the training windows that score at least 0.5 for it (its
calls, not the quiet stretches of its recordings) and measures each window's
distance to them in two ways:

* `knn`: one minus the cosine similarity to the nearest of those windows (what
  `birdsong_model::familiarity` serves);
* `maha`: Mahalanobis distance to the species' mean with one covariance shared by all
  species (shrunk towards its mean variance); `diag`: its diagonal alone; `pca`: its
  top 64 principal directions alone.

Each species' radius is a quantile Q of its own training windows' distances, each
measured leaving its recording out (otherwise every training window is at distance 0
from itself in `knn`, and too close in `maha`). A window's score for a species farther
away than its radius is set to 0 (the crate lowers it below 0.5 instead, which
detects the same at every threshold from 0.5). The script prints, for each Q and uniform threshold,
what `operating_points.py` prints, and the AUROC of the top gated score between test
windows of known species and windows of the unknown sets.

    birdsong-model predict --model DIR --top-k 18 --embeddings TRAIN_FILES... > train.jsonl
    birdsong-model predict --model DIR --top-k 18 --embeddings TEST_FILES... > test.jsonl
    birdsong-model predict --model DIR --top-k 18 --embeddings UNKNOWN_FILES... > unknown.jsonl
    python3 experiments/familiarity.py MANIFEST train.jsonl test.jsonl unknown.jsonl [...]

Environment: METHODS (default `maha,diag,pca,knn`), QUANTILES (default
`0.8,0.9,0.95,0.99,1.0`; 1.0 gates nothing), NEIGHBOURS (mean similarity of the k
nearest instead of the nearest), STANDARDISE=1 (each embedding value standardised over
the training windows first), CAP (at most this many windows per species, evenly
spaced). Needs numpy.
"""

import collections
import csv
import os
import sys

import numpy as np

from threshold_floor import score, scores_of, window_lines

QUANTILES = tuple(float(q) for q in os.environ.get("QUANTILES", "0.8,0.9,0.95,0.99,1.0").split(","))
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SHRINKAGE = 0.1
PCA_RANK = 64
CAP = int(os.environ.get("CAP", "0"))
NEIGHBOURS = int(os.environ.get("NEIGHBOURS", "1"))
STANDARDISE = os.environ.get("STANDARDISE") == "1"
PRECISION = {"maha": "precision", "diag": "diag_precision", "pca": "pca_precision"}


def load(path):
    """file -> list of (scores dict, embedding)."""
    files = collections.defaultdict(list)
    for d in window_lines(path):
        files[d["file"]].append((scores_of(d), np.asarray(d["embedding"], dtype=np.float64)))
    return files


def label_of(labels, f):
    return labels[f] if f in labels else labels[os.path.basename(f)]


class Space:
    """Each species' calling training windows, and distances to them."""

    def __init__(self, train, labels, classes):
        self.classes = classes
        self.members = {}  # species -> (embeddings, recording ids)
        for i, (f, rows) in enumerate(sorted(train.items())):
            c = label_of(labels, f)
            if c not in classes:
                continue
            for s, e in rows:
                if s[c] >= 0.5:
                    self.members.setdefault(c, ([], []))
                    self.members[c][0].append(e)
                    self.members[c][1].append(i)
        self.members = {c: (np.array(e), np.array(r)) for c, (e, r) in self.members.items()}
        if CAP:
            for c, (e, r) in list(self.members.items()):
                if len(e) > CAP:
                    keep = (np.arange(CAP) * len(e)) // CAP
                    self.members[c] = (e[keep], r[keep])
        centred = np.concatenate([e - e.mean(0) for e, _ in self.members.values()])
        cov = centred.T @ centred / len(centred)
        d = cov.shape[0]
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / d * np.eye(d)
        self.precision = np.linalg.inv(cov)
        # Cheaper forms to store: the diagonal alone, and the top principal directions.
        self.diag_precision = np.diag(1.0 / np.diag(cov))
        values, vectors = np.linalg.eigh(cov)
        top = vectors[:, -PCA_RANK:] / np.sqrt(values[-PCA_RANK:])
        self.pca_precision = top @ top.T
        self.means = {c: e.mean(0) for c, (e, _) in self.members.items()}
        every = np.concatenate([e for e, _ in self.members.values()])
        self.centre, self.spread = every.mean(0), every.std(0) + 1e-3
        self.unit = {
            c: (lambda p: p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-9))(
                self.prepare(e))
            for c, (e, _) in self.members.items()
        }

    def distance(self, method, c, x, mean=None, unit=None):
        if c not in self.members:
            return 0.0
        if method in PRECISION:
            m = self.means[c] if mean is None else mean
            v = x - m
            p = getattr(self, PRECISION[method])
            return float(np.sqrt(max(v @ p @ v, 0.0)))
        u = self.unit[c] if unit is None else unit
        if len(u) == 0:
            return 2.0
        x = self.prepare(x)
        xn = x / max(np.linalg.norm(x), 1e-9)
        sims = u @ xn
        if NEIGHBOURS > 1 and len(sims) > NEIGHBOURS:
            return float(1.0 - np.sort(sims)[-NEIGHBOURS:].mean())
        return float(1.0 - sims.max())

    def prepare(self, x):
        return (x - self.centre) / self.spread if STANDARDISE else x

    def radii(self, method, q):
        """Quantile q of each species' training distances, each leaving its recording out."""
        out = {}
        for c, (e, rec) in self.members.items():
            ds = []
            for j in range(len(e)):
                other = rec != rec[j]
                if other.sum() == 0:
                    continue
                if method in PRECISION:
                    ds.append(self.distance(method, c, e[j], mean=e[other].mean(0)))
                else:
                    ds.append(self.distance(method, c, e[j], unit=self.unit[c][other]))
            out[c] = float(np.quantile(ds, q)) if ds else float("inf")
        return out


def gated(files, space, method, radii):
    """Scores with each species' score set to 0 where the window lies beyond its radius."""
    out = {}
    for f, rows in files.items():
        out[f] = [
            {
                c: (v if space.distance(method, c, e) <= radii.get(c, float("inf")) else 0.0)
                for c, v in s.items()
            }
            for s, e in rows
        ]
    return out


def auroc(pos, neg):
    allv = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank, i, n = 0.0, 0, len(allv)
    while i < n:
        j = i
        while j + 1 < n and allv[j + 1][0] == allv[i][0]:
            j += 1
        rank += ((i + j) / 2 + 1) * sum(p for _, p in allv[i:j + 1])
        i = j + 1
    p, q = len(pos), len(neg)
    return (rank - p * (p + 1) / 2) / (p * q)


def main(args):
    if len(args) < 5:
        sys.exit(__doc__)
    manifest, train_path, test_path, unknown_paths = args[1], args[2], args[3], args[4:]
    with open(manifest) as f:
        labels = {}
        for r in csv.DictReader(f):
            labels[r["path"]] = r["species"]
            labels[os.path.basename(r["path"])] = r["species"]
    train, test = load(train_path), load(test_path)
    unknowns = [load(p) for p in unknown_paths]
    classes = sorted(next(iter(test.values()))[0][0].keys())
    space = Space(train, labels, classes)
    print(f"{sum(len(e) for e, _ in space.members.values())} calling training windows, "
          f"{len(classes)} species")
    methods = os.environ.get("METHODS", "maha,diag,pca,knn").split(",")
    for method in methods:
        for q in QUANTILES:
            radii = space.radii(method, q) if q < 1.0 else {}
            g_test = gated(test, space, method, radii)
            g_unknown = [gated(u, space, method, radii) for u in unknowns]
            known_top = [max(s.values()) for rows in g_test.values() for s in rows]
            aurocs = [
                auroc(known_top, [max(s.values()) for rows in u.values() for s in rows])
                for u in g_unknown
            ]
            print(f"\n{method} Q={q}: AUROC " + " ".join(f"{a:.3f}" for a in aurocs))
            for t in THRESHOLDS:
                th = {c: t for c in classes}
                base = score(g_test, {}, labels, th)
                shares = [score({}, u, labels, th)["unknown"] for u in g_unknown]
                print(
                    f"  t={t}: right {base['right']:3d} none {base['no_detection']:3d} "
                    f"P {base['precision']:.3f} R {base['recall']:.3f} unknown "
                    + " ".join(f"{100 * s:5.1f}%" for s in shares)
                )


if __name__ == "__main__":
    main(sys.argv)
