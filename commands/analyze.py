"""``flexsnn analyze robustness | gradients | early-exit | early-stop``: the MTT paper's
analyses beyond accuracy at a fixed T (seed §5.2, §5.3, A.11), each writing JSON and a PNG.

The runs themselves live in :mod:`flexsnn.apps.analysis`; this module parses and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flexsnn.apps.analysis import (checkpoint_batches, format_early_exit, format_early_stop, run_early_exit,  # noqa: F401
                                   run_early_stop,
                                   run_gradients, run_robustness)
from flexsnn.options import MAX_COUNT, MAX_SEED, MAX_T, in_range, parse_floats

ANALYZE_HELP = """Analyses of trained checkpoints: robustness to noise, gradient norms, early exit.

\b
Examples:
  flexsnn analyze robustness --checkpoint sdt.safetensors --checkpoint mtt.safetensors --out rob/
  flexsnn analyze gradients --checkpoint sdt.safetensors --checkpoint mtt.safetensors --out grad/
  flexsnn analyze early-exit --checkpoint mtt.safetensors --thresholds 0.5,0.9,0.99 --out ee/
  flexsnn analyze early-stop --chip mtt.chip --k 1,2,4,8 --out es/
"""

_CKPT = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (.safetensors); repeat to compare (e.g. SDT and MTT).")
_LABEL = typer.Option(None, "--label", help="Name per checkpoint (default: the file stem); repeat in order.")
_DATASET = typer.Option("saccade-mnist", "--dataset", "-d", help="saccade-mnist, nmnist or seqmnist.")
_ROOT = typer.Option(None, "--root", help="N-MNIST folder (nmnist only).")
_SEED = typer.Option(0, "--seed", help="Split seed and noise seed.", callback=in_range(0, MAX_SEED))
_LIMIT = typer.Option(None, "--limit", help="Use at most this many samples (class-balanced).",
                      callback=in_range(1, MAX_COUNT))
_T = typer.Option(None, "--T", help=f"Time steps (frames) to run at (1..{MAX_T}); default: the checkpoint's T_max.",
                  callback=in_range(1, MAX_T))
_BATCH = typer.Option(64, "--batch-size", help="Batch size.", callback=in_range(1, MAX_COUNT))
_OUT = typer.Option(Path("analysis"), "--out", help="Output folder (JSON + PNG).")


# --------------------------------------------------------------------------- commands
def robustness(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
               root: Optional[Path] = _ROOT, split: str = typer.Option("test", "--split", help="Split to test on."),
               seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
               sigma: str = typer.Option("0,0.05,0.1,0.2,0.3", "--sigma", help="Weight-noise sigmas, comma-separated."),
               input_sigma: Optional[str] = typer.Option(None, "--input-sigma",
                                                         help="Input-noise sigmas (default: --sigma)."),
               repeats: int = typer.Option(5, "--repeats", help="Noise draws per sigma (the paper: 5).",
                                           callback=in_range(1, 1000)),
               scale: str = typer.Option("absolute", "--scale", help="Weight noise: absolute, or relative to "
                                         "each weight tensor's std."),
               batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Accuracy under Gaussian noise in the weights and, separately, in the inputs (mean, min, max).

    \b
    Example:
      flexsnn analyze robustness -c runs/sdt/final.safetensors -c runs/mtt/final.safetensors \\
          --label sdt --label mtt --sigma 0,0.1,0.2,0.4 --repeats 5 --limit 500 --out rob/
    """
    from flexsnn.progress import cli_progress

    res = run_robustness(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed,
                         limit=limit, T=T, sigmas=parse_floats(sigma, option="--sigma"),
                         input_sigmas=parse_floats(input_sigma, option="--input-sigma") if input_sigma else None,
                         repeats=repeats, scale=scale, batch_size=batch_size, out=out, progress=cli_progress)
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name} (T={r['T']}): clean {r['clean_accuracy']:.4f}")
        for kind in ("weight_noise", "input_noise"):
            c = r[kind]
            row = "  ".join(f"{s:g}:{m:.3f}[{lo:.3f},{hi:.3f}]" for s, m, lo, hi in
                            zip(c["sigma"], c["mean"], c["min"], c["max"]))
            typer.echo(f"  {kind}: {row}")
    typer.echo(f"wrote {Path(out) / 'robustness.json'} and PNGs")


