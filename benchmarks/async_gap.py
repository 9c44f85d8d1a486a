"""Chip-faithful training ablation: how much accuracy the asynchronous chip loses against the
time-binned model, per training recipe, and at how many SynOps (issue 15).

Every arm fine-tunes the same SDT+BN base checkpoint (the demo's first phase: speck3c1fc with
BN, SDT at T=10, 4,000 saccade-mnist recordings, 5 epochs, AdamW lr 3e-3, seed 0) with bias
removal, the same data, epochs and learning rate, then exports a ChipImage and runs it:

- float model at T=10 (and T=1..10 for ``sdt`` and ``mtt``, for ``mtt_vs_sdt.json``);
- time-binned backend at T=10, 30, 100 on 1,000 generated test recordings; async simulator on
  the same recordings (SynOps per sample from the simulator);
- real recordings (all of nmnist-small): time-binned T=10 and async.

Arms (see :func:`flexsnn.training.recipes.chip_finetune_config`): ``sdt``, ``mtt`` (the
paper's MTT), then MTT with the parts of the recipe: ``floor`` (min_v_mem -4 in training and on
the chip; ``floor8``: -8), ``deep`` (the chip image gets floor -16 whatever the trained floor;
the arm reuses the checkpoint of the arm without it), ``budget`` (SynOps hinge at 1.5M per
sample), ``qat`` (fake quantization), ``fine`` (input and later stages' T log-uniform in
[1, 100]), ``max`` (the full-T configuration in every MTT step), ``kd`` (distillation from the
base), ``th2`` (core position 0's threshold x2 after discretization, export only), ``chip`` (one
more pass per step at the chip's configuration: every stage at T=100, floor -16, rate_M). Runs live in ``--work``/``full-g<generator version>`` (a new saccade generator retrains
everything). Each (arm, seed) run is stored as its own JSON there, so that two processes can
run different seeds side by side and a stopped run loses nothing; every finished run rewrites
``async_gap.json`` from all stored runs.

Usage::

    python benchmarks/async_gap.py --seeds 0 --arms sdt,mtt,mtt-floor   # one process per seed
    python benchmarks/async_gap.py --aggregate                          # JSON + PNG from runs
    python benchmarks/async_gap.py --smoke --out /tmp/bench             # seconds, for tests
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NMNIST_SMALL = Path(os.environ.get("FLEXSNN_NMNIST_SMALL", HERE.parents[1] / "shared" / "data" / "nmnist-small"))

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(HERE.parents[0]))
from benchmarks._async_gap_arms import ARMS, training_arm, training_parts  # noqa: E402

KEYS = ("float_T10", "async", "real_time_binned_T10", "real_async", "synops_per_sample", "train_seconds")
TB_T = (10, 30, 100)
SYNOPS_TARGET = 2.0e6


def base_config(*, smoke: bool, seed: int = 0, floor: float | None = None, width: int | list | None = None,
                device: str = "cpu"):
    """The demo's SDT+BN phase (``flexsnn demo`` default preset); ``floor``: train it with this
    ``min_v_mem`` instead of the speck-iaf -1 (arms with a ``base_floor`` part); ``width``:
    speck3c1fc's conv1 channels instead of 8, or a list of its three conv channels (arms with a
    ``base_width`` part)."""
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig

    kwargs: dict[str, Any] = {"batch_norm": True}
    if floor is not None:
        kwargs["neuron"] = {"min_v_mem": float(floor)}
    if isinstance(width, (list, tuple)):
        kwargs["channels"] = [int(c) for c in width]
    elif width is not None:
        kwargs["width"] = int(width)
    return TrainConfig(model="speck3c1fc", model_kwargs=kwargs, T=3 if smoke else 10,
                       scheme=SchemeConfig(name="sdt", T=3 if smoke else 10), optimizer="adamw",
                       lr=3e-3, weight_decay=0.02, epochs=1 if smoke else 5, batch_size=16 if smoke else 32,
                       seed=seed, device=device, phase="train", eval_every=1 if smoke else 5,
                       bn_calibration_batches=10)


def base_dir_name(floor: float | None, width: int | list | None) -> str:
    """Folder of an arm's own SDT+BN base: ``base-floor16``, ``base-w16``, ``base-w16-32-64``."""
    tag = "" if floor is None else f"-floor{-floor:g}"
    if width is not None:
        tag += "-w" + ("-".join(map(str, width)) if isinstance(width, list) else str(width))
    return "base" + tag


