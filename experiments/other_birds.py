#!/usr/bin/env python3
"""Lay out recordings of *other* species from pr18's source repository, to train
with as background and to test against as unknown species.

  python3 experiments/other_birds.py GIT_DIR PR18_DIR OUT_DIR

The repository pr18 comes from (github.com/rrodzstgo/bird_audio_xeno_canto, commit
9af680f) holds 433 xeno-canto recordings from Puerto Rico; pr18 uses 176 of them.
Of the rest this keeps every recording whose species is none of pr18's 18 and whose
xeno-canto "also" list (birds the recordist heard in the background) names none of
them either, and drops the ones labelled "Identity unknown" or "Soundscape".

The kept species are split in two, alternately in order of recording count (then
name), so that no species is on both sides:
  - `negatives`: written to OUT_DIR/negatives/<Genus_species>/, and listed in
    OUT_DIR/manifest.csv with the label `background` and split `train`, beside
    pr18's own rows. Training on that manifest teaches the model other birds as
    "none of these".
  - `unknown`: written to OUT_DIR/unknown/<Genus_species>/. Species neither model
    has heard, from the same recorders and habitats: `birdsong-model evaluate
    --unknown OUT_DIR/unknown`.

OUT_DIR/pr18 is a symlink to PR18_DIR and the manifest's pr18 paths start with
`pr18/`: use `--audio-root OUT_DIR`. OUT_DIR/others.csv lists every kept recording
with its real species, side and licence. Nothing written here goes into the
repository (each recording keeps its recordist's licence).
"""
import csv
import json
import os
import subprocess
import sys
from collections import defaultdict

COMMIT = "9af680fee15e7bf34f18d375e6a5f802c2000a69"
DROPPED_LABELS = {"Identity unknown", "Soundscape"}


def git_show(repo, path):
    out = subprocess.run(["git", "-C", repo, "show", f"{COMMIT}:{path}"], capture_output=True)
    if out.returncode != 0:
        return None
    return out.stdout


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    repo, pr18, out = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    pr18_rows = list(csv.DictReader(open(os.path.join(pr18, "manifest.csv"))))
    targets = {r["scientific_name"] for r in pr18_rows}
    used = {r["xc_id"] for r in pr18_rows}
    meta = git_show(repo, "data/puerto_rico_recordings.json")
    if meta is None:
        sys.exit(f"{repo}: no data/puerto_rico_recordings.json at {COMMIT[:7]}")
    listed = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", COMMIT, "audio_files/"],
                            capture_output=True, text=True, check=True).stdout.split()
    present = {os.path.basename(p) for p in listed}

    by_species = defaultdict(list)
    for r in json.loads(meta)["recordings"]:
        xc = "XC" + r["id"]
        scientific = f"{r['gen']} {r['sp']}"
        if (f"{r['id']}.mp3" not in present or xc in used or scientific in targets
                or r["en"] in DROPPED_LABELS
                or any(a in targets for a in r.get("also", []))):
            continue
        by_species[scientific].append(r)

    order = sorted(by_species, key=lambda s: (-len(by_species[s]), s))
    side = {s: ("negatives", "unknown")[i % 2] for i, s in enumerate(order)}

    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "pr18")
    if not os.path.islink(link):
        os.symlink(pr18, link)
    fields = list(pr18_rows[0].keys())
    manifest = [dict(r, path=f"pr18/{r['path']}") for r in pr18_rows]
    others = []
    for scientific in order:
        for r in sorted(by_species[scientific], key=lambda r: int(r["id"])):
            blob = git_show(repo, f"audio_files/{r['id']}.mp3")
            if blob is None:
                # A snapshot may list its largest files without holding them.
                print(f"XC{r['id']}: not readable at {COMMIT[:7]}, left out", file=sys.stderr)
                continue
            rel = f"{side[scientific]}/{scientific.replace(' ', '_')}/XC{r['id']}.mp3"
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(blob)
            row = {k: "" for k in fields}
            row.update(path=rel, species=r["en"], scientific_name=scientific,
                       split=side[scientific], bytes=str(len(blob)), container="mp3",
                       xc_id=f"XC{r['id']}", recordist=r["rec"], licence="https:" + r["lic"],
                       source="https:" + r["url"])
            others.append(row)
            if side[scientific] == "negatives":
                manifest.append(dict(row, species="background", split="train"))

    for name, rows in (("manifest.csv", manifest), ("others.csv", others)):
        with open(os.path.join(out, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    for s in ("negatives", "unknown"):
        kept = [r for r in others if r["split"] == s]
        print(f"{s}: {len(kept)} recordings of {len({r['species'] for r in kept})} species")


if __name__ == "__main__":
    main()
