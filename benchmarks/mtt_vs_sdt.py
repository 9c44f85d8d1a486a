"""MTT vs SDT on speck3c1fc: accuracy at every inference T and the cost of an MTT epoch.

Trains the chip net (speck-iaf neurons, no BN, no biases) twice on the same data, seed and
epoch budget: SDT at T=10 and MTT (data T=10, later stages U[1, 10], s=3). Then evaluates
both at uniform T=1..10 (recordings re-binned into T frames). The cost ratio is the median
MTT pass over the median SDT pass over the same fixed batches, alternating SDT and MTT
several times in this one run so that the shared machine's load hits both alike (the
training runs' own epoch times are reported too, as ``train_epoch_seconds``). Repeats on the real
N-MNIST subset (../shared/data/nmnist-small) when it is present.

Usage::

    python benchmarks/mtt_vs_sdt.py                 # full run (about 10 min on 2 cores)
    python benchmarks/mtt_vs_sdt.py --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NMNIST_SMALL = Path(os.environ.get("FLEXSNN_NMNIST_SMALL", HERE.parents[1] / "shared" / "data" / "nmnist-small"))


def measure_epoch_cost(train_ds, *, T: int, s: int, batch_size: int, n_samples: int, repeats: int,
                       seed: int) -> dict:
    """Median seconds of an SDT and an MTT pass over the same ``n_samples`` (an "epoch" of that
    size), alternating SDT/MTT ``repeats`` times so machine load hits both alike."""
    import torch

    from flexsnn.data.frames import FrameDataset
    from flexsnn.models.zoo import build_model
    from flexsnn.training.losses import build_loss
    from flexsnn.training.schemes import SchemeConfig, sample_configs, step_generator
    from flexsnn.training.trainer import bptt_step, train_step

    frames = FrameDataset(train_ds, T=T)
    n = min(n_samples, len(frames))
    xs = torch.stack([torch.from_numpy(frames.frames(i)[0]) for i in range(n)])
    ys = torch.tensor([frames.frames(i)[1] for i in range(n)])
    batches = [(xs[i:i + batch_size].transpose(0, 1).contiguous(), ys[i:i + batch_size])
               for i in range(0, n, batch_size)]
    loss_fn = build_loss("ce")
    schemes = {"sdt": SchemeConfig(name="sdt", T=T), "mtt": SchemeConfig(name="mtt", T=T, s=s, r_left=T - 1)}
    times: dict[str, list[float]] = {"sdt": [], "mtt": []}
    warm = build_model("speck3c1fc", T=T)  # warm-up pass (allocator, kernels), not timed
    train_step(warm, *batches[0], [(T,) * warm.num_stages], loss_fn, bptt_step,
               torch.optim.AdamW(warm.parameters(), lr=1e-3))
    for rep in range(repeats):
        for key, scheme in schemes.items():
            torch.manual_seed(seed)
            model = build_model("speck3c1fc", T=T)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(batches):
                cfgs = sample_configs(scheme, model.num_stages, step_generator(seed + rep, step))
                train_step(model, x, y, cfgs, loss_fn, bptt_step, opt)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [m / s_ for s_, m in zip(times["sdt"], times["mtt"])]
    return {"epoch_seconds": med, "epoch_seconds_all": times, "samples_per_epoch": n,
            "cost_ratio_mtt_over_sdt": statistics.median(ratios), "ratio_of_medians": med["mtt"] / med["sdt"]}


def run_dataset(name: str, root: str | None, *, n_train: int | None, n_test: int | None, epochs: int,
                T: int, s: int, batch_size: int, lr: float, out: Path, seed: int,
                grad_clip: float | None = None) -> dict:
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.training.evaluate import FrameCache, accuracy_per_T
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig, train

    train_ds = load_event_dataset(name, split="train", root=root, seed=seed, limit=n_train)
    test_ds = load_event_dataset(name, split="test", root=root, seed=seed, limit=n_test)
    schemes = {
        "sdt": SchemeConfig(name="sdt", T=T),
        "mtt": SchemeConfig(name="mtt", T=T, s=s, r_left=T - 1, r_right=0),
    }
    results: dict = {"n_train": len(train_ds), "n_test": len(test_ds), "epochs": epochs}
    curves, epoch_s, histories = {}, {}, {}
    cache = FrameCache(test_ds)
    T_eval = list(range(1, T + 1))
    for key, scheme in schemes.items():
        cfg = TrainConfig(model="speck3c1fc", model_kwargs={"T": T}, dataset=name, root=root, T=T,
                          scheme=scheme, loss="ce", optimizer="adamw", lr=lr, epochs=epochs,
                          batch_size=batch_size, seed=seed, eval_every=epochs,
                          grad_clip=grad_clip)
        t0 = time.perf_counter()
        res = train(cfg, out_dir=out / "runs" / f"{name}-{key}", train_data=train_ds, test_data=test_ds,
                    overwrite=True)
        histories[key] = res.history
        epoch_s[key] = statistics.median(r["epoch_seconds"] for r in res.history)
        curves[key] = accuracy_per_T(res.model, cache, T_eval, batch_size=100)
        print(f"[{name}] {key}: trained in {time.perf_counter() - t0:.1f}s, "
              f"median epoch {epoch_s[key]:.1f}s, acc@T={T} {curves[key][T]:.4f}", flush=True)
    results.update({
        "T_eval": T_eval,
        "accuracy": {k: [curves[k][t] for t in T_eval] for k in curves},
        "train_epoch_seconds": epoch_s,
        "train_epoch_seconds_all": {k: [r["epoch_seconds"] for r in h] for k, h in histories.items()},
        "train_cost_ratio_mtt_over_sdt": epoch_s["mtt"] / epoch_s["sdt"],
        "train_history": histories,
    })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="smallest size (seconds), for tests")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON and PNG")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--no-nmnist", action="store_true", help="skip the real N-MNIST subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="AdamW learning rate for both schemes (3e-3 made MTT from scratch diverge: "
                             "summing TTMs scale the output stage's spike counts with the configuration)")
    parser.add_argument("--grad-clip", type=float, default=None, help="max gradient norm for both schemes")
    parser.add_argument("--runs", type=Path, default=None,
                        help="folder for the training runs' checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from flexsnn.io_utils import atomic_write_json, machine_info
    from flexsnn.training.evaluate import format_table, plot_accuracy_curves

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.smoke:
        size = dict(n_train=16, n_test=10, epochs=1, T=3, s=3, batch_size=8, cost_samples=8, cost_repeats=1)
    else:
        size = dict(n_train=256, n_test=200, epochs=2, T=10, s=3, batch_size=16, cost_samples=32,
                    cost_repeats=3)
    for k in ("epochs", "n_train", "n_test"):
        if getattr(args, k) is not None:
            size[k] = getattr(args, k)
    args.out.mkdir(parents=True, exist_ok=True)
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="mtt_vs_sdt-")
    runs = args.runs or Path(tmp.name)
    t0 = time.perf_counter()
    train_size = {k: v for k, v in size.items() if not k.startswith("cost_")}
    main_res = run_dataset("saccade-mnist", None, lr=args.lr, grad_clip=args.grad_clip, out=runs,
                           seed=args.seed, **train_size)
    from flexsnn.data.registry import load_event_dataset

    cost = measure_epoch_cost(load_event_dataset("saccade-mnist", split="train", seed=args.seed,
                                                 limit=size["n_train"]),
                              T=size["T"], s=size["s"], batch_size=size["batch_size"],
                              n_samples=size["cost_samples"], repeats=size["cost_repeats"], seed=args.seed)
    print(f"cost: {cost['epoch_seconds']} ratio {cost['cost_ratio_mtt_over_sdt']:.2f}", flush=True)
    result = {
        "dataset": "saccade-mnist",
        **{k: main_res[k] for k in ("T_eval", "accuracy")},
        "epoch_seconds": cost["epoch_seconds"],
        "cost_ratio_mtt_over_sdt": cost["cost_ratio_mtt_over_sdt"],
        "cost_measurement": cost,
        "model": "speck3c1fc",
        "t_protocol": "rebin",  # T' < T: whole recording binned into T' frames (flexsnn eval's default)
        "settings": {**size, "lr": args.lr, "grad_clip": args.grad_clip, "optimizer": "adamw", "loss": "ce", "seed": args.seed,
                     "mtt_stage_range": [1, size["T"]], "smoke": args.smoke},
        "details": {"saccade-mnist": main_res},
        "machine": machine_info(),
    }
    curves = {f"{k} (saccade)": dict(zip(main_res["T_eval"], v)) for k, v in main_res["accuracy"].items()}
    name = "mtt_vs_sdt_smoke" if args.smoke else "mtt_vs_sdt"
    result["nmnist_small"] = None
    result["seconds_total"] = time.perf_counter() - t0
    atomic_write_json(args.out / f"{name}.json", result)  # saccade part first; N-MNIST is added below
    plot_accuracy_curves(curves, args.out / f"{name}.png", title="speck3c1fc: SDT (T=10) vs MTT")
    if not args.no_nmnist and (NMNIST_SMALL / "Train").is_dir():
        nm = run_dataset("nmnist", str(NMNIST_SMALL), lr=args.lr, grad_clip=args.grad_clip, out=runs,
                         seed=args.seed,
                         **train_size)
        result["nmnist_small"] = {k: nm[k] for k in ("T_eval", "accuracy", "train_epoch_seconds",
                                                     "train_cost_ratio_mtt_over_sdt", "n_train", "n_test")}
        result["details"]["nmnist"] = nm
        curves.update({f"{k} (nmnist)": dict(zip(nm["T_eval"], v)) for k, v in nm["accuracy"].items()})
    result["seconds_total"] = time.perf_counter() - t0
    atomic_write_json(args.out / f"{name}.json", result)
    plot_accuracy_curves(curves, args.out / f"{name}.png", title="speck3c1fc: SDT (T=10) vs MTT")
    print(format_table(curves))
    print(f"epoch seconds: {result['epoch_seconds']}  cost ratio MTT/SDT: "
          f"{result['cost_ratio_mtt_over_sdt']:.2f}x (target <= 3.3x)")
    print(f"wrote {args.out / (name + '.json')}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