def _hashable(width: int | list | None) -> int | tuple | None:
    return tuple(width) if isinstance(width, list) else width


def same_config(stored: dict | None, cfg) -> bool:
    """True when a stored ``TrainConfig`` dict is ``cfg`` (settings added to TrainConfig since the
    run was stored take their defaults, so old runs of the same recipe are reused)."""
    from flexsnn.errors import ConfigError
    from flexsnn.training.trainer import TrainConfig

    if not stored:
        return False
    try:
        stored = TrainConfig.from_dict(dict(stored)).to_dict()
    except (ConfigError, TypeError, ValueError):  # a config this version cannot read differs
        return False
    return json.loads(json.dumps(stored)) == json.loads(json.dumps(cfg.to_dict()))


def train_or_reuse(cfg, out: Path, train_ds, test_ds):
    """Train ``cfg`` into ``out`` unless a finished run with the same config is there.
    Returns ``(final checkpoint, training seconds (sum of the epochs' times), history)``."""
    from flexsnn.training.trainer import train

    final = out / "final.safetensors"
    if final.is_file() and (out / "config.json").is_file():
        if same_config(json.loads((out / "config.json").read_text()).get("config"), cfg):
            hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
            return final, float(sum(r.get("epoch_seconds", 0.0) for r in hist)), hist
    # an interrupted run of the same config continues from its last finished epoch
    resume = (out / "state.safetensors").is_file() and (out / "config.json").is_file() and \
        same_config(json.loads((out / "config.json").read_text()).get("config"), cfg)
    res = train(cfg, out_dir=out, resume=resume, train_data=train_ds, test_data=test_ds)
    return res.final_path, float(sum(r.get("epoch_seconds", 0.0) for r in res.history)), res.history


