"""What the C2ST studies (``c2st_history.py``, ``c2st_frames.py``, ``c2st_sample_fit.py``,
``c2st_background.py``) share: their command line, the paired data with the shipped renderer's
rates, and a C2ST over several classifier seeds."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks._s2r_data import DEFAULT_REAL, REPO, Pairs

if TYPE_CHECKING:
    from flexsnn.data.learned_dvs import LearnedDVS


def study_parser(doc: str, epochs_help: str) -> argparse.ArgumentParser:
    """The studies' options: ``--real``, ``--out``, ``--epochs`` (``epochs_help``), ``--c2st-seeds``,
    ``--c2st-epochs``, ``--seed`` and ``--smoke``; the module docstring ``doc`` as help."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the JSON")
    ap.add_argument("--epochs", type=int, default=60, help=epochs_help)
    ap.add_argument("--c2st-seeds", default="0,1", help="C2ST classifier seeds, comma-separated")
    ap.add_argument("--c2st-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, metavar="NPZ",
                    help="learned renderer to study (default: the shipped one; an earlier version: "
                         "git show <commit>:data/assets/learned_dvs.npz > old.npz)")
    ap.add_argument("--smoke", action="store_true", help="6 pairs per class, 1 epoch, one C2ST seed of 2 epochs")
    return ap


@dataclass
class Study:
    """The paired recordings and the shipped renderer's view of their images."""

    args: argparse.Namespace
    pairs: Pairs
    fit: np.ndarray  # positions in ``pairs`` of the fit half
    held: np.ndarray  # ... and of the held-out half
    images: np.ndarray  # [N, 28, 28] in [0, 1], pair by pair
    model: LearnedDVS  # the renderer studied (``--model``)
    rates: np.ndarray  # [N, 2, n_bins, 34, 34] its expected events
    seeds: list[int]  # C2ST classifier seeds
    rng: np.random.Generator

    @property
    def real(self) -> list[np.ndarray]:
        return self.pairs.real

    def halves(self, gen: list[np.ndarray]) -> tuple[list[np.ndarray], ...]:
        """Real and ``gen`` (pair by pair) recordings of the fit half, then of the held-out half."""
        real = self.real
        return ([real[i] for i in self.fit], [gen[i] for i in self.fit],
                [real[i] for i in self.held], [gen[i] for i in self.held])

    def c2st(self, gen: list[np.ndarray]) -> list[float]:
        """Held-out C2ST accuracy of the real recordings against ``gen`` (pair by pair), per seed."""
        from benchmarks._s2r_c2st import c2st_accuracy

        halves = self.halves(gen)
        return [c2st_accuracy(*halves, seed=s, epochs=self.args.c2st_epochs) for s in self.seeds]

    def views(self, gen: list[np.ndarray], names: tuple[str, ...]) -> dict[str, float]:
        """The single-view C2STs ``names`` of :func:`~benchmarks._s2r_c2st.c2st_views` (first seed)."""
        from benchmarks._s2r_c2st import c2st_views

        return c2st_views(*self.halves(gen), seed=self.seeds[0], epochs=self.args.c2st_epochs, names=names)


def load_study(ap: argparse.ArgumentParser, argv: list[str] | None, *, patterns: bool = True) -> Study:
    """Parse ``argv`` (smoke mode: 6 pairs per class, 1 epoch, one C2ST seed of 2 epochs), seed
    torch and load the pairs, their images and the renderer's rates (``--model``, default the
    shipped one; without its sensor patterns unless ``patterns``)."""
    import torch

    from flexsnn.data.learned_dvs import LearnedDVS
    from flexsnn.data.saccade import load_mnist_images

    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.c2st_epochs, args.c2st_seeds = 1, 2, "0"
    torch.manual_seed(args.seed)
    pairs = Pairs(args.real, limit_per_class=6 if args.smoke else None)
    images = load_mnist_images()[0][pairs.image_index]
    model = LearnedDVS() if args.model is None else LearnedDVS(args.model)
    if not patterns:
        model = model.with_patterns({})
    return Study(args=args, pairs=pairs, fit=pairs.half(held_out=False), held=pairs.half(held_out=True),
                 images=images, model=model, rates=model.rates(images),
                 seeds=[int(s) for s in args.c2st_seeds.split(",")], rng=np.random.default_rng(args.seed))


def study_record(study: Study) -> dict:
    """The JSON fields every study writes: seeds, split sizes, smoke flag, settings."""
    a = study.args
    return {"c2st_seeds": study.seeds, "n_fit": int(study.fit.size), "n_held_out": int(study.held.size),
            "smoke": a.smoke, "settings": vars(a) | {"real": str(a.real), "out": str(a.out)}}


def write_result(study: Study, stem: str, result: dict) -> Path:
    """Write ``result`` atomically to ``<out>/<stem>.json`` (``<stem>_smoke.json`` in smoke mode)."""
    from flexsnn.io_utils import atomic_write_json

    path = Path(study.args.out) / (f"{stem}_smoke.json" if study.args.smoke else f"{stem}.json")
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return path
