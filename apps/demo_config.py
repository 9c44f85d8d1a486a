"""The demo's settings: :class:`DemoConfig` with its budget presets, and where real recordings
are looked for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from flexsnn.errors import ConfigError

#: The demo's arms (fine-tunes of one SDT+BN base): ``sdt`` the baseline; ``mtt`` the chip recipe
#: (:data:`flexsnn.training.recipes.CHIP_RECIPE`, measured by ``benchmarks/async_gap.py`` and
#: chosen on a validation rendering by ``benchmarks/async_gap_recheck.py``: MTT with
#: distillation from the base (weight 3) and a SynOps budget, exported with floor -2 and the
#: first layer's threshold x1.75); ``mtt-plain`` the paper's MTT as published.
ARMS = ("sdt", "mtt", "mtt-plain")
SCHEMES = ARMS  # former name
PRESETS = ("default", "quick", "reproduce", "tiny")
#: speck3c1fc's conv channels in the paper (6,160 weights).
PAPER_CHANNELS: tuple[int, int, int] = (8, 16, 16)
#: speck3c1fc's conv channels of the quick preset: conv3 at 64 instead of the recipe's 128. At
#: the quick budget (1,200 recordings, 3 + 1 epochs, seed 0) the 16/32/128 net had not converged
#: (SDT 74.0 %, MTT+chip 73.3 % at T=10; seed 1: 84.3 / 83.3 %) where 16/32/64 reached 93.3 /
#: 92.7 %; at the default budget 16/32/128 is the better net (SDT 97.4 %).
QUICK_CHANNELS: tuple[int, int, int] = (16, 32, 64)
#: Real N-MNIST subset used when it sits beside the repository (development machines).
SHARED_NMNIST_SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist-small"


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo (one frozen dataclass; validated on creation).

    Attributes:
        mode: preset name written into the report (``default``, ``quick``, ``reproduce``,
            ``tiny``, or ``custom``).
        dataset: training/test data: ``"saccade-mnist"`` (offline) or ``"nmnist"``.
        data_root: N-MNIST folder when ``dataset == "nmnist"``.
        model: zoo model (a Speck net: ``speck3c1fc`` or ``speck4c``).
        channels: ``speck3c1fc``'s conv channels ``(conv1, conv2, conv3)``: ``(8, 16, 16)`` is the
            paper's net; the default and tiny presets use
            :data:`flexsnn.training.recipes.CHIP_CHANNELS`, ``(16, 32, 128)``, the chip recipe's;
            quick uses :data:`QUICK_CHANNELS`, ``(16, 32, 64)``.
            Must stay the paper's for other models.
        T: time bins of the training data (SDT's T and MTT's input-stage T).
        s: MTT configurations per step.
        r_left, r_right: MTT later-stage range ``U[T - r_left, T + r_right]`` (clipped >= 1).
        train_limit, test_limit: samples used (class-balanced; None = all).
        base_epochs: SDT epochs of the BN phase.
        finetune_epochs: epochs of each bias-free fine-tune (SDT and MTT: the same budget).
        batch_size, optimizer (``adamw``/``sgd``), lr, weight_decay: the paper's code uses
            AdamW, lr 5e-4, weight decay 0.02, batch 32, cosine schedule.
        finetune_lr: learning rate of the fine-tune phase.
        T_eval: uniform T values of the time-binned evaluation.
        float_all_T: evaluate the float (torch) models at every T of ``T_eval`` too (else only
            at ``T``; the time-binned chip curves are always complete).
        eval_limit: test samples of the time-binned and float evaluations (None = all).
        async_limit: test samples run on the asynchronous simulator (None = all).
        real_root: folder of real N-MNIST recordings to test on (None = none).
        real_limit: real recordings evaluated (None = all).
        seed: one seed for data split, initialisation, shuffling and MTT sampling.
        device: torch device for training (``"auto"``: CUDA when present, ``"cpu"``, ``"cuda"``).
        workers: processes of the asynchronous simulator's evaluation.
        threads: torch CPU threads while the demo runs (None = torch's default). One thread
            is the default: on a busy 2-core machine two threads ran training 9x slower
            (measured: 168 s vs 18 s per 1,000-sample SDT epoch at load 8).
        report_dir: where the report folder is written.
        work_dir: checkpoints and chip images (default ``<report_dir>/artifacts``).
        results_json: where the results JSON is written (None = ``<report_dir>/demo.json``).
        reuse: reuse checkpoints of an earlier run with the same training settings.
        cache_dir: saccade-mnist cache (default ``$FLEXSNN_CACHE`` / ``~/.cache/flexsnn``).
    """

    mode: str = "default"
    dataset: str = "saccade-mnist"
    data_root: Optional[str] = None
    model: str = "speck3c1fc"
    channels: tuple[int, int, int] = PAPER_CHANNELS
    T: int = 10
    s: int = 3
    r_left: int = 9
    r_right: int = 0
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    base_epochs: int = 8
    finetune_epochs: int = 4
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.02
    finetune_lr: float = 5e-4
    arms: tuple[str, ...] = ARMS
    T_eval: tuple[int, ...] = (*range(1, 11), 30, 100)
    eval_limit: Optional[int] = None
    async_limit: Optional[int] = 1000
    real_root: Optional[str] = None
    real_limit: Optional[int] = 1000
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    threads: Optional[int] = 1
    float_all_T: bool = False
    report_dir: str = "reports/demo"
    work_dir: Optional[str] = None
    results_json: Optional[str] = None
    reuse: bool = False
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.dataset not in ("saccade-mnist", "nmnist"):
            raise ConfigError("demo.dataset", self.dataset, "saccade-mnist or nmnist")
        if self.dataset == "nmnist" and not self.data_root:
            raise ConfigError("demo.data_root", self.data_root, "an N-MNIST folder for dataset nmnist",
                              "pass --data DIR (the folder holding Train/ and Test/)")
        for name in ("T", "s", "batch_size", "base_epochs", "finetune_epochs"):
            value = getattr(self, name)
            lowest = 0 if name.endswith("epochs") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ConfigError(f"demo.{name}", value, f"an integer >= {lowest}")
        ch = self.channels
        if (not isinstance(ch, tuple) or len(ch) != 3
                or any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 256 for c in ch)):
            raise ConfigError("demo.channels", ch, "three integers in [1, 256] (conv1, conv2, conv3)",
                              "use --channels 16,32,64 (the chip recipe's) or 8,16,16 (the paper's net)")
        if ch != PAPER_CHANNELS and self.model != "speck3c1fc":
            raise ConfigError("demo.channels", ch, f"{PAPER_CHANNELS} for model {self.model} (only speck3c1fc "
                              "has settable channels)", "leave --channels out")
        for name in ("r_left", "r_right"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"demo.{name}", getattr(self, name), "an integer >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError("demo.threads", self.threads, "an integer >= 1 or None (torch default)")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError("demo.workers", self.workers, "an integer >= 1")
        for name in ("train_limit", "test_limit", "eval_limit", "async_limit", "real_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"demo.{name}", value, "an integer >= 1 or None (all)")
        if not self.arms or len(set(self.arms)) != len(self.arms) or any(a not in ARMS for a in self.arms):
            raise ConfigError("demo.arms", self.arms, f"distinct names from {', '.join(ARMS)}")
        if not self.T_eval or any((not isinstance(t, int)) or t < 1 for t in self.T_eval):
            raise ConfigError("demo.T_eval", self.T_eval, "a non-empty tuple of integers >= 1")
        if self.T not in self.T_eval:
            raise ConfigError("demo.T_eval", self.T_eval, f"a tuple containing the training T ({self.T})")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError("demo.optimizer", self.optimizer, "adamw or sgd")
        if not (self.lr > 0 and self.finetune_lr > 0 and self.weight_decay >= 0):
            raise ConfigError("demo.lr", (self.lr, self.finetune_lr, self.weight_decay),
                              "positive learning rates and weight_decay >= 0")

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DemoConfig":
        """A named budget with ``overrides`` applied (None values are ignored).

        - ``default``: 4,000 generated training recordings, 5 SDT+BN epochs (AdamW, lr 3e-3),
          then 2 epochs of each fine-tune (lr 1e-3; arms sdt and mtt = the chip recipe, the
          budget ``benchmarks/async_gap.py`` measured the recipe at); 1,000 test recordings at
          T = 1..10, 30, 100, time-binned and async; up to 1,000 real recordings. The paper's
          plain MTT (``mtt-plain``, ``--arms sdt,mtt,mtt-plain``) is left out of the default:
          with 16/32/64 channels (about 2x the 8/16/16 net's time per epoch,
          35 s per base epoch at load 1) three arms at 3 fine-tune epochs were projected at
          about 22 minutes.
        - ``quick``: 1,200 training recordings, 3 + 1 epochs, 300 test and real recordings,
          arms sdt and mtt (the recipe's parts on :data:`QUICK_CHANNELS`, 16/32/64). 1,500
          recordings and 3 + 2 epochs took 229 s at load 1 (over the 3 minutes quick promises).
        The demo presets use a higher learning rate than the paper's code (5e-4 over 300
        epochs): with a few epochs, 3e-3 reached 87 % after 3 epochs where 5e-4 reached 61 %.
        - ``reproduce``: full N-MNIST from ``data_root``; the paper's code's settings
          (AdamW lr 5e-4, weight decay 0.02, batch 32, cosine, T = 10, s = 3, later stages
          from U[1, 10]); 300 base epochs and 60 fine-tune epochs (its defaults).
        - ``tiny``: a few batches; for tests.

        ``default`` and ``tiny`` train ``speck3c1fc`` with the chip recipe's channels
        (:data:`~flexsnn.training.recipes.CHIP_CHANNELS`), ``quick`` with :data:`QUICK_CHANNELS`
        (16/32/64: converges within its budget); ``reproduce`` keeps the paper's net.
        """
        from flexsnn.training.recipes import CHIP_CHANNELS

        table: dict[str, dict[str, Any]] = {
            "default": dict(mode="default", train_limit=None, test_limit=None, base_epochs=5,
                            finetune_epochs=2, lr=3e-3, finetune_lr=1e-3, eval_limit=None,
                            async_limit=1000, real_limit=1000, arms=("sdt", "mtt"), channels=CHIP_CHANNELS),
            "quick": dict(mode="quick", train_limit=1200, test_limit=300, base_epochs=3,
                          finetune_epochs=1, lr=3e-3, finetune_lr=1e-3, eval_limit=None,
                          async_limit=300, real_limit=300, arms=("sdt", "mtt"), channels=QUICK_CHANNELS),
            "reproduce": dict(mode="reproduce", dataset="nmnist", train_limit=None, test_limit=None,
                              base_epochs=300, finetune_epochs=60, lr=5e-4, finetune_lr=5e-4,
                              eval_limit=None, async_limit=None, real_limit=None, real_root=None,
                              threads=None, float_all_T=True, T_eval=tuple(range(1, 11))),
            "tiny": dict(mode="tiny", train_limit=64, test_limit=40, base_epochs=1,
                         finetune_epochs=1, batch_size=16, T_eval=(1, 5, 10, 30), eval_limit=None,
                         async_limit=20, real_limit=20, float_all_T=True, channels=CHIP_CHANNELS),
        }
        if name not in table:
            raise ConfigError("preset", name, "one of " + ", ".join(table))
        values = dict(table[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("model", "speck3c1fc") != "speck3c1fc" and overrides.get("channels") is None:
            values["channels"] = PAPER_CHANNELS  # the recipe's channels are speck3c1fc's
        if values.get("channels") is not None:
            values["channels"] = tuple(values["channels"])
        return cls(**values)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Zoo kwargs of the model's architecture (``channels`` for speck3c1fc unless the paper's)."""
        return {"channels": list(self.channels)} if self.channels != PAPER_CHANNELS else {}

    # -- derived ---------------------------------------------------------------------------
    @property
    def artifacts_dir(self) -> Path:
        """Checkpoints and chip images."""
        return Path(self.work_dir) if self.work_dir else Path(self.report_dir) / "artifacts"

    @property
    def results_path(self) -> Path:
        """The results JSON."""
        return Path(self.results_json) if self.results_json else Path(self.report_dir) / "demo.json"

    def training_key(self, phase: str) -> str:
        """Hash of every setting a phase's checkpoint depends on (for ``reuse``)."""
        keys = ["dataset", "data_root", "model", "channels", "T", "train_limit", "base_epochs", "batch_size",
                "optimizer", "lr", "weight_decay", "seed", "cache_dir"]
        if phase != "base":
            keys += ["finetune_epochs", "finetune_lr", "s", "r_left", "r_right"]
        doc = {k: getattr(self, k) for k in keys}
        doc["phase"] = phase
        if phase == "mtt":  # the recipe's parts are settings of that checkpoint too
            from flexsnn.training.recipes import CHIP_RECIPE

            doc["recipe"] = CHIP_RECIPE
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def resolve_real_root(explicit: Optional[str | Path], *, use_shared: bool = True) -> Optional[Path]:
    """The real N-MNIST folder to test on: ``explicit`` if given (must exist), else the
    shared ``nmnist-small`` beside the repository when present, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not ((path / "Train").is_dir() or (path / "Test").is_dir()):  # checked before any training
            raise ConfigError("data", str(path), "an existing N-MNIST folder (Train/ and/or Test/)",
                              "check the path, or leave --data out to skip real recordings")
        return path
    if use_shared and (SHARED_NMNIST_SMALL / "Train").is_dir():
        return SHARED_NMNIST_SMALL
    return None
