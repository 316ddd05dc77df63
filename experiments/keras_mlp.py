"""The Python pipeline's classifier (Keras MLP 512-256-128, dropout, L2, Adam), trained on
features exported by `birdsong-model features`, for a side-by-side comparison of training
time and quality with the Rust implementation on exactly the same inputs.

    birdsong-model features --manifest M --audio-root R --split train --out /tmp/train.csv
    birdsong-model features --manifest M --audio-root R --split test  --out /tmp/test.csv
    python experiments/keras_mlp.py /tmp/train.csv /tmp/test.csv --seeds 1 2 3 --epochs 60

Needs tensorflow (tensorflow-cpu) and numpy. Prints one JSON line per seed and a summary.
Reads the 95 librosa features (the Python pipeline's input) unless --all-features is given.
--unknown CSV (features of other species' recordings, e.g. `birdsong-model features` on
the other data set) adds the share of their windows with a top probability >= 0.5 and
the open-set AUROC.
--predictions writes each test window's probabilities in the format of
`birdsong-model evaluate --predictions` (plus the seed).
"""

import argparse
import csv
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


LIBROSA_FEATURES = 95


def load(path, all_features=False):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    body = rows[1:]
    ids = [r[0] for r in body]
    labels = [r[1] for r in body]
    end = None if all_features else 2 + LIBROSA_FEATURES
    x = np.array([[float(v) for v in r[2:end]] for r in body], dtype=np.float32)
    return ids, labels, x


def macro_f1(y, p, k):
    f1s = []
    for c in range(k):
        tp = np.sum((p == c) & (y == c))
        pred = np.sum(p == c)
        true = np.sum(y == c)
        prec = tp / pred if pred else 0.0
        rec = tp / true if true else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(f1s))


def auroc(known, unknown):
    """P(a known window's top probability exceeds an unknown one's), ties half."""
    values = np.concatenate([known, unknown])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # average ranks of ties
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    n, m = len(known), len(unknown)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def run(seed, epochs, train, test, predictions=None, unknown=None):
    ids, labels, x = train
    tids, tlabels, tx = test
    classes = sorted(set(labels))
    y = np.array([classes.index(l) for l in labels])
    ty = np.array([classes.index(l) for l in tlabels])
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-8] = 1.0
    xs, txs = (x - mean) / std, (tx - mean) / std
    k = len(classes)
    counts = np.bincount(y, minlength=k)
    class_weight = {c: len(y) / (k * counts[c]) for c in range(k)}

    tf.keras.utils.set_random_seed(seed)
    reg = tf.keras.regularizers.l2(1e-3)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(x.shape[1],)),
            tf.keras.layers.Dense(512, activation="relu", kernel_regularizer=reg),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(256, activation="relu", kernel_regularizer=reg),
            tf.keras.layers.Dropout(0.4),
            tf.keras.layers.Dense(128, activation="relu", kernel_regularizer=reg),
            tf.keras.layers.Dropout(0.3),
            tf.keras.layers.Dense(k, activation="softmax"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    model.fit(xs, y, epochs=epochs, batch_size=32, class_weight=class_weight, verbose=0, shuffle=True)
    seconds = time.perf_counter() - started

    prob = model.predict(txs, verbose=0)
    pred = prob.argmax(1)
    rec_correct, rec_total = 0, 0
    for rid in dict.fromkeys(tids):
        mask = np.array([t == rid for t in tids])
        rec_total += 1
        rec_correct += int(prob[mask].mean(0).argmax() == ty[mask][0])
        if predictions is not None:
            line = {"seed": seed, "recording": rid, "label": classes[ty[mask][0]],
                    "classes": classes, "windows": prob[mask].astype(float).tolist()}
            predictions.write(json.dumps(line) + "\n")
    result = {
        "seed": seed,
        "train_seconds": seconds,
        "train_windows": int(len(y)),
        "window_accuracy": float((pred == ty).mean()),
        "window_macro_f1": macro_f1(ty, pred, k),
        "recording_accuracy": rec_correct / rec_total,
    }
    if unknown is not None:
        # Windows of species the model does not know: a softmax names one of its
        # species in every window; "detected" is a top probability of 0.5 or more.
        top = model.predict((unknown - mean) / std, verbose=0).max(1)
        result["unknown_windows"] = int(len(top))
        result["unknown_windows_detected"] = float((top >= 0.5).mean())
        result["open_set_auroc"] = auroc(prob.max(1), top)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--all-features", action="store_true",
                    help="read every exported feature, not only the 95 librosa ones")
    ap.add_argument("--unknown", metavar="CSV",
                    help="features of recordings of other species: report the share of their "
                         "windows with a top probability >= 0.5 and the open-set AUROC")
    ap.add_argument("--predictions", metavar="JSONL",
                    help="write every test window's probabilities, one line per recording and seed")
    a = ap.parse_args()
    train, test = load(a.train, a.all_features), load(a.test, a.all_features)
    out = open(a.predictions, "w") if a.predictions else None
    unknown = load(a.unknown, a.all_features)[2] if a.unknown else None
    results = [run(s, a.epochs, train, test, out, unknown) for s in a.seeds]
    if out is not None:
        out.close()
    for r in results:
        print(json.dumps(r))
    summary = {
        key: {
            "mean": float(np.mean([r[key] for r in results])),
            "min": float(np.min([r[key] for r in results])),
            "max": float(np.max([r[key] for r in results])),
        }
        for key in ["train_seconds", "window_accuracy", "window_macro_f1", "recording_accuracy",
                    "unknown_windows_detected", "open_set_auroc"]
        if key in results[0]
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
