"""Robustness of SDT vs MTT checkpoints (seed paper §5.3 Fig. 5/6, A.11 Table 13).

- Gaussian noise ``N(0, sigma^2)`` added to every conv/linear weight (absolute sigma, as the
  paper), 5 draws per sigma: accuracy mean / min / max.
- Gaussian noise added to the input frames (event counts per bin), separately, 5 draws per
  sigma (``input_sigma``; counts have another scale than weights).
- ``grad_norm_w``: ``||dL/dW||`` of the conv layers for the mean loss over the training
  recordings used; ``grad_norm_x``: mean per-sample ``||dL_i/dx_i||``.

Paper (ResNet-18, CIFAR100): MTT's weights are more robust to noise (Fig. 5/6); Table 13:
``||dL/dW||`` MTT 11.59 vs SDT 38.08, ``||dL/dx||`` MTT 1.81 vs SDT 7.78.

Checkpoints: ``--sdt/--mtt`` or the pair trained by benchmarks/_pair.py (cached, shared with
benchmarks/early_exit.py).

Usage::

    python benchmarks/robustness.py
    python benchmarks/robustness.py --smoke --out /tmp/rob
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIGMA = [0.0, 0.05, 0.1, 0.2]
INPUT_SIGMA = [0.0, 0.5, 1.0, 2.0]
PAPER_TABLE13 = {"mtt": {"grad_norm_w": 11.59, "grad_norm_x": 1.81}, "sdt": {"grad_norm_w": 38.08, "grad_norm_x": 7.78}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smallest sizes (for tests)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--sdt", type=Path, default=None)
    p.add_argument("--mtt", type=Path, default=None)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--T", type=int, default=6)
    p.add_argument("--test-limit", type=int, default=100)
    p.add_argument("--grad-limit", type=int, default=200, help="training recordings for the gradient norms")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--axis", choices=("sigma", "variance"), default="sigma",
                   help="sweep values as standard deviations, or as variances sigma^2 (the paper's Fig. 5/6 axis; "
                        "the same noise levels, squared)")
    args = p.parse_args(argv)

    import torch

    from _pair import PairSettings, get_pair
    from flexsnn.apps.analysis import checkpoint_batches
    from flexsnn.apps.analysis_plots import plot_noise_curves
    from flexsnn.io_utils import atomic_write_json, machine_info, provenance
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.robustness import gradient_norms, noise_sweep

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if args.smoke:
        test_limit, grad_limit, repeats, sigma, input_sigma = 10, 10, 2, SIGMA[:2] + [1.0], INPUT_SIGMA[:2]
    else:
        test_limit, grad_limit, repeats, sigma, input_sigma = (args.test_limit, args.grad_limit, args.repeats,
                                                               SIGMA, INPUT_SIGMA)
    if args.axis == "variance":
        sigma, input_sigma = [v * v for v in sigma], [v * v for v in input_sigma]
    t_all = time.perf_counter()
    paths, pair_info = get_pair(PairSettings(T=args.T), smoke=args.smoke, sdt=args.sdt, mtt=args.mtt,
                                work=args.work if not args.smoke else args.out / "_pair")
    test = checkpoint_batches("saccade-mnist", split="test", T=args.T, limit=test_limit, batch_size=100)
    train = checkpoint_batches("saccade-mnist", split="train", T=args.T, limit=grad_limit, batch_size=50)
    result: dict = {"sigma": sigma, "input_sigma": input_sigma, "axis": args.axis, "repeats": repeats, "T": args.T,
                    "weight_noise_scale": "absolute", "n_test": sum(int(y.numel()) for _, y in test),
                    "n_grad": sum(int(y.numel()) for _, y in train), "pair": pair_info,
                    "paper_table13": PAPER_TABLE13}
    wc, ic = {}, {}
    for name in ("sdt", "mtt"):
        model, _ = load_model(paths[name])
        w = noise_sweep(model, test, sigma, kind="weight", repeats=repeats, seed=args.seed, T=args.T,
                        axis=args.axis)
        x = noise_sweep(model, test, input_sigma, kind="input", repeats=repeats, seed=args.seed, T=args.T,
                        axis=args.axis)
        g = gradient_norms(model, train, layers="conv", T=args.T)
        wc[name], ic[name] = w, x
        weights = [m.weight.detach() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        result[name] = {
            "clean_accuracy": w.clean,
            "weight_noise": {"mean": w.mean, "min": w.min, "max": w.max, "all": [list(a) for a in w.accuracy]},
            "input_noise": {"mean": x.mean, "min": x.min, "max": x.max, "all": [list(a) for a in x.accuracy]},
            "grad_norm_w": g.grad_norm_w, "grad_norm_x": g.grad_norm_x, "grad_per_layer": g.per_layer,
            "weight_std": [float(t.std()) for t in weights],
        }
    result["seconds"] = time.perf_counter() - t_all
    result["smoke"] = bool(args.smoke)
    result["machine"] = machine_info()
    result["provenance"] = provenance({k: str(v) for k, v in vars(args).items()})

    print(f"robustness, T={args.T}, {result['n_test']} test / {result['n_grad']} train recordings "
          f"({pair_info['source']}), {repeats} draws per sigma")
    for kind, sig in (("weight_noise", sigma), ("input_noise", input_sigma)):
        print(f"{kind}: sigma  | SDT mean [min, max]       | MTT mean [min, max]")
        for i, s in enumerate(sig):
            a, b = result["sdt"][kind], result["mtt"][kind]
            print(f"  {s:8.3f} | {a['mean'][i]:.4f} [{a['min'][i]:.4f}, {a['max'][i]:.4f}] | "
                  f"{b['mean'][i]:.4f} [{b['min'][i]:.4f}, {b['max'][i]:.4f}]")
    for name in ("sdt", "mtt"):
        r = result[name]
        print(f"{name}: ||dL/dW|| = {r['grad_norm_w']:.4g} (paper {PAPER_TABLE13[name]['grad_norm_w']}), "
              f"mean ||dL/dx|| = {r['grad_norm_x']:.4g} (paper {PAPER_TABLE13[name]['grad_norm_x']})")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "robustness.json", result)
    plot_noise_curves(wc, args.out / "robustness_weight.png", title="Gaussian noise in the weights (absolute sigma)")
    plot_noise_curves(ic, args.out / "robustness_input.png", title="Gaussian noise in the input frames")
    print(f"wrote {args.out / 'robustness.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
