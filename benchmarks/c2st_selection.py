"""Do the shipped renderer's own draws hold recordings that pass for real? Choosing among them.

Every study so far changed how a recording is drawn. This one keeps the shipped renderer and
asks whether, among several of its draws of an image, some look real: discriminators of the
C2ST's architecture are trained on the fit half (its real recordings against ``--train-draws``
draws of each of its images, the real side repeated to balance), then, for every image of both
halves, ``--candidates`` further draws are scored and one is kept:

- **one draw**: the first candidate (the shipped renderer as it is);
- **importance resampling**: a candidate drawn with probability proportional to
  ``exp(logit_real - logit_generated)`` averaged over the discriminators, i.e. to their
  estimate of the density ratio real / generated (sampling-importance-resampling; with a
  perfect discriminator and infinitely many candidates, draws from the real distribution);
- **greedy**: the candidate the discriminators find most real.

The kept recordings then face the usual C2ST (a fresh classifier per seed, trained on the fit
half's pairs, tested on the held-out half's). The discriminators never see a held-out real
recording. Their own held-out accuracy against one draw per image is reported too: a classifier
that trains on several draws per image, which the C2ST's one draw does not allow.

Writes ``benchmarks/results/c2st_selection.json`` (``arms``: ``c2st``, ``c2st_per_seed``;
``discriminators``: their seeds and held-out accuracies; the spread of their logits within and
between images; the machine's load average at start and end) and prints a table.

    python benchmarks/c2st_selection.py            # ~3 min on 2 cores
    python benchmarks/c2st_selection.py --candidates 36 --name c2st_selection_k36   # ~6 min
    python benchmarks/c2st_selection.py --smoke --out /tmp/selection
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def resample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
    """For each image, the index of one candidate drawn with probability ``softmax(logits /
    temperature)`` over the candidates. ``logits``: ``[K candidates, N images]``; returns ``[N]``."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (for the most real candidate use argmax)")
    w = logits / temperature
    p = np.exp(w - w.max(axis=0))
    p /= p.sum(axis=0)
    cum = np.cumsum(p, axis=0)
    u = rng.random(logits.shape[1])
    return np.minimum((cum < u).sum(axis=0), logits.shape[0] - 1)


def realness(nets: list, features: np.ndarray) -> np.ndarray:
    """Mean over ``nets`` of ``logit_real - logit_generated`` for ``features`` ``[N, C, 34, 34]``."""
    import torch

    x = torch.from_numpy(features)
    total = np.zeros(len(features))
    with torch.no_grad():
        for net in nets:
            out = net(x)
            total += (out[:, 1] - out[:, 0]).numpy()
    return total / len(nets)


def _draws_per_image(option: str):
    """argparse type of a draw count: an integer >= 1, refused at parse time, before any data."""
    def parse(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option}={value}: give at least 1 draw per image")
        return value
    return parse


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks._s2r_c2st import _train, accuracy, c2st_features

    ap = study_parser(__doc__, "discriminator epochs")
    ap.add_argument("--train-draws", type=_draws_per_image("--train-draws"), default=4, help="draws per fit image the discriminators train on")
    ap.add_argument("--candidates", type=_draws_per_image("--candidates"), default=12, help="draws per image to choose from")
    ap.add_argument("--disc-seeds", default="11,12,13", help="discriminator seeds, comma-separated")
    ap.add_argument("--name", default="c2st_selection", help="output stem: <out>/<name>.json")
    ap.set_defaults(epochs=10)
    study = load_study(ap, argv)
    a = study.args
    if a.smoke:
        a.train_draws, a.candidates, a.disc_seeds = 1, 2, "11"
    t_start, load_start = time.perf_counter(), os.getloadavg()
    n, fit, held, real = len(study.real), study.fit, study.held, study.real
    rng = np.random.default_rng(a.seed)
    draws = [[study.model.sample(study.rates[i], rng) for i in range(n)]
             for _ in range(a.train_draws + a.candidates)]
    print(f"  drew {len(draws)} x {n} recordings ({time.perf_counter() - t_start:.0f} s)", flush=True)
    train_gen = [draws[m][i] for m in range(a.train_draws) for i in fit]
    train_real = [real[i] for _ in range(a.train_draws) for i in fit]
    test_gen = [draws[0][i] for i in held]
    nets, disc = [], []
    for seed in (int(s) for s in a.disc_seeds.split(",")):
        net, xte, yte = _train(c2st_features, train_real, train_gen, [real[i] for i in held], test_gen,
                               seed=seed, epochs=a.epochs, batch_size=64)
        acc = accuracy(net, xte, yte)
        nets.append(net)
        disc.append({"seed": seed, "held_out_accuracy": acc})
        print(f"  discriminator {seed}: held-out accuracy {acc:.3f} against one draw per image", flush=True)
    candidates = draws[a.train_draws:]
    logits = np.stack([realness(nets, c2st_features(c)) for c in candidates])  # [K, N]
    pick = {"one draw": np.zeros(n, int),
            "importance resampling": resample(logits, np.random.default_rng(a.seed + 1)),
            "greedy (most real)": logits.argmax(axis=0)}
    result: dict = {"model": str(study.model.path), "train_draws": a.train_draws, "candidates": a.candidates,
                    "discriminator_epochs": a.epochs, "discriminators": disc,
                    "logit_sd_within_image": float(logits.std(axis=0).mean()),
                    "logit_sd_between_images": float(logits.mean(axis=0).std()), "arms": {}}
    for name, idx in pick.items():
        acc = study.c2st([candidates[idx[i]][i] for i in range(n)])
        result["arms"][name] = {"c2st_per_seed": acc, "c2st": float(np.mean(acc))}
        print(f"  {name:24s} C2ST {np.mean(acc):.3f} ({', '.join(f'{x:.3f}' for x in acc)})", flush=True)
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start,
               "load_average": {"start": load_start, "end": os.getloadavg()}, **provenance()}
    write_result(study, a.name, result)
    return result


if __name__ == "__main__":
    main()