def evaluate_run(ckpt: Path, test_ds, real_ds, *, chip_path: Path, per_T: bool, async_limit: int | None,
                 spike: str = "single", deploy_floor: float | None = None,
                 threshold_scale: dict[int, float] | None = None) -> dict[str, Any]:
    """Float, time-binned, async and real-data figures of one fine-tuned checkpoint (with every
    neuron's floor set to ``deploy_floor`` first when given)."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.deploy.evaluate import evaluate_dataset
    from flexsnn.deploy.time_binned import TimeBinnedBackend
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.evaluate import FrameCache, accuracy_per_T

    if deploy_floor is None:
        model, _meta = load_model(ckpt)
    else:
        from flexsnn.training.recipes import with_floor

        model, _meta = with_floor(ckpt, deploy_floor)
    model.eval()
    cache = FrameCache(test_ds)
    Ts = list(range(1, 11)) if per_T else [10]
    float_acc = accuracy_per_T(model, cache, Ts, batch_size=100)
    image, _ = export_chip_image(model)
    if threshold_scale:
        from flexsnn.converters.thresholds import scale_thresholds

        image = scale_thresholds(image, {int(k): float(v) for k, v in threshold_scale.items()})
    image.save(chip_path)
    out: dict[str, Any] = {"float_T10": float_acc[10], "float_per_T": {str(t): float_acc[t] for t in Ts},
                           "time_binned": {}, "time_binned_synops": {},
                           "threshold_low": [c.threshold_low for c in image.cores],
                           "threshold_high": [c.threshold_high for c in image.cores]}
    for T in TB_T:
        tb = TimeBinnedBackend(T=T, batch_size=100)
        tb.load(image)
        ev = evaluate_dataset(tb, test_ds)
        out["time_binned"][str(T)] = float(ev.accuracy)
        out["time_binned_synops"][str(T)] = float(ev.synops_mean)
    t0 = time.perf_counter()
    sim = AsyncSimulator(spike=spike)
    sim.load(image)
    ev = evaluate_dataset(sim, test_ds, limit=async_limit)
    out.update({"async": float(ev.accuracy), "synops_per_sample": float(ev.synops_mean),
                "async_n": int(ev.samples), "async_samples_per_s": float(ev.samples / (time.perf_counter() - t0)),
                "load_average": os.getloadavg()[0]})
    out["real_time_binned_T10"] = out["real_async"] = None
    if real_ds is not None:
        tb = TimeBinnedBackend(T=10, batch_size=100)
        tb.load(image)
        out["real_time_binned_T10"] = float(evaluate_dataset(tb, real_ds).accuracy)
        ev = evaluate_dataset(sim, real_ds)
        out["real_async"] = float(ev.accuracy)
        out["real_synops_per_sample"] = float(ev.synops_mean)
        out["real_n"] = int(ev.samples)
    return out


def measure_fine_cost(train_ds, *, base: Path, steps: int, batch_size: int, rounds: int = 2) -> dict[str, Any]:
    """Seconds per optimizer step of MTT at the demo's ranges (BPTT) and of the fine ranges
    (input and later stages log-uniform in [1, 100]) with BPTT, rate_M and rate_S, on the same
    batches and the same sampled configurations; methods alternate every round so that the
    shared machine's load hits them alike. Peak memory per T: ``rate_vs_bptt.json``."""
    import statistics

    import torch

    from flexsnn.data.frames import FrameDataset
    from flexsnn.training.losses import build_loss
    from flexsnn.training.recipes import chip_finetune_config
    from flexsnn.training.schemes import sample_configs, step_generator
    from flexsnn.training.trainer import build_optimizer, build_training_model, get_step_fn, train_step

    coarse = chip_finetune_config(base, scheme="mtt", floor=-4.0)
    fine = chip_finetune_config(base, scheme="mtt", floor=-4.0, fine=True)
    frames = {10: FrameDataset(train_ds, T=10), 100: FrameDataset(train_ds, T=100)}
    idx = list(range(steps * batch_size))
    batches = {T: [(torch.stack([torch.from_numpy(f.frames(i)[0]) for i in idx[k:k + batch_size]]).transpose(0, 1)
                    .contiguous(), torch.tensor([f.frames(i)[1] for i in idx[k:k + batch_size]]))
                   for k in range(0, len(idx), batch_size)] for T, f in frames.items()}
    methods = {"mtt_T10_bptt": (coarse, "bptt"), "fine_bptt": (fine, "bptt"), "fine_rate_M": (fine, "rate_M"),
               "fine_rate_S": (fine, "rate_S")}
    times: dict[str, list[float]] = {k: [] for k in methods}
    loss = build_loss("ce")
    for _ in range(rounds):
        for name, (cfg, backprop) in methods.items():
            model, _, _ = build_training_model(cfg)
            opt, _ = build_optimizer(model, cfg, 10)
            step_fn = get_step_fn(backprop)
            data = batches[cfg.scheme.data_T]
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(data):
                configs = sample_configs(cfg.scheme, model.num_stages, step_generator(0, step))
                train_step(model, x, y, configs, loss, step_fn, opt, tfsnn=model,
                           resample_input=cfg.scheme.draws_input)
            times[name].append((time.perf_counter() - t0) / len(data))
    sec = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds_per_step": sec, "ratio_over_mtt_T10_bptt": {k: v / sec["mtt_T10_bptt"] for k, v in sec.items()},
            "batch_size": batch_size, "steps": steps, "rounds": rounds, "load_average": os.getloadavg()[0],
            "setup": "s=3 configurations per step; fine: input and later stages' T log-uniform in [1, 100] "
                     "(data binned into 100 frames, summed into each drawn input T); the same sampled "
                     "configurations (seeded per step) for every method"}


