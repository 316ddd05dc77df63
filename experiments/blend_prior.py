#!/usr/bin/env python3
"""Would combining a head trained on BirdNET embeddings with BirdNET's own species
layer (restricted to the same species) beat both?

Takes two artifact directories on the BirdNET backbone: a trained head (e.g. from
`detection_compare.py --pipeline bn-shallow "--features birdnet --architecture
shallow"`) and a restricted layer (`birdsong-model restrict`). Runs `birdsong-model
evaluate --predictions` for both on the manifest's test recordings and on a folder of
recordings of other species, then scores, per window, the head alone and three blends
for the species BirdNET knows (the head alone for the others): the geometric mean,
the minimum and the mean of the two scores. Reports recording accuracy (mean score
over the windows), window accuracy and macro F1 (top species), the open-set AUROC
separating test windows from unknown-species windows by top score, and the share of
unknown windows reaching the head's thresholds (not recalibrated for the blends).

    python3 experiments/blend_prior.py --manifest /data/pr18/manifest.csv \\
        --audio-root /data/pr18 --unknown ../shared/data/xc3 \\
        --head /tmp/cmp-pr18-bn/bn-shallow --prior /tmp/bn-restricted --out /tmp/blend

BIRDSONG_MODEL_BIN names the `birdsong-model` binary (default: the release build under
$CARGO_TARGET_DIR, else target/). Outputs are derived from licensed recordings: keep
--out outside the repository.
"""

import argparse
import csv
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection_compare import model_bin  # noqa: E402  (same binary lookup)

AUDIO = (".mp3", ".wav", ".flac", ".ogg", ".m4a", ".aiff")


def write_manifest(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "species", "split"])
        w.writeheader()
        w.writerows(rows)


def predictions(model: Path, manifest: Path, root: str, out: Path) -> dict:
    """Every window's scores of every recording of the manifest's `eval` split."""
    cmd = [model_bin(), "evaluate", "--manifest", str(manifest), "--audio-root", root,
           "--model", str(model), "--split", "eval", "--hop-s", "3",
           "--predictions", str(out)]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = {}
    for line in open(out):
        d = json.loads(line)
        result[d["recording"]] = d["windows"]
    return result


def auroc(pos: list, neg: list) -> float:
    values = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    i, rank_sum = 0, 0.0
    while i < len(values):
        j = i
        while j < len(values) and values[j][0] == values[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(1 for k in range(i, j) if values[k][1])
        i = j
    p, n = len(pos), len(neg)
    return (rank_sum - p * (p + 1) / 2) / (p * n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--audio-root", type=Path, required=True)
    ap.add_argument("--unknown", type=Path, required=True)
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--prior", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    head = json.load(open(args.head / "model.json"))
    prior = json.load(open(args.prior / "model.json"))
    classes, thresholds = head["classes"], head["thresholds"]["values"]
    prior_index = {c: i for i, c in enumerate(prior["classes"])}
    stand_in = prior["classes"][0]  # evaluate needs a label the model knows

    rows = [r for r in csv.DictReader(open(args.manifest)) if r["split"] == args.split]
    truth = {r["path"]: r["species"] for r in rows}
    unknown = sorted(str(p) for p in args.unknown.rglob("*") if p.suffix.lower() in AUDIO)
    sets = {}
    for name, model, label_ok in (("head", args.head, set(classes)),
                                  ("prior", args.prior, set(prior_index))):
        known = [{"path": r["path"], "split": "eval",
                  "species": r["species"] if r["species"] in label_ok else stand_in}
                 for r in rows]
        foreign = [{"path": p, "split": "eval", "species": stand_in} for p in unknown]
        write_manifest(args.out / f"{name}-known.csv", known)
        write_manifest(args.out / f"{name}-unknown.csv", foreign)
        sets[name] = (
            predictions(model, args.out / f"{name}-known.csv", str(args.audio_root),
                        args.out / f"{name}-known.jsonl"),
            predictions(model, args.out / f"{name}-unknown.csv", "/",
                        args.out / f"{name}-unknown.jsonl"),
        )

    def blend(h_rows, p_rows, mode):
        out = []
        for ph, pp in zip(h_rows, p_rows):
            row = []
            for i, c in enumerate(classes):
                s = ph[i]
                if mode != "head" and c in prior_index:
                    q = pp[prior_index[c]]
                    s = {"geometric mean": math.sqrt(s * q), "minimum": min(s, q),
                         "mean": (s + q) / 2}[mode]
                row.append(s)
            out.append(row)
        return out

    print("| scores | recording acc | window acc | window macro F1 | open-set AUROC | unknown windows detected |")
    print("|---|---|---|---|---|---|")
    for mode in ("head", "geometric mean", "minimum", "mean"):
        right, windows, window_right = 0, 0, 0
        counts = defaultdict(lambda: [0, 0, 0])
        known_top, unknown_top, detected = [], [], 0
        for rec, h_rows in sets["head"][0].items():
            scores = blend(h_rows, sets["prior"][0][rec], mode)
            label = truth[rec]
            mean = [sum(col) / len(scores) for col in zip(*scores)]
            right += classes[max(range(len(classes)), key=mean.__getitem__)] == label
            for row in scores:
                best = classes[max(range(len(classes)), key=row.__getitem__)]
                windows += 1
                window_right += best == label
                if best == label:
                    counts[label][0] += 1
                else:
                    counts[best][1] += 1
                    counts[label][2] += 1
                known_top.append(max(row))
        for rec, h_rows in sets["head"][1].items():
            for row in blend(h_rows, sets["prior"][1][rec], mode):
                unknown_top.append(max(row))
                detected += any(v >= t for v, t in zip(row, thresholds))
        f1 = [0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
              for tp, fp, fn in (counts[c] for c in classes)]
        print(f"| {mode} | {right / len(sets['head'][0]):.3f} | {window_right / windows:.3f} "
              f"| {sum(f1) / len(f1):.3f} | {auroc(known_top, unknown_top):.3f} "
              f"| {detected / len(unknown_top):.3f} |")


if __name__ == "__main__":
    main()
