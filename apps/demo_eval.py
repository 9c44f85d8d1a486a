"""The demo's evaluation stages: float models at each T, chip images time-binned at each T, on
the asynchronous simulator, on real recordings, and one traced sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from flexsnn.apps.demo_config import DemoConfig
from flexsnn.apps.demo_data import image_seen_in_training, limited, recording_in_generator_fit
from flexsnn.apps.demo_results import DemoResult, SampleTrace
from flexsnn.progress import ProgressFactory

def eval_float(config: DemoConfig, models: dict, test_ds, result: DemoResult,
                progress: ProgressFactory) -> None:
    """Float (torch) model accuracy at every T of ``config.T_eval`` (data binned into T frames)."""
    from flexsnn.training.evaluate import FrameCache, accuracy_per_T

    cache = FrameCache(limited(test_ds, config.eval_limit))
    for scheme, model in models.items():
        Ts = list(config.T_eval) if config.float_all_T else [config.T]
        result.models[scheme].float_acc = accuracy_per_T(model, cache, Ts, batch_size=100,
                                                         progress=progress)


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


def eval_time_binned(config: DemoConfig, images: dict, test_ds, result: DemoResult,
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


def eval_async(config: DemoConfig, images: dict, test_ds, result: DemoResult,
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


def eval_real(config: DemoConfig, images: dict, real_ds, train_ds, result: DemoResult,
               progress: ProgressFactory) -> None:
    """Both chip backends on real recordings (time-binned at the training T, async)."""
    if real_ds is None:
        return
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.deploy.time_binned import TimeBinnedBackend

    seen = image_seen_in_training(real_ds, train_ds)
    fitted = recording_in_generator_fit(real_ds, train_ds)
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
            subsets = [("in the generated training set", mask), ("not in the generated training set", ~mask)]
            if fitted is not None:  # the cleanest transfer figure: neither training nor the generator's fit
                subsets.append(("not in the generated training set, and the recording was not among "
                                "those the learned generator was fitted on", ~mask & ~fitted[: ev.n]))
            for name, m in subsets:
                if m.any():
                    res.real_subsets[name] = {"accuracy": float(np.mean(ev.predictions[m] == labels[m])),
                                              "n": int(m.sum())}


def trace_sample(config: DemoConfig, images: dict, test_ds) -> SampleTrace:
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
