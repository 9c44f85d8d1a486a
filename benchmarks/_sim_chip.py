"""A reproducible trained chip image for the simulator-speed benchmarks.

``trained_chip(settings)`` trains speck3c1fc with SDT on saccade-mnist at ``T`` bins with the
project's trainer and the demo's two phases (BN base, then bias removal and a BN-free
fine-tune; plain IAF neurons without BN diverged on generator-v3 data at lr 3e-3), caches the
checkpoint under ``<cache>/bench-simchip-<key>/`` (``$FLEXSNN_CACHE``, default
``~/.cache/flexsnn``; the key hashes the settings and the generator version, so a change
retrains) and exports it with :func:`flexsnn.converters.export.export_chip_image`. The next
run with the same settings only exports the cached checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from flexsnn.data.saccade import GENERATOR_VERSION


@dataclass(frozen=True)
class ChipSettings:
    """Training budget of the benchmark chip (brief: a few minutes on one core)."""

    T: int = 10
    train_limit: int = 4000
    test_limit: int = 300
    epochs: int = 5
    finetune_epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    weight_decay: float = 0.02
    seed: int = 0
    #: the saccade-mnist generator the chip trains on: a new generator retrains the chip
    generator_version: int = GENERATOR_VERSION

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def cache_root() -> Path:
    return Path(os.environ.get("FLEXSNN_CACHE", Path.home() / ".cache" / "flexsnn")).expanduser()


def trained_chip(settings: ChipSettings = ChipSettings(), *, cache: Path | None = None,
                 log=print) -> tuple[object, dict]:
    """``(ChipImage, info)``: the exported trained speck3c1fc, trained here or from the cache.

    ``info``: ``source``, ``checkpoint``, ``settings`` and the run's test ``metrics``.
    """
    from flexsnn.converters.export import export_chip_image
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig, train

    s = settings
    out = Path(cache or cache_root()) / f"bench-simchip-{s.key()}"
    final = out / "final.safetensors"
    source = "cached"
    if not final.is_file():
        log(f"training speck3c1fc (SDT, T={s.T}, {s.epochs}+{s.finetune_epochs} epochs, "
            f"{s.train_limit} samples) in {out}")
        common = dict(model="speck3c1fc", dataset="saccade-mnist", T=s.T,
                      scheme=SchemeConfig(name="sdt", T=s.T), batch_size=s.batch_size,
                      weight_decay=s.weight_decay, seed=s.seed, limit=s.train_limit,
                      test_limit=s.test_limit, device="cpu")
        base = out / "base"
        train(TrainConfig(model_kwargs={"T": s.T, "batch_norm": True}, epochs=s.epochs, lr=s.lr,
                          bn_calibration_batches=10, **common), out_dir=base)
        train(TrainConfig(model_kwargs={"T": s.T}, epochs=s.finetune_epochs, lr=s.finetune_lr,
                          phase="bias_removal", init_checkpoint=str(base / "final.safetensors"),
                          bn_calibration_batches=0, **common), out_dir=out)
        source = "trained"
    meta = json.loads(final.with_suffix(".json").read_text())["meta"]
    image, _ = export_chip_image(final)
    return image, {"source": source, "checkpoint": str(final), "settings": asdict(s),
                   "metrics": meta.get("metrics", {})}