def _mean(values: list) -> Any:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(work: Path, out: Path, *, name: str = "async_gap", settings: dict | None = None) -> dict:
    """Build ``<name>.json`` (+ PNG) from every stored run in ``work/runs``; returns the result."""
    from flexsnn.io_utils import atomic_write_json, machine_info

    runs: dict[str, dict[int, dict]] = {}
    for p in sorted((work / "runs").glob("*.json")):
        r = json.loads(p.read_text())
        runs.setdefault(r["arm"], {})[int(r["seed"])] = r
    arms: dict[str, Any] = {}
    for arm, by_seed in runs.items():
        seeds = sorted(by_seed)
        rows = [by_seed[s] for s in seeds]
        entry: dict[str, Any] = {"seeds": seeds, "parts": rows[0].get("parts")}
        for k in KEYS:
            entry[k] = _mean([r.get(k) for r in rows])
        entry["time_binned"] = {str(T): _mean([r["time_binned"][str(T)] for r in rows]) for T in TB_T}
        entry["time_binned_synops"] = {str(T): _mean([r["time_binned_synops"][str(T)] for r in rows]) for T in TB_T}
        entry["async_minus_time_binned_T10"] = entry["async"] - entry["time_binned"]["10"]
        if entry["real_async"] is not None and entry["real_time_binned_T10"] is not None:
            entry["real_async_minus_time_binned_T10"] = entry["real_async"] - entry["real_time_binned_T10"]
        entry["spread_async"] = (max(r["async"] for r in rows) - min(r["async"] for r in rows)) if len(rows) > 1 else None
        entry["per_seed"] = {str(s): {k: by_seed[s].get(k) for k in (*KEYS, "time_binned", "float_per_T",
                                                                        "time_binned_synops", "epoch_seconds",
                                                                        "load_average")}
                             for s in seeds}
        arms[arm] = entry
    sdt_tb10 = arms.get("sdt", {}).get("time_binned", {}).get("10")
    for entry in arms.values():
        gap_ok = entry["async"] >= entry["time_binned"]["10"] - 0.003
        real_ok = (entry["real_async"] is not None and entry["real_time_binned_T10"] is not None
                   and entry["real_async"] >= entry["real_time_binned_T10"] - 0.01)
        sdt_ok = sdt_tb10 is not None and entry["async"] >= sdt_tb10 - 0.003
        synops_ok = entry["synops_per_sample"] is not None and entry["synops_per_sample"] <= SYNOPS_TARGET
        entry["targets"] = {"async_vs_time_binned_T10": gap_ok, "real_async_vs_real_T10": real_ok,
                            "async_vs_sdt_time_binned_T10": sdt_ok, "synops_le_2M": synops_ok,
                            "multi_seed": len(entry["seeds"]) >= 2}
        # beside the target (against the standard net): SDT of the arm's own width, so that a
        # wider recipe shows what width alone buys
        width = (entry.get("parts") or {}).get("base_width") or 8
        plain = {"scheme": "sdt", **({} if width == 8 else {"base_width": width})}
        same_arm = next((a for a, e in arms.items() if (e.get("parts") or {}) == plain), None)
        same = arms[same_arm]["time_binned"]["10"] if same_arm else None
        entry["width"] = width
        entry["sdt_same_width_time_binned_T10"] = same
        entry["async_minus_sdt_same_width_T10"] = None if same is None else entry["async"] - same
    best = None
    if arms:
        def score(item):
            e = item[1]
            return (sum(bool(v) for v in e["targets"].values()), round(e["async"], 6),
                    -(e["synops_per_sample"] or 0))
        best = max(arms.items(), key=score)[0]
    cost_path = work / "fine_cost.json"
    result = {"best_arm": best, "arms": arms,
              "fine_T_cost": json.loads(cost_path.read_text()) if cost_path.is_file() else None,
              "best_arm_rule": "most targets met (async >= T10 - 0.3 pt, real async >= real T10 - 1 pt, "
                               "async >= SDT T10 - 0.3 pt, <= 2.0M SynOps, >= 2 seeds), then highest async, "
                               "then fewest SynOps",
              "settings": settings or {}, "machine": machine_info()}
    atomic_write_json(out / f"{name}.json", result)
    plot(result, out / f"{name}.png")
    return result


