"""One arm of the sim-to-real benchmark: train speck3c1fc on generated events only, test it on
generated and on real recordings of the held-out images.

Budget: the demo's default base phase (``apps/demo.py`` preset ``default``): speck3c1fc with
BatchNorm, SDT at T = 10, AdamW lr 3e-3 (cosine), weight decay 0.02, batch 32, 5 epochs,
4,000 training recordings, one torch thread. Results are cached per (arm settings, seed) in
``<work>/arm-<key>.json`` so that an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Budget:
    """Training budget of every arm (defaults: the demo's default base phase)."""

    n_train: int = 4000
    epochs: int = 5
    lr: float = 3e-3
    weight_decay: float = 0.02
    batch_size: int = 32
    T: int = 10
    eval_T: tuple[int, ...] = (5, 10)


@dataclass(frozen=True)
class Arm:
    """What an arm changes: generator parameters (a dict of SaccadeParams fields) and the
    training-time event augmentations."""

    name: str
    params: dict = field(default_factory=dict)
    event_augment: str = ""
    #: training seeds of this arm (None: the benchmark's --seeds)
    seeds: tuple[int, ...] | None = None
    #: speck3c1fc kwargs beyond BN (e.g. ``{"channels": [16, 32, 64]}``); {} = the paper's net
    model_kwargs: dict = field(default_factory=dict)

    def key(self, seed: int, budget: Budget) -> str:
        """Cache key: settings, seed and a fingerprint of the generator's output (so a
        generator change that alters these parameters' recordings retrains, and one that
        does not, such as a new feature switched off, reuses the result)."""
        import dataclasses

        from flexsnn.data.saccade import SaccadeParams

        from flexsnn.data.saccade import OPTIONS_OFF

        from benchmarks._s2r_data import FEATURES_OFF

        off = {**FEATURES_OFF, **OPTIONS_OFF}
        canonical = {k: v for k, v in dataclasses.asdict(SaccadeParams(**self.params)).items()
                     if off.get(k, _UNSET) != v}
        doc = {"params": canonical, "aug": self.event_augment, "seed": seed,
               "budget": budget.__dict__, "gen": generator_fingerprint(self.params)}
        if self.model_kwargs:  # absent for the paper's net, so its cached runs keep their keys
            doc["model_kwargs"] = self.model_kwargs
        blob = json.dumps(doc, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: marks a parameter that :data:`~benchmarks._s2r_data.FEATURES_OFF` does not list
_UNSET = object()


def generator_fingerprint(params: dict) -> str:
    """Hash of three recordings generated with ``params`` (generator seed 0)."""
    from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images

    images, _ = load_mnist_images()
    gen = SaccadeGenerator(SaccadeParams(**params), seed=0)
    h = hashlib.sha256()
    for k in (0, 2500, 4999):
        h.update(gen.generate(images[k], k).tobytes())
    return h.hexdigest()[:16]


def generated_all(params: dict, cache_dir: Path | None = None):
    """The whole 5,000-image generated set for ``params`` (cached on disk), generator seed 0."""
    from flexsnn.data.saccade import SaccadeMNIST, SaccadeParams

    return SaccadeMNIST(split="all", seed=0, params=SaccadeParams(**params), cache_dir=cache_dir)


def run_arm(arm: Arm, seed: int, pairs, work: Path, budget: Budget = Budget(), *,
            log=print) -> dict:
    """Train and evaluate one (arm, seed); cached in ``work``. Returns the per-seed record."""
    from benchmarks._s2r_data import Subset, training_images

    path = work / f"arm-{arm.key(seed, budget)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ho_images = pairs.image_index[pairs.half(held_out=True)]
    t0 = time.perf_counter()
    full = generated_all(arm.params)
    gen_seconds = time.perf_counter() - t0
    train_ds = Subset(full, training_images(ho_images, budget.n_train), "saccade-mnist train")
    gen_test = Subset(full, ho_images, "saccade-mnist held-out")
    return train_and_score(arm.name, seed, train_ds, gen_test, pairs, path, budget,
                           event_augment=arm.event_augment, model_kwargs=arm.model_kwargs,
                           record={"params": arm.params, "generation_or_cache_seconds": gen_seconds}, log=log)


def train_and_score(name: str, seed: int, train_ds, gen_test, pairs, path: Path, budget: Budget = Budget(), *,
                    event_augment: str = "", model_kwargs: dict | None = None, record: dict | None = None,
                    log=print) -> dict:
    """Train speck3c1fc on ``train_ds`` (generated recordings of the training images, ``Subset``
    with ``indices`` = image indices), test on ``gen_test`` and on the real held-out recordings of
    ``pairs``, write the per-seed record (plus ``record``) atomically to ``path`` and return it."""
    import torch

    from flexsnn.io_utils import atomic_write_json

    from benchmarks._s2r_data import EventList

    torch.set_num_threads(1)
    model_kwargs = model_kwargs or {}
    ho = pairs.half(held_out=True)
    real_test = EventList([pairs.real[i] for i in ho], pairs.labels[ho], "nmnist held-out")
    assert not set(train_ds.indices) & set(pairs.image_index[ho]), "held-out images leaked into training"

    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig, train
    from flexsnn.training.evaluate import accuracy_per_T

    extra = {"event_augment": event_augment} if event_augment else {}
    cfg = TrainConfig(model="speck3c1fc", model_kwargs={"batch_norm": True, **model_kwargs}, T=budget.T,
                      scheme=SchemeConfig(name="sdt", T=budget.T), optimizer="adamw", lr=budget.lr,
                      weight_decay=budget.weight_decay, epochs=budget.epochs,
                      batch_size=budget.batch_size, seed=seed, device="cpu",
                      eval_every=budget.epochs, **extra)
    t0 = time.perf_counter()
    res = train(cfg, out_dir=path.parent / f"run-{path.stem}", train_data=train_ds, test_data=gen_test)
    train_seconds = time.perf_counter() - t0
    model = res.model
    gen_acc = accuracy_per_T(model, gen_test, list(budget.eval_T), batch_size=100)
    real_acc = accuracy_per_T(model, real_test, list(budget.eval_T), batch_size=100)
    T = budget.T
    out = {
        "arm": name, "seed": seed, "event_augment": event_augment, "model_kwargs": model_kwargs,
        **(record or {}),
        "generated_test_accuracy": gen_acc[T], "real_accuracy": real_acc[T],
        "transfer_gap_pt": 100.0 * (gen_acc[T] - real_acc[T]),
        "generated_by_T": {str(k): v for k, v in gen_acc.items()},
        "real_by_T": {str(k): v for k, v in real_acc.items()},
        "n_train": len(train_ds), "generated_n": len(gen_test), "real_n": len(real_test),
        "train_seconds": train_seconds, "history": res.history,
    }
    atomic_write_json(path, out)
    log(f"{name} seed {seed}: generated {gen_acc[T]:.4f} real {real_acc[T]:.4f} "
        f"gap {out['transfer_gap_pt']:+.1f} pt ({train_seconds:.0f} s)")
    return out


def summarize_arm(records: list[dict]) -> dict:
    """Mean and spread over seeds of an arm's per-seed records."""
    def stat(key: str) -> dict:
        v = np.array([r[key] for r in records], dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                "per_seed": v.tolist()}

    return {k: stat(k) for k in ("generated_test_accuracy", "real_accuracy", "transfer_gap_pt")}
