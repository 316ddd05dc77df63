"""Score the average of several models' window probabilities, without training anything.

Reads prediction files (JSON lines with `recording`, `label`, `classes` and `windows`, as
`birdsong-model evaluate|cross-validate --predictions`, `cnn_probe.py --predictions` and
`keras_mlp.py --predictions` write them). Every (file, seed) is one model; the combination
averages, window by window, the probabilities of every model for each recording, then
scores it like `resplit.py` does: window accuracy, window macro F1, recording accuracy
(mean probability over a recording's windows) and window log loss.

    python3 model/bench/combine.py cnn.jsonl mlp.jsonl

The models must have scored the same recordings with the same windows: a recording with
another number of windows in one of them is an error, not a silent truncation.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resplit import figures  # noqa: E402


def load(paths):
    """model -> recording -> (label, {class: [p per window]})."""
    models = defaultdict(dict)
    for path in paths:
        with open(path) as f:
            for line in f:
                p = json.loads(line)
                model = f"{path} seed {p['seed']}" if p.get("seed") is not None else path
                key = os.path.basename(p["recording"])
                by_class = {c: [w[i] for w in p["windows"]] for i, c in enumerate(p["classes"])}
                models[model][key] = (p["label"], by_class)
    return models


def outcomes(recordings, classes):
    """The `resplit.outcomes` shape for one model's recordings."""
    result = {}
    for rid, (label, by_class) in recordings.items():
        windows = [list(w) for w in zip(*(by_class[c] for c in classes))]
        if not windows:
            continue
        truth = classes.index(label)
        mean = [sum(w[c] for w in windows) / len(windows) for c in range(len(classes))]
        result[rid] = (
            truth,
            max(range(len(classes)), key=mean.__getitem__),
            [(truth, max(range(len(w)), key=w.__getitem__), w[truth]) for w in windows],
            len(classes),
        )
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", nargs="+")
    a = ap.parse_args()
    models = load(a.predictions)
    names = list(models)
    first = models[names[0]]
    classes = sorted(next(iter(first.values()))[1])
    for name in names[1:]:
        if set(models[name]) != set(first):
            sys.exit(f"{name} scored other recordings than {names[0]}")
    combined = {}
    for rid, (label, _) in first.items():
        per_model = [models[n][rid][1] for n in names]
        lengths = {len(m[classes[0]]) for m in per_model}
        if len(lengths) != 1:
            sys.exit(f"{rid}: the models scored {sorted(lengths)} windows")
        combined[rid] = (label, {
            c: [sum(col) / len(per_model) for col in zip(*(m[c] for m in per_model))]
            for c in classes
        })
    for name in names:
        print(json.dumps({"model": name, **figures(outcomes(models[name], classes))}))
    print(json.dumps({"model": f"mean of {len(names)}", **figures(outcomes(combined, classes))}))


if __name__ == "__main__":
    main()
