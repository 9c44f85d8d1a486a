"""What the demo measured: one :class:`ModelResult` per model, a :class:`SampleTrace` for the
raster plot, and :class:`DemoResult`, whose :meth:`~DemoResult.to_json` is ``demo.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from flexsnn.apps.demo_config import DemoConfig
from flexsnn.apps.paper_figures import PAPER_SPECK_TABLE


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