def plot(result: dict, path: Path) -> None:
    """Accuracy against bin width (ms, for a 300 ms recording) per arm, async point at the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, e in result["arms"].items():
        widths = [300.0 / T for T in TB_T]
        accs = [100 * e["time_binned"][str(T)] for T in TB_T]
        line, = ax.plot(widths, accs, "o-", label=f"{arm} ({e['synops_per_sample'] / 1e6:.1f}M SynOps)")
        ax.plot([1.0], [100 * e["async"]], "*", ms=12, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("time-bin width, ms (300 ms recording); star: asynchronous simulator")
    ax.set_ylabel("accuracy, % (1,000 generated test recordings)")
    ax.set_title("chip images: time-binned vs asynchronous, per training recipe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    from flexsnn.io_utils import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_mtt_vs_sdt(result: dict, work: Path, out: Path) -> None:
    """``mtt_vs_sdt.json`` (BENCHMARKS.md keys) from the ``sdt`` and ``mtt`` arms' runs."""
    from flexsnn.io_utils import atomic_write_json, machine_info

    arms = result["arms"]
    if "sdt" not in arms or "mtt" not in arms:
        return
    T_eval = list(range(1, 11))
    acc, per_seed, epoch_s = {}, {}, {}
    for k in ("sdt", "mtt"):
        seeds = arms[k]["per_seed"]
        acc[k] = [_mean([s["float_per_T"].get(str(t)) for s in seeds.values() if s.get("float_per_T")]) for t in T_eval]
        per_seed[k] = {sd: [s["float_per_T"].get(str(t)) for t in T_eval] for sd, s in seeds.items()}
        epochs = max(1, int(result.get("settings", {}).get("epochs", 1)))
        epoch_s[k] = _mean([s["train_seconds"] / epochs for s in seeds.values() if s.get("train_seconds")])
    doc = {"dataset": "saccade-mnist", "T_eval": T_eval, "accuracy": acc, "accuracy_per_seed": per_seed,
           "epoch_seconds": epoch_s,
           "cost_ratio_mtt_over_sdt": (epoch_s["mtt"] / epoch_s["sdt"]) if epoch_s["sdt"] else None,
           "model": "speck3c1fc",
           "source": "benchmarks/async_gap.py arms sdt and mtt: bias-free fine-tunes of one SDT+BN base "
                     "(4,000 generated training recordings, the demo's budget), float models on 1,000 "
                     "generated test recordings; epoch seconds are the fine-tunes' mean epochs (the "
                     "machine is shared by other jobs, see load_average: the ratio is rough)",
           "load_average": {k: [s.get("load_average") for s in arms[k]["per_seed"].values()] for k in ("sdt", "mtt")},
           "settings": result.get("settings", {}), "machine": machine_info()}
    atomic_write_json(out / "mtt_vs_sdt.json", doc)
    from flexsnn.training.evaluate import plot_accuracy_curves

    plot_accuracy_curves({k: dict(zip(T_eval, v)) for k, v in acc.items()}, out / "mtt_vs_sdt.png",
                         title="speck3c1fc, 4,000 recordings: SDT (T=10) vs MTT (float, mean of seeds)")


SWEEP_FLOORS = (-1.0, -4.0, -8.0, -16.0, -32.0, -128.0)
SWEEP_MULTS = (0.7, 0.85, 1.2, 1.5, 2.0)
SWEEP_T = (1, 3, 10, 30, 100, 300)
#: floors (threshold units) tried on one core at a time, the others at -16
SWEEP_CORE_FLOORS = (-1.0, -2.0, -4.0, -8.0)


def core_floor(image, core: int, floor: float):
    """A copy of ``image`` whose core at position ``core`` has ``threshold_low = round(floor *
    threshold_high)`` (``floor`` in threshold units, as the converter exports ``min_v_mem``, whose
    rounding of ``floor * threshold * scale`` can differ by up to ``|floor| / 2`` state units)."""
    from dataclasses import replace

    cores = tuple(replace(c, threshold_low=int(round(float(floor) * c.threshold_high))) if i == core else c
                  for i, c in enumerate(image.cores))
    return replace(image, cores=cores)


