"""Rate-based backprop vs BPTT: time per iteration and peak memory over T, and accuracy.

Usage::

    python benchmarks/rate_vs_bptt.py [--smoke] [--out DIR]

Part 1 (cost): speck3c1fc (with BN) on synthetic DVS-like spike frames, the same batch for every
method; for each T in {2, 4, 8, 16, 32} and each method (``bptt``, ``rate_M``, ``rate_S``) one
fresh subprocess builds the model, runs one warm-up iteration and then ``--iters`` timed
iterations (forward, loss, backward, Adam step); it reports the median seconds per iteration and
its peak memory: peak RSS of the process (``ru_maxrss``; includes the Python/torch baseline,
which is reported too) on CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Fresh processes keep
peaks from mixing (``--smoke`` measures in-process). Part 2 (accuracy): the same model trained for the same epochs on saccade-mnist
with BPTT and with rate-based backprop (rate_M), test accuracy of the time-mean output.

Writes ``rate_vs_bptt.json`` (keys in shared BENCHMARKS.md, plus details) and
``rate_vs_bptt.png`` to ``--out`` (default ``benchmarks/results``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("bptt", "rate_M", "rate_S")
#: the rate mode quoted under the required "rate" keys (the single-step mode is the one whose
#: memory does not grow with T; rate_M is reported beside it).
HEADLINE_RATE = "rate_S"


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(method: str, T: int, batch: int, iters: int, seed: int) -> dict:
    """One (method, T) measurement in this (fresh) process."""
    import torch

    from flexsnn.models.zoo import build_model
    from flexsnn.seeding import seed_everything
    from flexsnn.training.losses import build_loss
    from flexsnn.training.rate_backprop import rate_loss_and_backward

    torch.set_num_threads(1)
    seed_everything(seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model("speck3c1fc", batch_norm=True, T=T).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss("ce")
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, batch, 2, 34, 34, generator=g) < 0.05).float().to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if method == "bptt":
            loss_fn(model(x), y).backward()
            model.reset()
        else:
            rate_loss_and_backward(model, x, y, loss_fn, mode=method)
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    baseline = _rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
    out = {"method": method, "T": T, "seconds_per_iter": statistics.median(times), "times": times,
           "peak_rss_mb": peak_rss, "baseline_rss_mb": baseline, "device": str(device)}
    if cuda:
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(method: str, T: int, batch: int, iters: int, seed: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, str(T), "--batch", str(batch),
           "--iters", str(iters), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {method} T={T} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_accuracy(method: str, *, T: int, train_limit: int, test_limit: int, epochs: int,
                   batch: int, seed: int) -> dict:
    """Train speck3c1fc on saccade-mnist with ``method`` ("bptt" | "rate_M" | "rate_S")."""
    import torch

    from flexsnn.data.frames import frame_loader, to_time_major
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.models.zoo import build_model
    from flexsnn.seeding import seed_everything
    from flexsnn.training.losses import build_loss
    from flexsnn.training.rate_backprop import rate_loss_and_backward

    seed_everything(seed)
    train_ds = load_event_dataset("saccade-mnist", split="train", seed=0, limit=train_limit)
    test_ds = load_event_dataset("saccade-mnist", split="test", seed=0, limit=test_limit)
    train_loader = frame_loader(train_ds, T=T, batch_size=batch, shuffle=True, seed=seed)
    test_loader = frame_loader(test_ds, T=T, batch_size=256, shuffle=False)
    model = build_model("speck3c1fc", batch_norm=True, T=T).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = build_loss("ce")
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in train_loader:
            x = to_time_major(xb)
            opt.zero_grad(set_to_none=True)
            if method == "bptt":
                loss_fn(model(x), yb).backward()
                model.reset()
            else:
                rate_loss_and_backward(model, x, yb, loss_fn, mode=method)
            opt.step()
    train_seconds = time.perf_counter() - t0
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for xb, yb in test_loader:
            logits = model(to_time_major(xb))
            correct += int((logits.mean(0).argmax(-1) == yb).sum())
            total += int(yb.numel())
    return {"accuracy": correct / max(total, 1), "train_seconds": train_seconds}


def _plot(path: Path, Ts: list[int], rows: dict, acc: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in METHODS:
        axes[0].plot(Ts, [rows[method][T]["seconds_per_iter"] for T in Ts], "o-", label=method)
        axes[1].plot(Ts, [rows[method][T]["peak_memory_mb"] for T in Ts], "o-", label=method)
    for ax, label in zip(axes, ["seconds / iteration", "peak memory (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("T")
        ax.set_ylabel(label)
        ax.legend()
    acc_txt = ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
    fig.suptitle(f"speck3c1fc: BPTT vs rate-based backprop (saccade-mnist accuracy: {acc_txt})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smallest sizes (for tests)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)

    if args.child:
        res = child(args.child[0], int(args.child[1]), args.batch, args.iters, args.seed)
        print(json.dumps(res))
        return 0

    from flexsnn.io_utils import atomic_write_json, machine_info

    Ts = [2, 4] if args.smoke else [2, 4, 8, 16, 32]
    batch = args.batch or (4 if args.smoke else 64)
    iters = args.iters or (1 if args.smoke else 3)
    epochs = args.epochs or (1 if args.smoke else 3)
    train_limit, test_limit = (64, 32) if args.smoke else (3000, 1000)
    T_train = 4 if args.smoke else 8

    rows: dict[str, dict[int, dict]] = {m: {} for m in METHODS}
    for T in Ts:
        for method in METHODS:
            # smoke mode measures in this process (only the code path matters there)
            r = (child(method, T, batch, iters, args.seed) if args.smoke
                 else run_child(method, T, batch, iters, args.seed))
            r["peak_memory_mb"] = r.get("cuda_max_allocated_mb", r["peak_rss_mb"])
            rows[method][T] = r
            print(f"T={T:3d} {method:7s} {r['seconds_per_iter']:8.3f} s/iter  peak {r['peak_memory_mb']:8.1f} MiB "
                  f"(baseline {r['baseline_rss_mb']:.1f})", flush=True)

    acc_runs = {}
    for method in ("bptt", "rate_M"):
        acc_runs[method] = train_accuracy(method, T=T_train, train_limit=train_limit, test_limit=test_limit,
                                          epochs=epochs, batch=32, seed=args.seed)
        print(f"accuracy {method}: {acc_runs[method]['accuracy']:.4f} ({acc_runs[method]['train_seconds']:.1f} s)",
              flush=True)

    t_lo, t_hi = Ts[0], Ts[-1]
    t_ratio = 16 if 16 in Ts else max(Ts)

    def series(method: str, key: str) -> list[float]:
        return [rows[method][T][key] for T in Ts]

    result = {
        "T": Ts,
        "headline_rate_mode": HEADLINE_RATE,
        "peak_memory_mb": {"bptt": series("bptt", "peak_memory_mb"), "rate": series(HEADLINE_RATE, "peak_memory_mb"),
                           **{m: series(m, "peak_memory_mb") for m in METHODS}},
        "baseline_rss_mb": {m: series(m, "baseline_rss_mb") for m in METHODS},
        "seconds_per_iter": {"bptt": series("bptt", "seconds_per_iter"),
                             "rate": series(HEADLINE_RATE, "seconds_per_iter"),
                             **{m: series(m, "seconds_per_iter") for m in METHODS}},
        "rate_memory_ratio_Tmax_over_Tmin": rows[HEADLINE_RATE][t_hi]["peak_memory_mb"]
        / rows[HEADLINE_RATE][t_lo]["peak_memory_mb"],
        "bptt_memory_ratio_Tmax_over_Tmin": rows["bptt"][t_hi]["peak_memory_mb"] / rows["bptt"][t_lo]["peak_memory_mb"],
        "memory_ratio_Tmax_over_Tmin": {m: rows[m][t_hi]["peak_memory_mb"] / rows[m][t_lo]["peak_memory_mb"]
                                        for m in METHODS},
        "memory_above_baseline_mb": {m: [rows[m][T]["peak_rss_mb"] - rows[m][T]["baseline_rss_mb"] for T in Ts]
                                     for m in METHODS},
        "time_ratio_rate_over_bptt_T16": rows[HEADLINE_RATE][t_ratio]["seconds_per_iter"]
        / rows["bptt"][t_ratio]["seconds_per_iter"],
        "time_ratio_over_bptt": {m: [rows[m][T]["seconds_per_iter"] / rows["bptt"][T]["seconds_per_iter"] for T in Ts]
                                 for m in METHODS},
        "time_ratio_T": t_ratio,
        "accuracy": {"bptt": acc_runs["bptt"]["accuracy"], "rate": acc_runs["rate_M"]["accuracy"]},
        "accuracy_setup": {"dataset": "saccade-mnist", "model": "speck3c1fc(batch_norm=True)", "T": T_train,
                           "epochs": epochs, "train_samples": train_limit, "test_samples": test_limit,
                           "batch": 32, "optimizer": "Adam lr 2e-3", "loss": "ce", "rate_mode": "rate_M",
                           "train_seconds": {k: v["train_seconds"] for k, v in acc_runs.items()}},
        "cost_setup": {"model": "speck3c1fc(batch_norm=True)", "batch": batch, "iters": iters,
                       "input": "Bernoulli(0.05) spike frames [T, B, 2, 34, 34]", "threads": 1,
                       "memory": "CUDA max_memory_allocated" if "cuda_max_allocated_mb" in rows["bptt"][t_lo]
                       else "peak RSS (ru_maxrss) of a fresh process per (method, T)"},
        "smoke": bool(args.smoke),
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "rate_vs_bptt.json", result)
    _plot(args.out / "rate_vs_bptt.png", Ts, rows, result["accuracy"])
    print(f"rate ({HEADLINE_RATE}) memory T{t_hi}/T{t_lo}: {result['rate_memory_ratio_Tmax_over_Tmin']:.2f} "
          f"(target <= 1.3); bptt: {result['bptt_memory_ratio_Tmax_over_Tmin']:.2f}; "
          f"time rate/bptt at T={t_ratio}: {result['time_ratio_rate_over_bptt_T16']:.2f} (target <= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
