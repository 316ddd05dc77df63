#!/usr/bin/env python3
"""Sanity check of the installed BirdNET ONNX on real recordings (no Rust involved).

Decodes audio files with soundfile (libsndfile >= 1.1 reads mp3), mixes to mono,
resamples to 48 kHz, cuts 3-s windows, runs birdnet_v2.4.onnx with onnxruntime in
one batch per file and prints BirdNET's top labels per window (confidence =
sigmoid(logit), i.e. BirdNET's default sensitivity 1.0).

Needs the venv made by install.sh plus a decoder and a resampler:
  DIR=${BIRDSONG_BIRDNET_DIR:-$HOME/.local/share/birdsong/birdnet}
  $DIR/venv/bin/pip install soundfile==0.14.0 scipy==1.17.1
  $DIR/venv/bin/python scripts/birdnet/demo.py FILE_OR_DIR...

With a directory, the folder name is taken as the expected species (xeno-canto
style "Common_Name" folders), and a summary of top-1 hits is printed.
"""
import argparse
import glob
import math
import os
import sys
import time

SR = 48000
WIN = 144000


def load_48k_mono(path):
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        g = math.gcd(SR, sr)
        x = resample_poly(x, SR // g, sr // g).astype(np.float32)
    return x


def windows(x, max_windows):
    import numpy as np
    n = max(1, len(x) // WIN)
    if max_windows:
        n = min(n, max_windows)
    out = np.zeros((n, WIN), np.float32)
    for i in range(n):
        seg = x[i * WIN:(i + 1) * WIN]
        out[i, :len(seg)] = seg          # a recording shorter than 3 s is zero-padded
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="audio files or folders of them")
    ap.add_argument("--dir", default=os.environ.get("BIRDSONG_BIRDNET_DIR",
                                                    os.path.expanduser("~/.local/share/birdsong/birdnet")))
    ap.add_argument("--windows", type=int, default=4, help="first N 3-s windows per file (0 = all)")
    ap.add_argument("--files", type=int, default=0, help="at most N files per folder (0 = all)")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--quiet", action="store_true", help="only per-file top-1 and the summary")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(args.dir, "birdnet_v2.4.onnx"), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    with open(os.path.join(args.dir, "labels.txt"), encoding="utf-8") as f:
        labels = [l.split("_", 1) for l in f.read().splitlines()]

    jobs = []
    for p in args.paths:
        if os.path.isdir(p):
            files = sorted(f for f in glob.glob(os.path.join(p, "*")) if f.lower().endswith((".mp3", ".wav", ".flac", ".ogg")))
            if args.files:
                files = files[:args.files]
            expect = os.path.basename(os.path.normpath(p)).replace("_", " ")
            jobs += [(f, expect) for f in files]
        else:
            jobs.append((p, None))

    stats = {}
    t_infer, n_win = 0.0, 0
    for path, expect in jobs:
        x = load_48k_mono(path)
        batch = windows(x, args.windows)
        t0 = time.time()
        logits, emb = sess.run(["logits", "embedding"], {inp: batch})
        t_infer += time.time() - t0
        n_win += len(batch)
        conf = 1.0 / (1.0 + np.exp(-np.clip(logits, -15, 15)))
        print("%s (%.1f s, %d windows)%s" % (os.path.relpath(path), len(x) / SR, len(batch),
                                              "  expected: %s" % expect if expect else ""))
        hits = 0
        for w in range(len(batch)):
            order = np.argsort(-conf[w])[:args.top]
            if expect and labels[order[0]][1] == expect:
                hits += 1
            if not args.quiet:
                print("  %5.1f-%5.1f s  " % (w * 3, w * 3 + 3) + "; ".join(
                    "%s (%s) %.2f" % (labels[k][1], labels[k][0], conf[w, k]) for k in order))
        # file-level: species with the highest max confidence over the windows
        best = int(np.argmax(conf.max(axis=0)))
        print("  file top-1: %s %.2f" % (labels[best][1], conf[:, best].max()))
        if expect:
            s = stats.setdefault(expect, [0, 0, 0, 0])
            s[0] += 1
            s[1] += int(labels[best][1] == expect)
            s[2] += len(batch)
            s[3] += hits
    if stats:
        print("\nsummary (top-1 equals the folder's species)")
        for sp, (nf, fh, nw, wh) in stats.items():
            print("  %-28s files %d/%d   windows %d/%d" % (sp, fh, nf, wh, nw))
    if n_win:
        print("onnxruntime: %d windows in %.1f s (%.0f ms/window, 1 thread)" % (n_win, t_infer, 1000 * t_infer / n_win))
    return 0


if __name__ == "__main__":
    sys.exit(main())