def deploy_sweep(work: Path, arm: str, seeds: list[int], test_ds, out: Path, real_ds=None) -> dict:
    """What deployment alone can change, on the trained checkpoints of ``arm`` (no training):
    the async accuracy and SynOps against the exported floor, against one core's threshold
    scaled by a factor (floor -16; ``threshold_high`` only), and the time-binned accuracy
    against T up to 300 (floor -16); with ``real_ds``, the real recordings' async accuracy at
    floor -16 and with core 0's threshold scaled. Writes ``async_gap_deploy.json``."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.converters.thresholds import scale_thresholds
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.deploy.evaluate import evaluate_dataset
    from flexsnn.deploy.time_binned import TimeBinnedBackend
    from flexsnn.io_utils import atomic_write_json, machine_info
    from flexsnn.training.recipes import with_floor

    def run_async(image, ds=test_ds) -> dict:
        sim = AsyncSimulator(spike="single")
        sim.load(image)
        ev = evaluate_dataset(sim, ds)
        return {"async": float(ev.accuracy), "synops_per_sample": float(ev.synops_mean)}

    per_seed: dict[str, Any] = {}
    for seed in seeds:
        ckpt = work / f"{training_arm(arm)}-s{seed}" / "final.safetensors"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: no trained checkpoint of arm {arm} seed {seed}; run the arm first")
        images = {f: export_chip_image(with_floor(ckpt, f)[0].eval())[0] for f in SWEEP_FLOORS}
        deep = images[-16.0]
        row: dict[str, Any] = {"floor": {str(f): run_async(im) for f, im in images.items()}, "threshold": {}}
        for core in range(len(deep.cores)):
            for a in SWEEP_MULTS:
                row["threshold"][f"core{core}x{a:g}"] = run_async(scale_thresholds(deep, {core: a}))
        scale = {int(k): float(v) for k, v in (ARMS[arm].get("threshold_scale") or {}).items()}
        floor_variants = {f"core{core}floor{f:g}": scale_thresholds(core_floor(deep, core, f), scale)
                          for core in range(len(deep.cores)) for f in SWEEP_CORE_FLOORS}
        row["core_floor"] = {name: run_async(img) for name, img in floor_variants.items()}
        if real_ds is not None:
            row["real"] = {"floor-16": run_async(deep, real_ds),
                           **{f"core0x{a:g}": run_async(scale_thresholds(deep, {0: a}), real_ds) for a in (1.5, 2.0)}}
            best = max(row["core_floor"], key=lambda k: row["core_floor"][k]["async"])
            row["real"][best] = run_async(floor_variants[best], real_ds)
        row["time_binned"] = {}
        for T in SWEEP_T:
            tb = TimeBinnedBackend(T=T, batch_size=100)
            tb.load(deep)
            ev = evaluate_dataset(tb, test_ds)
            row["time_binned"][str(T)] = {"accuracy": float(ev.accuracy), "synops_per_sample": float(ev.synops_mean)}
        per_seed[str(seed)] = row
        print(f"{arm} seed {seed}: async by floor " + ", ".join(f"{f}: {100 * v['async']:.1f}" for f, v in row["floor"].items())
              + "; best threshold change " + max(((k, v["async"]) for k, v in row["threshold"].items()),
                                                  key=lambda kv: kv[1])[0], flush=True)
    doc = {"arm": arm, "seeds": seeds, "per_seed": per_seed, "test_recordings": len(test_ds),
           "setup": "trained checkpoints of the arm, exported again: async accuracy and SynOps per floor "
                    "(threshold units); per core, threshold_high times a factor at floor -16; core_floor: one "
                    "core's floor changed (the others at -16), with the arm's own threshold_scale; time-binned "
                    "accuracy per T at floor -16; real: all nmnist-small recordings, async (for core_floor: "
                    "the variant with the best generated async)", "load_average": os.getloadavg()[0], "machine": machine_info()}
    atomic_write_json(out / "async_gap_deploy.json", doc)
    return doc


def print_table(result: dict) -> None:
    head = f"{'arm':<24}{'seeds':>6}{'float10':>8}{'tb10':>7}{'tb30':>7}{'tb100':>7}{'async':>7}{'realT10':>8}{'realAs':>8}{'SynOps':>8}{'train s':>8}"
    print(head)
    for arm, e in result["arms"].items():
        f = lambda v: "   -" if v is None else f"{100 * v:6.1f}"  # noqa: E731
        print(f"{arm:<24}{len(e['seeds']):>6}{f(e['float_T10']):>8}{f(e['time_binned']['10']):>7}"
              f"{f(e['time_binned']['30']):>7}{f(e['time_binned']['100']):>7}{f(e['async']):>7}"
              f"{f(e['real_time_binned_T10']):>8}{f(e['real_async']):>8}"
              f"{e['synops_per_sample'] / 1e6:7.2f}M{e['train_seconds']:>8.0f}")
    print(f"best arm: {result['best_arm']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="sdt,mtt-floor-deep,mtt,mtt-floor-budget-deep,sdt-deep,mtt-floor,"
                                          "mtt-deep,mtt-floor-budget",
                        help=f"comma-separated arms, run in this order; known: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1", help="fine-tune seeds (the base is shared: seed 0)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tune epochs of every arm")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate of every arm")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("FLEXSNN_CACHE", Path.home() / ".cache" / "flexsnn")) / "async_gap",
                        help="checkpoints, chip images and per-run JSON")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON and PNG")
    parser.add_argument("--aggregate", action="store_true", help="only rebuild the JSON/PNG from stored runs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="where the base and the fine-tunes train (evaluation runs on the CPU backends)")
    parser.add_argument("--prepare", action="store_true",
                        help="only train the SDT+BN bases the listed arms start from, then stop (lets several "
                             "processes run arms side by side without training one base twice)")
    parser.add_argument("--deploy-sweep", metavar="ARM", default=None,
                        help="no training: re-export ARM's trained checkpoints with other floors and "
                             "per-core thresholds, run them (async_gap_deploy.json)")
    parser.add_argument("--cost", action="store_true",
                        help="only measure seconds per step of fine temporal configurations (BPTT, rate_M, rate_S)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "async_gap_smoke" if args.smoke else "async_gap"
    settings = {"epochs": args.epochs, "lr": args.lr, "train_recordings": 64 if args.smoke else 4000,
                "test_recordings": 24 if args.smoke else 1000, "real": "nmnist-small (all)",
                "base": "speck3c1fc+BN, SDT T=10, 5 epochs, AdamW lr 3e-3, seed 0 (demo default)",
                "async_spike": "single (simulator default)", "smoke": args.smoke, "train_device": args.device}
    from flexsnn.data.saccade import GENERATOR_VERSION

    settings["generator_version"] = GENERATOR_VERSION
    # runs are keyed by the generator version: a new generator retrains the base and every arm
    work = args.work / ("smoke" if args.smoke else f"full-g{GENERATOR_VERSION}")
    if args.aggregate:
        res = aggregate(work, args.out, name=name, settings=settings)
        if not args.smoke:
            write_mtt_vs_sdt(res, work, args.out)
        print_table(res)
        return 0
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.io_utils import atomic_write_json
    from flexsnn.training.recipes import chip_finetune_config

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    lim = dict(train=64, test=24, real=16) if args.smoke else dict(train=None, test=None, real=None)
    train_ds = load_event_dataset("saccade-mnist", split="train", seed=0, limit=lim["train"])
    test_ds = load_event_dataset("saccade-mnist", split="test", seed=0, limit=lim["test"])
    real_ds = None
    if (NMNIST_SMALL / "Train").is_dir():
        real_ds = load_event_dataset("nmnist", split="all", root=str(NMNIST_SMALL), seed=0, limit=lim["real"])
    else:
        print(f"no real recordings at {NMNIST_SMALL}: real columns are null", flush=True)
    if args.deploy_sweep:
        if args.deploy_sweep not in ARMS:
            parser.error(f"unknown arm {args.deploy_sweep!r}; known: {', '.join(ARMS)}")
        deploy_sweep(work, args.deploy_sweep, [int(s) for s in args.seeds.split(",")], test_ds, args.out, real_ds)
        return 0
    (work / "runs").mkdir(parents=True, exist_ok=True)
    bcfg = base_config(smoke=args.smoke, device=args.device)
    if args.prepare:
        for key in dict.fromkeys((ARMS[a].get("base_floor"), _hashable(ARMS[a].get("base_width"))) for a in arms):
            floor, width = key[0], list(key[1]) if isinstance(key[1], tuple) else key[1]
            cfg = base_config(smoke=args.smoke, floor=floor, width=width, device=args.device)
            path, secs, _ = train_or_reuse(cfg, work / (base_dir_name(floor, width) if key != (None, None) else "base"),
                                           train_ds, test_ds)
            print(f"base {path} ({secs:.0f} s)", flush=True)
        return 0
    base, base_s, _ = train_or_reuse(bcfg, work / "base", train_ds, test_ds)
    print(f"base: {base} ({base_s:.0f} s)", flush=True)
    if args.cost:
        cost = measure_fine_cost(train_ds, base=base, steps=2 if args.smoke else 4,
                                 batch_size=8 if args.smoke else 32, rounds=1 if args.smoke else 2)
        atomic_write_json(work / "fine_cost.json", cost)
        print(json.dumps(cost["seconds_per_step"]), json.dumps(cost["ratio_over_mtt_T10_bptt"]), flush=True)
        print_table(aggregate(work, args.out, name=name, settings=settings))
        return 0
    for seed in seeds:
        for arm in arms:
            parts = ARMS[arm]
            train_parts = training_parts(parts)
            arm_base = base
            floor, width = train_parts.pop("base_floor", None), train_parts.pop("base_width", None)
            if floor is not None or width is not None:  # a base of its own: at that floor / width
                arm_base, _, _ = train_or_reuse(base_config(smoke=args.smoke, floor=floor, width=width, device=args.device),
                                                work / base_dir_name(floor, width), train_ds, test_ds)
            if args.smoke and "chip_T" in train_parts:  # seconds: the chip pass at 9 frames
                train_parts["chip_T"] = 9
            cfg = chip_finetune_config(arm_base, **{"T": bcfg.T, **train_parts}, epochs=1 if args.smoke else args.epochs,
                                       lr=args.lr, seed=seed, batch_size=bcfg.batch_size, device=args.device,
                                       **({"fine_T_max": 9} if args.smoke else {}))
            run_dir = work / f"{training_arm(arm)}-s{seed}"
            run_json = work / "runs" / f"{arm}-s{seed}.json"
            if run_json.is_file() and same_config(json.loads(run_json.read_text()).get("config"), cfg):
                print(f"{arm} seed {seed}: already evaluated ({run_json})", flush=True)
                continue
            ckpt, secs, hist = train_or_reuse(cfg, run_dir, train_ds, test_ds)
            ev = evaluate_run(ckpt, test_ds, real_ds, chip_path=run_dir / f"{arm}.chip",
                              per_T=arm in ("sdt", "mtt"), async_limit=None,
                              deploy_floor=parts.get("deploy_floor"),
                              threshold_scale=parts.get("threshold_scale"))
            epochs = [r["epoch_seconds"] for r in hist if "epoch_seconds" in r]
            rec = {"arm": arm, "seed": seed, "parts": parts, "train_seconds": secs,
                   "epoch_seconds": sorted(epochs)[len(epochs) // 2] if epochs else None,
                   "train_synops_per_sample": hist[-1].get("synops_per_sample") if hist else None,
                   "train_test_acc": hist[-1].get("test_acc") if hist else None,
                   "config": cfg.to_dict(), **ev}
            atomic_write_json(run_json, rec)
            print(f"{arm} seed {seed}: float {ev['float_T10']:.3f} tb10 {ev['time_binned']['10']:.3f} "
                  f"tb100 {ev['time_binned']['100']:.3f} async {ev['async']:.3f} real {ev['real_time_binned_T10']} "
                  f"/ {ev['real_async']} synops {ev['synops_per_sample'] / 1e6:.2f}M train {secs:.0f}s", flush=True)
            res = aggregate(work, args.out, name=name, settings=settings)
            if not args.smoke:
                write_mtt_vs_sdt(res, work, args.out)
    print_table(aggregate(work, args.out, name=name, settings=settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
