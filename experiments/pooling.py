"""Which recording-level summary of window scores names the species best?

A recording's species is the class with the highest summary of its windows' scores.
The library uses the mean probability (`Classifier::summarize`). In field recordings the
bird calls in some windows and the rest is background; a mean over all windows lets
the quiet ones vote, a max lets one loud false window win. This script scores, from
saved window probabilities, the recording accuracy of several summaries:

- `mean`: mean probability (today's rule);
- `max`: the highest window;
- `top-N`: mean of each class's N highest windows (fewer when the recording has fewer);
- `top-P%`: mean of each class's highest P % of windows (at least one);
- `power-P`: the P-th power mean, (mean s^P)^(1/P), between the mean (P = 1) and the max;
- `logit-mean`: mean of log-odds (a window near 0 pulls hard).

Input: JSON lines as `birdsong-model cross-validate --predictions` or `evaluate
--predictions` write them (one line per recording: fold, label, classes, windows). With
several files the accuracies are per file and pooled over all. Folds within a file are
reported separately too, so a rule can be chosen on cross-validation and then checked
once on a test split.

    birdsong-model cross-validate --architecture cnn --manifest M --audio-root R \
        --folds 4 --seed 1 --predictions cv-cnn.jsonl
    python3 experiments/pooling.py cv-cnn.jsonl
"""

import argparse
import json
import math
from collections import defaultdict


def rules():
    out = [("mean", lambda s: sum(s) / len(s)), ("max", max)]
    for n in (2, 3, 5):
        out.append((f"top-{n}", lambda s, n=n: top_mean(s, n)))
    for p in (25, 50):
        out.append((f"top-{p}%", lambda s, p=p: top_mean(s, max(1, math.ceil(len(s) * p / 100)))))
    for p in (2, 4, 8):
        out.append((f"power-{p}", lambda s, p=p: (sum(x**p for x in s) / len(s)) ** (1 / p)))
    out.append(("logit-mean", lambda s: sum(logit(x) for x in s) / len(s)))
    return out


def top_mean(scores, n):
    best = sorted(scores, reverse=True)[:n]
    return sum(best) / len(best)


def logit(p):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def predict(line, rule):
    windows = line["windows"]
    if not windows:
        return None
    classes = line["classes"]
    summaries = [rule([w[c] for w in windows]) for c in range(len(classes))]
    best = max(range(len(classes)), key=lambda c: (summaries[c], -c))
    return classes[best]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", help="JSON-lines prediction files")
    args = parser.parse_args()
    named = rules()
    pooled = defaultdict(lambda: [0, 0])
    header = "file / fold".ljust(32) + "".join(name.rjust(11) for name, _ in named)
    print(header)
    for path in args.predictions:
        with open(path) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        groups = defaultdict(list)
        for line in lines:
            groups[line.get("fold")].append(line)
        keys = sorted(groups, key=lambda k: (k is None, k if k is not None else 0))
        if len(keys) > 1:
            keys.append("all")
        for key in keys:
            members = lines if key == "all" else groups[key]
            row = []
            for name, rule in named:
                right = sum(predict(l, rule) == l["label"] for l in members)
                row.append(right / len(members))
                if key == "all" or len(keys) == 1:
                    pooled[name][0] += right
                    pooled[name][1] += len(members)
            label = f"{path.rsplit('/', 1)[-1]} {'' if key is None else key}"[:31]
            print(label.ljust(32) + "".join(f"{a:11.3f}" for a in row))
    if len(args.predictions) > 1:
        print("pooled".ljust(32) + "".join(f"{pooled[n][0] / pooled[n][1]:11.3f}" for n, _ in named))


if __name__ == "__main__":
    main()
