"""Would a convolutional network over the spectrogram classify xc3 better than the MLP on
band statistics? A PyTorch check, run before building such a network in burn.

Both networks see the same 5 s windows of the same 32-band mel map (librosa, 22 050 Hz,
128 mel bands pooled 4 by 4 in power, dB relative to the window's maximum floored at
-80 dB: the band profile's pooled bands, over the whole window rather than the trimmed
one):

* `cnn`: four 3x3 convolutions (16, 32, 64, 64 channels) with batch norm and ReLU, 2x2 max
  pooling after the first three, max and mean over time of each (channel, band), dropout
  0.5, a linear layer. AdamW (lr 1e-3, weight decay 1e-4), batch 32, class weights.
* `mlp`: the reference network (512-256-128, dropout 0.5/0.4/0.3) on each band's maximum,
  90th percentile and standard deviation over the window (96 inputs, standardised).

Training windows start every 1.25 s (`--random-crops`: as many windows as that, at random
offsets drawn anew each epoch); evaluation windows every 5 s, and the recording's
prediction is the mean of its windows' probabilities.

    python experiments/cnn_probe.py --audio-root ../shared/data/xc3 --arch cnn --seeds 1 2 3   # train -> test
    python experiments/cnn_probe.py --audio-root ../shared/data/xc3 --arch mlp --cv --fold-seed 1 --seeds 1 2

    python experiments/cnn_probe.py --time 10     # ms per training step and forward pass, batch of 32

`--cv`: 5-fold cross-validation by recording on the train split (stratified by species),
pooled over folds. `--predictions P` writes every evaluated window's probabilities in the
format of `birdsong-model evaluate --predictions`, for `combine.py`. Needs torch, librosa, numpy, pandas and scikit-learn; one thread. Prints
one JSON line per seed.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

# librosa, pandas and scikit-learn are imported where they are used, so that `--time`
# runs with torch and numpy alone.

FRAMES = 216  # 5 s at 22 050 Hz, hop 512
TRAIN_HOP = 54  # 1.25 s
BANDS = 32


def band_power(path):
    """The recording's 32 pooled mel bands (power), bands x frames."""
    import librosa

    y, sr = librosa.load(path, sr=22050, mono=True)
    s = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128, power=2.0
    )
    return s.reshape(BANDS, 4, -1).mean(axis=1).astype(np.float32)


def to_db(p):
    """One window's map in dB relative to its maximum, scaled to about [-1, 1]."""
    d = 10 * np.log10(np.maximum(p, 1e-10))
    d = np.maximum(d - d.max(), -80.0)
    return ((d + 40.0) / 40.0)[None].astype(np.float32)


def pad(p):
    return np.pad(p, ((0, 0), (0, FRAMES - p.shape[1]))) if p.shape[1] < FRAMES else p


def windows(p, hop):
    p = pad(p)
    return [to_db(p[:, s : s + FRAMES]) for s in range(0, p.shape[1] - FRAMES + 1, hop)]


def band_stats(x):
    d = x[0]
    return np.concatenate([d.max(1), np.percentile(d, 90, axis=1), d.std(1)]).astype(
        np.float32
    )


class Mlp(nn.Module):
    def __init__(self, k, inputs):
        super().__init__()
        self.f = nn.Sequential(
            nn.Linear(96, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.4),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(128, k),
        )  # fmt: skip
        self.mu = inputs.mean(0)
        self.sd = inputs.std(0) + 1e-6

    def forward(self, x):
        if x.dim() == 4:
            x = torch.from_numpy(np.stack([band_stats(v) for v in x.numpy()]))
        return self.f((x - self.mu) / self.sd)


class Cnn(nn.Module):
    def __init__(self, k, channels=(16, 32, 64, 64)):
        super().__init__()
        layers, c0, bands = [], 1, BANDS
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c0, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
                bands //= 2
            c0 = c
        self.f = nn.Sequential(*layers)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(c0 * bands * 2, k)

    def forward(self, x):
        h = self.f(x)
        h = torch.cat([h.amax(3), h.mean(3)], 1).flatten(1)
        return self.fc(self.drop(h))


