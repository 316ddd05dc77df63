"""Repeated hold-out on xc3: compare pipelines on many random recording-level splits.

The fixed test split holds 28 recordings, so one recording is 3.6 points of recording
accuracy and two pipelines within a recording of each other cannot be told apart on it.
This script draws N other splits of all 111 recordings, each with the fixed split's
per-species test counts (12 / 9 / 7), trains every pipeline on each split's train side
with the split's number as seed, evaluates on its test side, and reports

- per pipeline: mean [min-max] over splits of window accuracy, window macro F1,
  recording accuracy and window log loss;
- per pair of pipelines: pooled recording accuracy over all N x 28 test recordings and
  the discordant recordings (right by one, wrong by the other), with the two-sided
  exact sign-test p-value on them, and the same for windows.

Pipelines are `birdsong-model train` argument lists (`--pipeline NAME "ARGS"`, default:
the recommended recipe and `--recipe reference`); `--keras-python PY` adds the Python
pipeline itself (`keras_mlp.py`: the Keras MLP on librosa's 95 features, run by PY, which
must have tensorflow), trained on features `birdsong-model features` exports.

    cargo build --release -p birdsong-model
    python3 experiments/resplit.py --splits 10 --keras-python /path/to/venv/bin/python

Splits are drawn for the recordings, so windows of one recording never sit on both sides.
A split's predictions already in --out are reused, so an interrupted run resumes, and
disjoint ranges of splits (--first-split, --splits) can run side by side into one --out
before a last run over all of them prints the summary.
Artifacts, manifests and predictions go to --out (default a temporary directory): they
are derived from licensed recordings, keep them out of the repository.
"""

