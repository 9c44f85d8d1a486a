"""Scaling out: throughput of 1 vs 2 processes (torch.distributed, gloo, localhost) for
training (DDP through the real trainer) and for sharded simulator evaluation, in one run.

Training: speck3c1fc, MTT (s configurations per step) on real N-MNIST recordings
(nmnist-small), the same GLOBAL batch in both cases (1 process x B, 2 processes x B/2), so
both runs do the same arithmetic per step. Figure: samples/s of the last epoch's training
steps (the trainer's ``epoch_seconds``; process start-up, data loading and evaluation are
not counted).

Evaluation: the asynchronous simulator on the trained speck3c1fc chip image of
sim_throughput.py (``_sim_chip.trained_chip``, cached; ``--image light`` takes the image from
seeded random weights, thresholds scaled to ``--target-synops``, as the smoke run does),
samples split over the ranks by :func:`flexsnn.deploy.sharded.evaluate_sharded`. Figure:
samples/s from a common start (barrier) to the gathered result on rank 0.

Threads: 2 processes use cores/2 torch threads each. 1 process runs with 1 thread in every
repeat and, in the first repeat only, with all cores' threads (on a loaded machine torch's
intra-op threads can be much slower than one thread); the 1-process training figure is the
better of the two (both are in the JSON). Runs alternate 1, 2, 1, 2, ...; every figure is
the median over ``--repeats``. The machine is shared (other jobs): the load average is
recorded before and after; ``--wait-idle S`` first waits up to S seconds for a 1-minute load
below 0.5 (the figure that matters: 2 ranks >= 1.5x one for sharded evaluation, at low load).

Usage::

    python benchmarks/scaling.py
    python benchmarks/scaling.py --smoke --out /tmp/scaling
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = Path(os.environ.get("FLEXSNN_NMNIST_SMALL", REPO.parent / "shared" / "data" / "nmnist-small"))


def train_config(*, batch_size: int, T: int, s: int, epochs: int) -> dict:
    return dict(model="speck3c1fc", dataset="nmnist", T=T,
                scheme=dict(name="mtt", T=T, s=s, t_min=max(1, T // 2), t_max=T + T // 2),
                epochs=epochs, batch_size=batch_size, amp=False, device="cpu", optimizer="adamw",
                lr=1e-3, eval_every=epochs, seed=0, bn_calibration_batches=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="nmnist-small folder")
    ap.add_argument("--train-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--image", choices=("trained", "light"), default="trained",
                    help="chip image of the evaluation (default: the trained benchmark chip)")
    ap.add_argument("--batch-size", type=int, default=32, help="GLOBAL batch size")
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--s", type=int, default=2, help="MTT configurations per step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-synops", type=float, default=1.3e6)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per launch")
    ap.add_argument("--smoke", action="store_true", help="smallest sizes, 1 repeat")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to SECONDS for a 1-minute load average < 0.5 before timing")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if args.smoke:
        args.train_samples, args.eval_samples, args.batch_size, args.T, args.repeats = 8, 4, 4, 4, 1
        args.image = "light"

    from flexsnn import parallel
    from flexsnn.io_utils import atomic_write_json, machine_info

    if not (args.data / "Train").is_dir():
        print(f"skipped: real N-MNIST recordings not found at {args.data} (pass --data)")
        return 0
    import _scaling_workers as w
    from sim_throughput import build_image, calibrate

    data = {"dataset": "nmnist", "root": str(args.data), "seed": 0}
    cores = os.cpu_count() or 1
    threads = {1: 1, 2: max(1, cores // 2)}
    from _idle import wait_idle

    if args.image == "trained":  # before the idle wait: a first run trains the chip (minutes)
        from _sim_chip import trained_chip

        image, info = trained_chip()
        source = f"speck3c1fc trained here ({info['source']}: {info['checkpoint']})"
    else:
        image, source = build_image(None, 0)

    idle = wait_idle(args.wait_idle)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        factor, cal = 1.0, None
        if args.image == "light" and not args.smoke:
            image, factor, cal = calibrate(image, w.load_samples(data, "test", 12), args.target_synops)
        chip = str(image.save(Path(tmp) / "scaling.chip"))

        train_rate: dict[str, list[float]] = {"1": [], "2": []}
        train_1_all_threads: list[float] = []
        eval_rate: dict[str, list[float]] = {"1": [], "2": []}
        eval_call_rate: dict[str, list[float]] = {"1": [], "2": []}  # with the one-off image check
        eval_checks: dict[str, dict] = {}

        def launch(world: int, n_threads: int, tag: str) -> tuple[float, dict]:
            cfg = train_config(batch_size=args.batch_size // world, T=args.T, s=args.s, epochs=2)
            res = parallel.spawn_local(w.both_worker, world, cfg, data, args.train_samples, f"{tmp}/{tag}",
                                       chip, args.eval_samples, timeout_s=args.timeout,
                                       threads_per_process=n_threads)
            seconds = max(r["train"]["epoch_seconds"] for r in res)
            return res[0]["train"]["samples"] / seconds, res[0]["eval"]

        for rep in range(args.repeats):
            if rep == 0 and cores > 1 and not args.smoke:
                rate, _ = launch(1, cores, f"1x{cores}-{rep}")
                train_1_all_threads.append(rate)
            for world in (1, 2):
                rate, ev = launch(world, threads[world], f"{world}-{rep}")
                train_rate[str(world)].append(rate)
                eval_rate[str(world)].append(ev["samples"] / ev["seconds"])
                eval_call_rate[str(world)].append(ev["samples"] / ev["seconds_call"])
                eval_checks[str(world)] = {"accuracy": ev["accuracy"], "synops_mean": ev["synops_mean"]}
    load_after = os.getloadavg()
    if eval_checks["1"] != eval_checks["2"]:
        raise AssertionError(f"sharded evaluation differs from one process: {eval_checks}")

    med = {name: {k: statistics.median(v) for k, v in rates.items()}
           for name, rates in (("train", train_rate), ("eval", eval_rate))}
    one_thread = med["train"]["1"]
    if train_1_all_threads:
        med["train"]["1"] = max(one_thread, statistics.median(train_1_all_threads))
    result = {
        "train_samples_per_s": med["train"],
        "eval_samples_per_s": med["eval"],
        "train_speedup_2_over_1": med["train"]["2"] / med["train"]["1"],
        "eval_speedup_2_over_1": med["eval"]["2"] / med["eval"]["1"],
        "train_samples_per_s_runs": train_rate,
        "eval_samples_per_s_runs": eval_rate,
        "eval_samples_per_s_with_image_check_runs": eval_call_rate,
        "train": {"model": "speck3c1fc", "scheme": "mtt", "s": args.s, "T": args.T,
                  "global_batch_size": args.batch_size, "samples": args.train_samples,
                  "measured": "last of 2 epochs, training steps only (trainer epoch_seconds, slowest rank)"},
        "eval": {"backend": "async", "samples": args.eval_samples, "chip_image": source,
                 "threshold_scale": factor, "calibration_synops_mean": cal,
                 "synops_mean": eval_checks["1"]["synops_mean"],
                 "identical_results_1_and_2": True,
                 "measured": "evaluate_sharded's seconds: from the ranks' common start (barrier, after "
                             "the one-off same-image check) to the gathered result on rank 0 (kernels "
                             "warmed up); eval_samples_per_s_with_image_check_runs: the whole call",
                 },
        "train_samples_per_s_1_process_by_threads": {
            "1": one_thread, str(cores): statistics.median(train_1_all_threads) if train_1_all_threads else None},
        "threads_per_process": {"1": f"1 (and {cores} in the first repeat; the better counts)", "2": threads[2]},
        "process_group": "gloo, localhost (flexsnn.parallel.spawn_local)",
        "repeats": args.repeats,
        "statistic": "median over repeats (runs alternate 1, 2)",
        "smoke": bool(args.smoke),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "load_average": (load_before[0] + load_after[0]) / 2,
        "idle_wait": idle,
        "machine": machine_info(),
    }
    rows = [("training, 1 process x 1 thread: samples/s", f"{one_thread:.1f}"),
            (f"training, 1 process x {cores} threads: samples/s",
             f"{statistics.median(train_1_all_threads):.1f}" if train_1_all_threads else "-"),
            ("training, 1 process (better): samples/s", f"{med['train']['1']:.1f}"),
            ("training, 2 processes: samples/s", f"{med['train']['2']:.1f}"),
            ("training speed-up 2 / 1", f"{result['train_speedup_2_over_1']:.2f}x"),
            ("evaluation, 1 process: samples/s", f"{med['eval']['1']:.1f}"),
            ("evaluation, 2 processes: samples/s", f"{med['eval']['2']:.1f}"),
            ("evaluation speed-up 2 / 1", f"{result['eval_speedup_2_over_1']:.2f}x"),
            ("load average before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f}"),
            ("cores", f"{cores}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    path = atomic_write_json(args.out / "scaling.json", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