def train(args, maps, labels, k, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    y_all = np.array(labels)
    if args.random_crops:
        x, y = list(maps), y_all
        count = np.array([max(1, (p.shape[1] - FRAMES) // TRAIN_HOP + 1) for p in x])
    else:
        x, y = [], []
        for p, label in zip(maps, labels):
            w = windows(p, TRAIN_HOP)
            x += w
            y += [label] * len(w)
        y = np.array(y)
        count = np.ones(len(y), dtype=int)
    per_class = np.array([count[y == c].sum() for c in range(k)])
    weight = torch.tensor(per_class.sum() / (k * per_class), dtype=torch.float32)
    if args.arch == "mlp":
        inputs = torch.from_numpy(np.stack([band_stats(w) for w in x]))
        net, x = Mlp(k, inputs), list(inputs)
        decay, epochs = 1.6e-5, args.epochs or 60
    else:
        net = Cnn(k)
        decay, epochs = 1e-4, args.epochs or 20
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=decay)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    for _ in range(epochs):
        net.train()
        if args.random_crops:
            order = np.repeat(np.arange(len(x)), count)
            rng.shuffle(order)
        else:
            order = rng.permutation(len(x))
        for b in range(0, len(order), 32):
            batch = order[b : b + 32]
            if args.random_crops:
                xb = []
                for i in batch:
                    p = x[i]
                    s = rng.integers(0, p.shape[1] - FRAMES + 1) if p.shape[1] > FRAMES else 0
                    xb.append(to_db(pad(p)[:, s : s + FRAMES]))
            else:
                xb = [x[i] for i in batch]
            xb = torch.from_numpy(np.stack(xb))
            opt.zero_grad()
            loss_fn(net(xb), torch.from_numpy(y[batch])).backward()
            opt.step()
    net.eval()
    return net


def predict(net, maps):
    with torch.no_grad():
        return [
            torch.softmax(net(torch.from_numpy(np.stack(windows(p, FRAMES)))), 1).numpy()
            for p in maps
        ]


def scores(probs, labels, k):
    wy = np.concatenate([[y] * len(p) for p, y in zip(probs, labels)])
    wp = np.concatenate(probs)
    guess = wp.argmax(1)
    f1 = []
    for c in range(k):
        tp = ((guess == c) & (wy == c)).sum()
        wrong = ((guess == c) != (wy == c)).sum()
        f1.append(2 * tp / max(1, 2 * tp + wrong))
    return {
        "window_accuracy": round(float((guess == wy).mean()), 4),
        "window_macro_f1": round(float(np.mean(f1)), 4),
        "recording_accuracy": round(
            float(np.mean([p.mean(0).argmax() == y for p, y in zip(probs, labels)])), 4
        ),
        "window_log_loss": round(
            float(-np.mean(np.log(np.maximum(wp[np.arange(len(wy)), wy], 1e-7)))), 4
        ),
        "windows": int(len(wy)),
    }


def time_steps(iterations):
    """Milliseconds per training step and per forward pass of the CNN on a batch of 32
    maps: the figures `cargo run --release --manifest-path experiments/conv_timing/Cargo.toml`
    prints for burn."""
    net = Cnn(3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(32, 1, BANDS, FRAMES)
    y = torch.arange(32) % 3
    start = time.perf_counter()
    for _ in range(iterations):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    step = (time.perf_counter() - start) * 1e3 / iterations
    net.eval()
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(iterations):
            net(x)
    forward = (time.perf_counter() - start) * 1e3 / iterations
    print(json.dumps({"training_step_ms": round(step, 1), "forward_ms": round(forward, 1)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio-root")
    ap.add_argument("--time", type=int, metavar="N", help="only time N CNN training steps")
    ap.add_argument("--manifest", help="default: AUDIO_ROOT/manifest.csv")
    ap.add_argument("--arch", choices=["cnn", "mlp"], default="cnn")
    ap.add_argument("--cv", action="store_true")
    ap.add_argument("--fold-seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--epochs", type=int, help="default: 20 (cnn), 60 (mlp)")
    ap.add_argument("--random-crops", action="store_true")
    ap.add_argument("--predictions", metavar="JSONL",
                    help="write each evaluated window's probabilities, one line per recording and seed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.time:
        return time_steps(args.time)
    if not args.audio_root:
        ap.error("--audio-root is required")
    import pandas as pd
    from sklearn.model_selection import StratifiedKFold

    manifest = pd.read_csv(args.manifest or os.path.join(args.audio_root, "manifest.csv"))
    classes = sorted(manifest.species.unique())
    k = len(classes)
    train_rows = manifest[manifest.split == "train"].reset_index(drop=True)
    test_rows = manifest[manifest.split == "test"].reset_index(drop=True)
    load = lambda rows: [band_power(os.path.join(args.audio_root, p)) for p in rows.path]
    label = lambda rows: [classes.index(s) for s in rows.species]
    train_maps, train_labels = load(train_rows), label(train_rows)
    test_maps = [] if args.cv else load(test_rows)
    predictions = open(args.predictions, "w") if args.predictions else None
    for seed in args.seeds:
        start = time.process_time()
        if args.cv:
            ids, labels, probs = train_rows.path, train_labels, [None] * len(train_rows)
            folds = StratifiedKFold(5, shuffle=True, random_state=args.fold_seed)
            for f, (fit, held) in enumerate(folds.split(train_rows.path, train_labels)):
                net = train(
                    args,
                    [train_maps[i] for i in fit],
                    [train_labels[i] for i in fit],
                    k,
                    seed * 100 + f,
                )
                for i, p in zip(held, predict(net, [train_maps[i] for i in held])):
                    probs[i] = p
        else:
            net = train(args, train_maps, train_labels, k, seed)
            ids, labels, probs = test_rows.path, label(test_rows), predict(net, test_maps)
        out = {"arch": args.arch, "seed": seed, "cv": args.cv}
        if args.cv:
            out["fold_seed"] = args.fold_seed
        out.update(scores(probs, labels, k))
        out["wrong"] = [
            os.path.basename(i) for i, p, y in zip(ids, probs, labels) if p.mean(0).argmax() != y
        ]
        out["cpu_s"] = round(time.process_time() - start, 1)
        print(json.dumps(out), flush=True)
        for i, p, y in zip(ids, probs, labels) if predictions else []:
            line = {"arch": args.arch, "seed": seed, "recording": i, "label": classes[y],
                    "classes": classes, "windows": p.astype(float).tolist()}
            predictions.write(json.dumps(line) + "\n")
    if predictions:
        predictions.close()


if __name__ == "__main__":
    main()
