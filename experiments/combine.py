"""Score the average of several models' window probabilities, without training anything.

Reads prediction files (JSON lines with `recording`, `label`, `classes` and `windows`, as
`birdsong-model evaluate|cross-validate --predictions`, `cnn_probe.py --predictions` and
`keras_mlp.py --predictions` write them). Every (file, seed) is one model; the combination
averages, window by window, the probabilities of every model for each recording, then
scores it like `resplit.py` does: window accuracy, window macro F1, recording accuracy
(mean probability over a recording's windows) and window log loss.

    python3 experiments/combine.py cnn.jsonl mlp.jsonl

The models must have scored the same recordings with the same windows: a recording with
another number of windows in one of them is an error, not a silent truncation.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resplit import figures, outcome  # noqa: E402


def load(paths):
    """Classes (sorted) and model -> recording -> (label, windows' probabilities in that
    class order)."""
    models = defaultdict(dict)
    classes = None
    for path in paths:
        with open(path) as f:
            for line in f:
                p = json.loads(line)
                classes = classes or sorted(p["classes"])
                if sorted(p["classes"]) != classes:
                    sys.exit(f"{path}: classes {p['classes']}, elsewhere {classes}")
                order = [p["classes"].index(c) for c in classes]
                model = f"{path} seed {p['seed']}" if p.get("seed") is not None else path
                windows = [[w[i] for i in order] for w in p["windows"]]
                models[model][os.path.basename(p["recording"])] = (p["label"], windows)
    return classes, models


def scored(recordings, classes):
    return figures({
        rid: outcome(classes.index(label), windows)
        for rid, (label, windows) in recordings.items()
        if windows
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", nargs="+")
    a = ap.parse_args()
    classes, models = load(a.predictions)
    names = list(models)
    first = models[names[0]]
    for name in names[1:]:
        if set(models[name]) != set(first):
            sys.exit(f"{name} scored other recordings than {names[0]}")
    combined = {}
    for rid, (label, _) in first.items():
        per_model = [models[n][rid][1] for n in names]
        lengths = {len(m) for m in per_model}
        if len(lengths) != 1:
            sys.exit(f"{rid}: the models scored {sorted(lengths)} windows")
        combined[rid] = (label, [
            [sum(col) / len(col) for col in zip(*same_window)] for same_window in zip(*per_model)
        ])
    for name in names:
        print(json.dumps({"model": name, **scored(models[name], classes)}))
    print(json.dumps({"model": f"mean of {len(names)}", **scored(combined, classes)}))


if __name__ == "__main__":
    main()
