"""CE vs TET vs TMC: accuracy and calibration (ECE, AdaECE) per time step on saccade-mnist.

Usage::

    python benchmarks/loss_comparison.py [--smoke] [--out DIR]

speck3c1fc (with BN) is trained with BPTT for the same budget (epochs, samples, batch, optimizer,
seed, data order) with each loss (``ce`` = CE of the time-mean output, ``tet``, ``tmc``); then the
test set is evaluated at T steps and, for every t = 1..T, the prediction from the cumulative mean of
the logits up to t gives accuracy, ECE and AdaECE (15 bins). Writes ``loss_comparison.json``
(keys in shared BENCHMARKS.md, plus details), ``loss_comparison.png`` (accuracy and ECE vs t) and
``loss_comparison_reliability.png`` (reliability diagrams at the last step) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

LOSS_NAMES = ("ce", "tet", "tmc")


def train_and_calibrate(loss_name: str, *, T: int, train_limit: int, test_limit: int, epochs: int, batch: int,
                        lr: float, seed: int) -> dict:
    """Train speck3c1fc with ``loss_name``; return per-step metrics and the raw confidences."""
    import torch

    from flexsnn.data.frames import frame_loader, to_time_major
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.models.zoo import build_model
    from flexsnn.seeding import seed_everything
    from flexsnn.training.calibration_metrics import CalibrationAccumulator
    from flexsnn.training.losses import build_loss

    seed_everything(seed)
    train_ds = load_event_dataset("saccade-mnist", split="train", seed=0, limit=train_limit)
    test_ds = load_event_dataset("saccade-mnist", split="test", seed=0, limit=test_limit)
    train_loader = frame_loader(train_ds, T=T, batch_size=batch, shuffle=True, seed=seed)
    test_loader = frame_loader(test_ds, T=T, batch_size=256, shuffle=False)
    model = build_model("speck3c1fc", batch_norm=True, T=T).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(train_loader)))
    loss_fn = build_loss(loss_name)
    t0 = time.perf_counter()
    losses = []
    for _ in range(epochs):
        model.train()
        for xb, yb in train_loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(to_time_major(xb)), yb)
            loss.backward()
            model.reset()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.eval()
    acc = CalibrationAccumulator()
    with torch.no_grad():
        for xb, yb in test_loader:
            acc.update(model(to_time_major(xb)), yb)
    report = acc.report()
    conf, correct = acc.arrays()
    return {**report.to_dict(), "train_seconds": seconds, "final_train_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
            "_conf": conf, "_correct": correct}


def _plot(path: Path, results: dict, T: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_path

    ts = list(range(1, T + 1))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for name, r in results.items():
        axes[0].plot(ts, r["accuracy_per_t"], "o-", label=name)
        axes[1].plot(ts, r["ece_per_t"], "o-", label=name)
        axes[2].plot(ts, r["adaece_per_t"], "o-", label=name)
    for ax, label in zip(axes, ["accuracy", "ECE (15 bins)", "AdaECE (15 bins)"]):
        ax.set_xlabel("time step t (cumulative-mean prediction)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("speck3c1fc on saccade-mnist: CE vs TET vs TMC", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smallest sizes (for tests)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--T", type=int, default=None, help="time bins (default 8; smoke 3)")
    p.add_argument("--train-limit", type=int, default=None, help="training samples (default 2000)")
    p.add_argument("--test-limit", type=int, default=None, help="test samples (default 1000)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from flexsnn.io_utils import atomic_write_json, machine_info
    from flexsnn.training.calibration_metrics import save_reliability_diagram

    torch.set_num_threads(1)
    T = args.T or (3 if args.smoke else 8)
    epochs = args.epochs or (1 if args.smoke else 3)
    train_limit, test_limit = (48, 32) if args.smoke else (2000, 1000)
    train_limit = args.train_limit or train_limit
    test_limit = args.test_limit or test_limit
    setup = {"dataset": "saccade-mnist", "model": "speck3c1fc(batch_norm=True)", "T": T, "epochs": epochs,
             "train_samples": train_limit, "test_samples": test_limit, "batch": 32,
             "optimizer": "Adam lr 2e-3, cosine schedule", "backprop": "bptt", "seed": args.seed,
             "tet": {"lam": 1e-3, "phi": 1.0}, "tmc": {"eps": 1e-6}, "bins": 15,
             "prediction_at_t": "argmax softmax of the mean logits of steps 1..t"}
    results = {}
    for name in LOSS_NAMES:
        results[name] = train_and_calibrate(name, T=T, train_limit=train_limit, test_limit=test_limit,
                                            epochs=epochs, batch=32, lr=2e-3, seed=args.seed)
        r = results[name]
        print(f"{name:4s} acc@T {r['accuracy_per_t'][-1]:.4f}  ECE@T {r['ece_per_t'][-1]:.4f}  "
              f"AdaECE@T {r['adaece_per_t'][-1]:.4f}  ({r['train_seconds']:.1f} s)", flush=True)

    print("\nper time step (accuracy / ECE):")
    print("  t " + "".join(f"{n:>18s}" for n in LOSS_NAMES))
    for t in range(T):
        print(f"{t + 1:3d} " + "".join(f"{results[n]['accuracy_per_t'][t]:9.4f}/{results[n]['ece_per_t'][t]:.4f}"
                                       for n in LOSS_NAMES))

    args.out.mkdir(parents=True, exist_ok=True)
    out = {name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in results.items()}
    out.update({"setup": setup, "smoke": bool(args.smoke), "machine": machine_info()})
    atomic_write_json(args.out / "loss_comparison.json", out)
    _plot(args.out / "loss_comparison.png", results, T)
    conf = np.concatenate([results[n]["_conf"][-1:] for n in LOSS_NAMES], 0)
    correct = np.concatenate([results[n]["_correct"][-1:] for n in LOSS_NAMES], 0)
    save_reliability_diagram(args.out / "loss_comparison_reliability.png", conf, correct,
                             steps=list(range(len(LOSS_NAMES))), labels=list(LOSS_NAMES),
                             title=f"reliability diagrams at t={T}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
