"""Where the sim-to-real C2ST looks (issue 16): gradient x input saliency of its CNN.

The C2ST of ``benchmarks/fit_learned_dvs.py`` tells the held-out real recordings from generated
recordings of the same images at 0.97. Before modelling more, this script asks the classifier
where it looks: it trains the same CNN on the fit half (real vs the shipped learned renderer's
recordings, drawn as the fit script draws them), then averages ``|x * d(logit_real -
logit_generated)/dx|`` over the held-out half (``_s2r_c2st.c2st_saliency``), per input channel
(T = 3, 5, 10 frames x polarity) and per pixel.

Writes ``benchmarks/results/c2st_saliency.json`` (``c2st_accuracy``, ``per_channel`` by name,
``top_channels``, ``per_T``, ``per_polarity``, ``per_pixel`` ``[34][34]``) and a PNG with the
pixel map and the T=10 frames' shares.

Usage::

    python benchmarks/c2st_saliency.py            # ~2 min on 2 cores
    python benchmarks/c2st_saliency.py --smoke --out /tmp/sal
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._s2r_c2st import C2ST_T, c2st_accuracy, c2st_saliency, channel_names  # noqa: E402
from benchmarks._s2r_data import DEFAULT_REAL, REPO, Pairs  # noqa: E402


def summarize(saliency: dict[str, np.ndarray]) -> dict:
    """The JSON view of :func:`c2st_saliency`'s arrays: shares by channel name, the ten largest,
    by T, by polarity, and the pixel map."""
    names = channel_names()
    share = dict(zip(names, (float(v) for v in saliency["per_channel"])))
    per_T = {f"T{T}": sum(v for k, v in share.items() if k.startswith(f"T{T} ")) for T in C2ST_T}
    per_p = {f"p{p}": sum(v for k, v in share.items() if k.endswith(f"p{p}")) for p in (0, 1)}
    top = sorted(share.items(), key=lambda kv: -kv[1])[:10]
    return {"per_channel": share, "top_channels": [{"channel": k, "share": v} for k, v in top],
            "per_T": per_T, "per_polarity": per_p,
            "per_pixel": np.round(saliency["per_pixel"], 6).tolist()}


def plot(summary: dict, path: Path) -> None:
    """Pixel map and the T=10 frames' shares per polarity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_write_bytes

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    im = ax1.imshow(np.asarray(summary["per_pixel"]), cmap="magma")
    ax1.set_title("C2ST saliency per pixel (share)")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    k = np.arange(10)
    for p, off in ((0, -0.2), (1, 0.2)):
        ax2.bar(k + off, [summary["per_channel"][f"T10 frame {i} p{p}"] for i in k], width=0.4, label=f"p{p}")
    ax2.set_xlabel("T=10 frame (30 ms each)")
    ax2.set_ylabel("share of the saliency")
    ax2.set_title(f"C2ST {summary['c2st_accuracy']:.3f}: T=10 frames")
    ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--seed", type=int, default=0, help="the fit script's seed (draws and classifier)")
    ap.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    ap.add_argument("--smoke", action="store_true", help="20 pairs per class, 2 epochs")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    from flexsnn.data.learned_dvs import load_learned_dvs
    from flexsnn.data.saccade import load_mnist_images
    from flexsnn.io_utils import atomic_write_json, provenance

    t0 = time.perf_counter()
    pairs = Pairs(args.real, limit_per_class=20 if args.smoke else None)
    epochs = 2 if args.smoke else args.epochs
    images, _ = load_mnist_images()
    model = load_learned_dvs()
    rates = model.rates(images[pairs.image_index])
    rng = np.random.default_rng(args.seed + 1)  # as benchmarks/fit_learned_dvs.py draws its check set
    gen = [model.sample(r, rng) for r in rates]
    fit, held = pairs.half(held_out=False), pairs.half(held_out=True)
    halves = ([pairs.real[i] for i in fit], [gen[i] for i in fit],
              [pairs.real[i] for i in held], [gen[i] for i in held])
    summary = {"c2st_accuracy": c2st_accuracy(*halves, seed=args.seed, epochs=epochs),
               **summarize(c2st_saliency(*halves, seed=args.seed, epochs=epochs)),
               "n_fit": int(fit.size), "n_held_out": int(held.size), "model_sampler": model.sampler.__dict__,
               "seconds": time.perf_counter() - t0, "load_average": os.getloadavg(), "smoke": args.smoke,
               **provenance()}
    name = "c2st_saliency_smoke" if args.smoke else "c2st_saliency"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{name}.json", summary)
    plot(summary, args.out / f"{name}.png")
    print(f"C2ST {summary['c2st_accuracy']:.3f}; saliency by T: "
          + ", ".join(f"{k} {v:.2f}" for k, v in summary["per_T"].items())
          + "; by polarity: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["per_polarity"].items()))
    for row in summary["top_channels"][:5]:
        print(f"  {row['channel']:<16} {row['share']:.3f}")
    print(f"wrote {args.out / (name + '.json')} and .png")
    return summary


if __name__ == "__main__":
    main()
