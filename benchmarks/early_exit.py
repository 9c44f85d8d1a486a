"""Early-exit inference (seed paper §5.2, Table 5; SEENN-I) for SDT and MTT checkpoints, and
the event-driven counterpart on the asynchronous simulator.

Part 1 (time-binned, float model): each test recording is binned into T_max frames; the model
runs one step at a time (:mod:`flexsnn.training.early_exit`) and exits at the first step whose
cumulative-mean softmax confidence reaches the threshold. Accuracy vs mean time steps for a
sweep of thresholds, for SDT and MTT (``prefix_accuracy[t-1]``: accuracy when every sample
stops at step t, for reference).

Part 2 (async simulator, chip image): each recording is fed event by event and stops once the
output spike-count margin (top minus runner-up) reaches k (:mod:`flexsnn.deploy.early_exit`);
accuracy vs the mean fraction of the sample's duration (and events) consumed and vs the
fraction of SynOps spent, for a sweep of k. ``simulator`` holds the MTT chip (the key the
benchmark contract names), ``simulator_sdt`` the SDT chip.

Paper (CIFAR10, ResNet-19, SEENN-I): TET 96.38 % at mean T = 1.20 vs MTT 96.58 %; 96.07 vs
96.08 % at T = 1.09. Our models, data and budget differ: see the JSON.

Checkpoints: ``--sdt/--mtt`` or a pair trained here (benchmarks/_pair.py, cached).

Usage::

    python benchmarks/early_exit.py                # trains (or reuses) the pair, then measures
    python benchmarks/early_exit.py --smoke --out /tmp/ee
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

THRESHOLDS = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.01]
KS = [1, 2, 3, 4, 6, 8, 12, 16]
PAPER_TABLE5 = {"mean_T": [1.20, 1.09], "seenn_i_tet": [0.9638, 0.9607], "seenn_i_mtt": [0.9658, 0.9608]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smallest sizes (for tests)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--sdt", type=Path, default=None, help="SDT checkpoint (default: train the pair)")
    p.add_argument("--mtt", type=Path, default=None, help="MTT checkpoint")
    p.add_argument("--work", type=Path, default=None, help="where the pair is trained / cached")
    p.add_argument("--T", type=int, default=6, help="T_max (frames per recording)")
    p.add_argument("--test-limit", type=int, default=300)
    p.add_argument("--sim-limit", type=int, default=100)
    args = p.parse_args(argv)

    import torch

    from _pair import PairSettings, get_pair
    from flexsnn.apps.analysis import checkpoint_batches
    from flexsnn.apps.analysis_plots import plot_early_exit, plot_early_stop
    from flexsnn.converters.export import export_chip_image
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.deploy.early_exit import early_stop_sweep
    from flexsnn.io_utils import atomic_write_json, machine_info, provenance
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.early_exit import collect_cumulative_logits, early_exit_sweep

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    test_limit, sim_limit, ks = (20, 4, [1, 2, 10**6]) if args.smoke else (args.test_limit, args.sim_limit, KS)
    t_all = time.perf_counter()
    settings = PairSettings(T=args.T)
    paths, pair_info = get_pair(settings, smoke=args.smoke, sdt=args.sdt, mtt=args.mtt,
                                work=args.work if not args.smoke else args.out / "_pair")
    batches = checkpoint_batches("saccade-mnist", split="test", T=args.T, limit=test_limit, batch_size=100)
    events = load_event_dataset("saccade-mnist", split="test", limit=sim_limit)
    result: dict = {"thresholds": THRESHOLDS, "T_max": args.T, "n_test": sum(int(y.numel()) for _, y in batches),
                    "pair": pair_info, "paper_table5": PAPER_TABLE5}
    curves, sims = {}, {}
    for name in ("sdt", "mtt"):
        model, meta = load_model(paths[name])
        t0 = time.perf_counter()
        cum, y = collect_cumulative_logits(model, batches, T_max=args.T)
        pts = early_exit_sweep(cum, y, THRESHOLDS)
        prefix = [float((cum[t].argmax(-1) == y).double().mean()) for t in range(args.T)]
        curves[name] = pts
        result[name] = {"accuracy": [q.accuracy for q in pts], "mean_T": [q.mean_T for q in pts],
                        "prefix_accuracy": prefix, "full_accuracy": prefix[-1],
                        "exit_histogram": [list(q.exit_histogram) for q in pts],
                        "seconds": time.perf_counter() - t0}
        image, _ = export_chip_image(model)
        sim = AsyncSimulator()
        sim.load(image)
        t0 = time.perf_counter()
        spts, full = early_stop_sweep(sim, events, ks)
        sims[name] = spts
        result["simulator" if name == "mtt" else "simulator_sdt"] = {
            "k": [q.k for q in spts], "accuracy": [q.accuracy for q in spts],
            "fraction_of_events": [q.fraction_of_events for q in spts],
            "fraction_of_duration": [q.fraction_of_duration for q in spts],
            "synops_fraction": [q.synops_fraction for q in spts],
            "mean_synops": [q.mean_synops for q in spts],
            "stopped_early": [q.stopped_early for q in spts],
            "agreement_with_full": [q.agreement_with_full for q in spts],
            "full": full, "n": full["n"], "seconds": time.perf_counter() - t0, "checkpoint": name}
    result["seconds"] = time.perf_counter() - t_all
    result["smoke"] = bool(args.smoke)
    result["machine"] = machine_info()
    result["provenance"] = provenance({k: str(v) for k, v in vars(args).items()})

    print(f"early exit, T_max={args.T}, {result['n_test']} test recordings ({pair_info['source']})")
    print(f"{'threshold':>9s} | {'SDT acc':>7s} {'mean T':>6s} | {'MTT acc':>7s} {'mean T':>6s}")
    for i, th in enumerate(THRESHOLDS):
        print(f"{th:9.3f} | {result['sdt']['accuracy'][i]:7.4f} {result['sdt']['mean_T'][i]:6.2f} | "
              f"{result['mtt']['accuracy'][i]:7.4f} {result['mtt']['mean_T'][i]:6.2f}")
    for key in ("simulator_sdt", "simulator"):
        s = result[key]
        print(f"async simulator early stop ({s['checkpoint'].upper()} chip, {s['n']} recordings, "
              f"full run accuracy {s['full']['accuracy']:.4f})")
        print(f"{'k':>8s} {'acc':>7s} {'duration':>8s} {'events':>7s} {'synops':>7s}")
        for i, k in enumerate(s["k"]):
            print(f"{k:8d} {s['accuracy'][i]:7.4f} {s['fraction_of_duration'][i]:8.3f} "
                  f"{s['fraction_of_events'][i]:7.3f} {s['synops_fraction'][i]:7.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "early_exit.json", result)
    plot_early_exit(curves, args.out / "early_exit.png",
                    title=f"early exit (SEENN-I), speck3c1fc, saccade-mnist, T_max={args.T}")
    plot_early_stop(sims, args.out / "early_exit_sim.png", title="async simulator: stop at output margin k")
    print(f"wrote {args.out / 'early_exit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