def gradients(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
              root: Optional[Path] = _ROOT, split: str = typer.Option("train", "--split", help="Split (the paper: training set)."),
              seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
              layers: str = typer.Option("conv", "--layers", help="conv (the paper) or all (conv + linear)."),
              batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Gradient norms ||dL/dW|| (conv layers, over the split) and mean ||dL/dx_i|| (A.11).

    \b
    Example:
      flexsnn analyze gradients -c sdt.safetensors -c mtt.safetensors --label sdt --label mtt --out grad/
    """
    from flexsnn.progress import cli_progress

    res = run_gradients(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                        T=T, layers=layers, batch_size=batch_size, out=out, progress=cli_progress)
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name} (T={r['T']}, n={r['n']}): ||dL/dW|| = {r['grad_norm_w']:.4g}   "
                   f"mean ||dL/dx|| = {r['grad_norm_x']:.4g}")
    typer.echo(f"wrote {Path(out) / 'gradients.json'} and gradients.png")


def early_exit(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
               root: Optional[Path] = _ROOT, split: str = typer.Option("test", "--split", help="Split to test on."),
               seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
               thresholds: str = typer.Option("0,0.5,0.7,0.8,0.9,0.95,0.99,1.01", "--thresholds",
                                              help="Confidence thresholds (top softmax prob), comma-separated."),
               batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Early-exit inference (SEENN-I): accuracy vs mean time steps over a threshold sweep.

    \b
    Example:
      flexsnn analyze early-exit -c sdt.safetensors -c mtt.safetensors --T 10 --out ee/
    """
    from flexsnn.progress import cli_progress

    res = run_early_exit(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                         T=T, thresholds=parse_floats(thresholds, option="--thresholds"), batch_size=batch_size,
                         out=out, progress=cli_progress)
    typer.echo(format_early_exit(res))
    typer.echo(f"wrote {Path(out) / 'early_exit.json'} and early_exit.png")


def early_stop(chip: list[Path] = typer.Option(..., "--chip", help="ChipImage (.chip); repeat to compare."),
               label: Optional[list[str]] = _LABEL, dataset: str = _DATASET, root: Optional[Path] = _ROOT,
               split: str = typer.Option("test", "--split", help="Split to test on."), seed: int = _SEED,
               limit: Optional[int] = _LIMIT,
               k: str = typer.Option("1,2,3,4,6,8,12", "--k", help="Output spike-count margins, comma-separated."),
               out: Path = _OUT) -> None:
    """Async-simulator early stop: stop consuming events once the output margin reaches k.

    \b
    Example:
      flexsnn analyze early-stop --chip mtt.chip --k 1,2,4,8 --limit 200 --out es/
    """
    from flexsnn.progress import cli_progress

    ks = [int(v) for v in parse_floats(k, option="--k")]
    res = run_early_stop(chip, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                         ks=ks, out=out, progress=cli_progress)
    typer.echo(format_early_stop(res))
    typer.echo(f"wrote {Path(out) / 'early_stop.json'} and early_stop.png")


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command group to the flexsnn app."""
    analyze_app = typer.Typer(help=ANALYZE_HELP, no_args_is_help=True, rich_markup_mode=None)
    analyze_app.command("robustness")(robustness)
    analyze_app.command("gradients")(gradients)
    analyze_app.command("early-exit")(early_exit)
    analyze_app.command("early-stop")(early_stop)
    app.add_typer(analyze_app, name="analyze")
