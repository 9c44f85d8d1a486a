"""An SDT / MTT checkpoint pair for the early-exit and robustness benchmarks.

Either given (``--sdt PATH --mtt PATH``), or trained here with the project's trainer and
cached (``<cache>/bench-pair-<key>/``, reused by the next benchmark with the same settings):
speck3c1fc without BN on saccade-mnist at T bins, a shared SDT base, then the same fine-tune budget
(epochs, samples) with SDT and with MTT (s = 3, later stages from U[1, T]) from that base (the
paper's Speck pipeline without the BN phase, so the models export to a chip image as they
are). ``smoke``: untrained nets (weights scaled so that they spike), for pipeline tests only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PairSettings:
    T: int = 6
    train_limit: int = 800
    base_epochs: int = 1
    finetune_limit: int = 400
    finetune_epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:10]


def cache_root() -> Path:
    return Path(os.environ.get("FLEXSNN_CACHE", Path.home() / ".cache" / "flexsnn")).expanduser()


def _smoke_pair(out: Path, T: int) -> dict[str, Path]:
    import torch

    from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
    from flexsnn.models.zoo import build_model

    paths = {}
    for seed, name in ((0, "sdt"), (1, "mtt")):
        torch.manual_seed(seed)
        model = build_model("speck3c1fc", T=T)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)
        path = out / f"{name}.safetensors"
        save_checkpoint(path, model, CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                                    neuron_profile="speck-iaf", stages=model.stage_names,
                                                    t_range=(1, T), dataset="saccade-mnist",
                                                    extra={"smoke": "untrained"}))
        paths[name] = path
    return paths


def get_pair(settings: PairSettings, *, smoke: bool, sdt: Path | None = None, mtt: Path | None = None,
             work: Path | None = None, log=print) -> tuple[dict[str, Path], dict]:
    """``({"sdt": path, "mtt": path}, info)``; trains (or reuses the cache) when not given."""
    if sdt is not None and mtt is not None:
        return {"sdt": Path(sdt), "mtt": Path(mtt)}, {"source": "given"}
    if smoke:
        out = Path(work or cache_root() / "bench-pair-smoke")
        out.mkdir(parents=True, exist_ok=True)
        return _smoke_pair(out, settings.T), {"source": "smoke (untrained)"}
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig, train

    root = Path(work or cache_root() / f"bench-pair-{settings.key()}")
    s = settings
    common = dict(model="speck3c1fc", model_kwargs={"T": s.T}, dataset="saccade-mnist", T=s.T,
                  batch_size=s.batch_size, lr=s.lr, seed=s.seed, limit=s.train_limit, test_limit=100,
                  device="cpu", bn_calibration_batches=0)
    info: dict = {"source": "trained", "settings": s.__dict__, "dir": str(root)}
    base = root / "base" / "final.safetensors"
    if not base.is_file():
        log(f"training SDT base ({s.base_epochs} epochs, {s.train_limit} samples) in {base.parent}")
        train(TrainConfig(scheme=SchemeConfig(name="sdt", T=s.T), epochs=s.base_epochs, **common),
              out_dir=base.parent, overwrite=True)
    paths = {}
    for name in ("sdt", "mtt"):
        final = root / name / "final.safetensors"
        if not final.is_file():
            log(f"fine-tuning {name.upper()} ({s.finetune_epochs} epochs) in {final.parent}")
            train(TrainConfig(scheme=SchemeConfig(name=name, T=s.T, s=3), epochs=s.finetune_epochs,
                              init_checkpoint=str(base), **(common | {"limit": s.finetune_limit})),
                  out_dir=final.parent, overwrite=True)
        paths[name] = final
    for name, path in paths.items():
        info[f"{name}_metrics"] = json.loads(path.with_suffix(".json").read_text())["meta"].get("metrics", {})
    return paths, info