import argparse
import csv
import json
import math
import os
import random
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def read_manifest(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def draw_split(rows, split_seed):
    """Reassign `split`, keeping the fixed split's test count for every species."""
    test_counts = defaultdict(int)
    by_species = defaultdict(list)
    for r in rows:
        by_species[r["species"]].append(r["path"])
        if r["split"] == "test":
            test_counts[r["species"]] += 1
    rng = random.Random(split_seed)
    test = set()
    for species in sorted(by_species):
        paths = sorted(by_species[species])
        rng.shuffle(paths)
        test.update(paths[: test_counts[species]])
    return [dict(r, split="test" if r["path"] in test else "train") for r in rows]


def write_manifest(path, fields, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def run(cmd, log=None):
    with open(log or os.devnull, "w") as err:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {shlex.join(cmd)}" + (f"; see {log}" if log else ""))
    return out.stdout


def argmax(v):
    return max(range(len(v)), key=v.__getitem__)


def outcome(truth, windows):
    """One recording scored from its windows' probabilities (class indices):
    (label, predicted, [(window label, predicted, p(label))], number of classes)."""
    k = len(windows[0])
    mean = [sum(w[c] for w in windows) / len(windows) for c in range(k)]
    return truth, argmax(mean), [(truth, argmax(w), w[truth]) for w in windows], k


def outcomes(predictions_path):
    """Per recording with windows: its `outcome`."""
    result = {}
    with open(predictions_path) as f:
        for line in f:
            p = json.loads(line)
            if p["windows"]:
                result[p["recording"]] = outcome(p["classes"].index(p["label"]), p["windows"])
    return result


def macro_f1(pairs, k):
    f1 = []
    for c in range(k):
        tp = sum(1 for t, p in pairs if t == c and p == c)
        pred = sum(1 for _, p in pairs if p == c)
        true = sum(1 for t, _ in pairs if t == c)
        prec = tp / pred if pred else 0.0
        rec = tp / true if true else 0.0
        f1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1) / k


def figures(result):
    windows = [w for _, _, ws, _ in result.values() for w in ws]
    k = max(o[3] for o in result.values())
    return {
        "window_accuracy": sum(t == p for t, p, _ in windows) / len(windows),
        "window_macro_f1": macro_f1([(t, p) for t, p, _ in windows], k),
        "recording_accuracy": sum(o[0] == o[1] for o in result.values()) / len(result),
        "window_log_loss": -sum(math.log(min(max(q, 1e-15), 1.0)) for _, _, q in windows)
        / len(windows),
        "recordings": len(result),
        "windows": len(windows),
    }


def sign_test(a, b):
    """Two-sided exact binomial p-value for a successes against b, p = 1/2."""
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def birdsong(bin_, data, manifest, args, seed, out, name):
    model = os.path.join(out, name)
    preds = model + ".predictions.jsonl"
    if not os.path.exists(preds):
        run([bin_, "train", "--manifest", manifest, "--audio-root", data, "--out", model,
             "--seed", str(seed), *args], log=model + ".train.log")
        run([bin_, "evaluate", "--model", model, "--manifest", manifest, "--audio-root", data,
             "--split", "test", "--predictions", preds + ".part"], log=model + ".evaluate.log")
        os.replace(preds + ".part", preds)
    return outcomes(preds)


def keras(python, bin_, data, manifest, seed, out):
    csvs = []
    for split in ["train", "test"]:
        path = os.path.join(out, f"features.{split}.csv")
        if not os.path.exists(path):
            run([bin_, "features", "--manifest", manifest, "--audio-root", data,
                 "--split", split, "--out", path + ".part"], log=path + ".log")
            os.replace(path + ".part", path)
        csvs.append(path)
    preds = os.path.join(out, "keras.predictions.jsonl")
    if not os.path.exists(preds):
        run([python, os.path.join(HERE, "keras_mlp.py"), *csvs, "--seeds", str(seed),
             "--predictions", preds + ".part"], log=os.path.join(out, "keras.log"))
        os.replace(preds + ".part", preds)
    return outcomes(preds)


def summary(values):
    return f"{sum(values) / len(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", type=int, default=10, help="number of random splits")
    ap.add_argument("--first-split", type=int, default=1, help="seed of the first split")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "xc3"))
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "birdsong-model"))
    ap.add_argument("--out", help="default: a temporary directory")
    ap.add_argument("--pipeline", nargs=2, action="append", metavar=("NAME", "ARGS"),
                    help='a birdsong-model pipeline: name and train arguments, e.g. one "--members 1"')
    ap.add_argument("--keras-python", metavar="PY", help="also run the Python pipeline with this interpreter")
    a = ap.parse_args()

    pipelines = a.pipeline or [["default", ""], ["reference", "--recipe reference"]]
    out = a.out or tempfile.mkdtemp(prefix="resplit.")
    fields, rows = read_manifest(os.path.join(a.data, "manifest.csv"))
    names = [n for n, _ in pipelines] + (["python"] if a.keras_python else [])
    results = {n: {} for n in names}  # name -> split -> outcomes
    print(f"# output in {out}", file=sys.stderr)

    for split in range(a.first_split, a.first_split + a.splits):
        split_dir = os.path.join(out, f"split{split}")
        os.makedirs(split_dir, exist_ok=True)
        manifest = os.path.join(split_dir, "manifest.csv")
        write_manifest(manifest, fields, draw_split(rows, split))
        for name, args in pipelines:
            results[name][split] = birdsong(a.bin, a.data, manifest, shlex.split(args), split, split_dir, name)
        if a.keras_python:
            results["python"][split] = keras(a.keras_python, a.bin, a.data, manifest, split, split_dir)
        for name in names:
            print(json.dumps({"split": split, "pipeline": name, **figures(results[name][split])}), flush=True)

    keys = ["window_accuracy", "window_macro_f1", "recording_accuracy", "window_log_loss"]
    print(f"\n{a.splits} splits; mean [min-max] over splits of " + " / ".join(keys))
    for name in names:
        f = [figures(r) for r in results[name].values()]
        print(f"{name}: " + " / ".join(summary([x[k] for x in f]) for k in keys))

    print("\npooled over the splits' test recordings (windows); discordant: right only by the first, "
          "right only by the second; sign-test p")
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            rec, win = [0, 0, 0, 0], [0, 0, 0, 0]  # right by x, right by y, only x, only y
            for split, rx in results[x].items():
                ry = results[y][split]
                for rid, (t, px, wx, _) in rx.items():
                    py, wy = ry[rid][1], ry[rid][2]
                    if len(wx) != len(wy):
                        sys.exit(f"{rid}: {len(wx)} windows in {x}, {len(wy)} in {y}")
                    for counts, a_ok, b_ok in [(rec, px == t, py == t)] + [
                        (win, u[0] == u[1], v[0] == v[1]) for u, v in zip(wx, wy)
                    ]:
                        counts[0] += a_ok
                        counts[1] += b_ok
                        counts[2] += a_ok and not b_ok
                        counts[3] += b_ok and not a_ok
            n_rec = sum(len(r) for r in results[x].values())
            n_win = sum(len(o[2]) for r in results[x].values() for o in r.values())
            print(f"{x} vs {y}: recordings {rec[0]}/{n_rec} vs {rec[1]}/{n_rec}, discordant "
                  f"{rec[2]} vs {rec[3]}, p = {sign_test(rec[2], rec[3]):.3g}; windows {win[0]}/{n_win} "
                  f"vs {win[1]}/{n_win}, discordant {win[2]} vs {win[3]}, p = {sign_test(win[2], win[3]):.3g}")


if __name__ == "__main__":
    main()
