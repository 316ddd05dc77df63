#!/usr/bin/env python3
"""librosa's throughput on the reference clips, for the ratio in audio/README.md.

Usage: BIRDSONG_SHARED_DIR=../shared python experiments/librosa_rate.py
Times `features_reference.features` (trim + the 95 features) on the 20
reference clips already decoded to PCM, single-threaded (OMP/MKL threads 1),
median of 5 passes after a warm-up; prints seconds of audio per second of
process CPU time (comparable with the Rust bench's per-thread CPU time) and
of wall time.
"""
import os
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import librosa  # noqa: E402

SHARED = os.environ.get("BIRDSONG_SHARED_DIR", os.path.join(os.path.dirname(__file__), "../../shared"))
sys.path.insert(0, os.path.join(SHARED, "reference"))
import features_reference as fr  # noqa: E402

clips = sorted(os.path.join(SHARED, "reference/clips", f)
               for f in os.listdir(os.path.join(SHARED, "reference/clips")) if f.endswith(".wav"))
pcm = [sf.read(p, dtype="float32")[0] for p in clips]
audio_s = sum(len(y) for y in pcm) / 22050


def one_pass():
    for y in pcm:
        yt, _ = librosa.effects.trim(y, top_db=23)
        fr.features(yt, 22050)


one_pass()
wall, cpu = [], []
for _ in range(5):
    t, c = time.perf_counter(), time.process_time()
    one_pass()
    cpu.append(time.process_time() - c)
    wall.append(time.perf_counter() - t)
w, c = float(np.median(wall)), float(np.median(cpu))
print(f"librosa {librosa.__version__}: features from PCM, {audio_s:.0f} s of audio per pass; "
      f"median CPU {c:.3f} s = {audio_s / c:.0f} s audio per CPU s; "
      f"median wall {w:.3f} s = {audio_s / w:.0f} s audio per wall s")
