"""``flexsnn simulate``: run a chip image on an event dataset with a simulated backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from flexsnn.options import MAX_COUNT, MAX_SEED, in_range

SIMULATE_HELP = """Run a chip image (from `flexsnn export`) on an event dataset.

Backends: async (default; the event-driven, integer-exact Speck2e simulator: every input
event and all it causes is handled before the next one) or time-binned (the chip-ready sinabs
model fed T frames). Prints accuracy and SynOps, writes eval.json (per-sample predictions,
confusion matrix, latency-to-decision) and raster.png (one sample's input and output events)
into --out.

\b
Examples:
  flexsnn simulate --chip mtt.chip
  flexsnn simulate --chip mtt.chip --dataset nmnist --root ~/data/N-MNIST --limit 500
  flexsnn simulate --chip mtt.chip --backend time-binned --T 10 --out runs/sim-T10
  flexsnn simulate --chip mtt.chip --workers 2 --spike multi
  torchrun --nproc-per-node 2 -m flexsnn.cli -- simulate --chip mtt.chip --shard
  flexsnn simulate --chip mtt.chip --early-exit 1,2,4,8 --limit 200
  flexsnn simulate --chip loop.chip --max-events 2000000
  flexsnn simulate --chip hand-edited.chip --trust-edits --limit 100

Speed: samples/s and SynOps/s (synaptic operations per second, comparable across networks).
Recurrent images (a core feeding itself, cycles) are simulated; a runaway cascade stops with a
named error once pending plus recorded events pass --max-events, instead of eating memory.
"""


def simulate(
    chip: Path = typer.Option(..., "--chip", help="Chip image file (.chip) from `flexsnn export`."),
    dataset: str = typer.Option("saccade-mnist", "--dataset", "-d",
                                help="saccade-mnist (offline default) or nmnist (local folder)."),
    root: Optional[Path] = typer.Option(None, "--root", help="N-MNIST folder (default "
                                        "$FLEXSNN_NMNIST_ROOT); ignored for saccade-mnist."),
    split: str = typer.Option("test", "--split", help="train, test or all."),
    seed: int = typer.Option(0, "--seed", help="Dataset split / generator seed.",
                             callback=in_range(0, MAX_SEED)),
    backend: str = typer.Option("async", "--backend", "-b", help="async or time-binned."),
    T: int = typer.Option(10, "--T", help="Time bins per sample (time-binned backend only; a T "
                          "whose forward pass does not fit in memory is refused with the estimate).",
                          callback=in_range(1)),
    spike: Optional[str] = typer.Option(None, "--spike", help="single or multi spikes per neuron "
                                        "update (default: single for async, multi for time-binned)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most N samples (>= 1).",
                                        callback=in_range(1, MAX_COUNT)),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes (>= 1; capped at the "
                                "number of samples and of CPU cores).", callback=in_range(1, 1024)),
    max_events: Optional[int] = typer.Option(
        None, "--max-events", help="Memory guard of the async simulator: most pending plus "
        "recorded events one sample may hold (default: a quarter of this machine's memory at "
        "160 bytes per event). Past it the run stops with a named error (runaway feedback or "
        "thresholds too low) instead of growing.", callback=in_range(1)),
    sample: int = typer.Option(0, "--sample", help="Index of the sample drawn in raster.png.",
                               callback=in_range(0, MAX_COUNT)),
    shard: bool = typer.Option(False, "--shard", help="Split the samples over the ranks of a torchrun "
                               "launch (automatic under torchrun); rank 0 gathers, writes and prints."),
    out: Path = typer.Option(Path("runs/simulate"), "--out", help="Output folder."),
    early_exit: Optional[str] = typer.Option(  # issue 10 (deploy/early_exit.py)
        None, "--early-exit", help="Also sweep early stop (async only): comma-separated output "
        "spike-count margins k, e.g. 1,2,4,8; stop consuming events once top minus runner-up "
        ">= k; writes early_stop.json and early_stop.png."),
    trust_edits: bool = typer.Option(False, "--trust-edits", help="Run an image whose document hash no longer "
                                     "matches (edited by hand) or a version-1 image; every other check still runs."),
) -> None:
    """Evaluate a chip image on a dataset; print accuracy and SynOps; write JSON and a raster."""
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.deploy.evaluate import evaluate_dataset
    from flexsnn.deploy.factory import make_backend
    from flexsnn.deploy.plots import raster_png
    from flexsnn.errors import ConfigError
    from flexsnn.io_utils import provenance
    from flexsnn.options import check_output_path
    from flexsnn.progress import cli_progress

    if backend not in ("async", "time-binned"):
        raise ConfigError("--backend", backend, "async or time-binned",
                          "the devkit runs through `flexsnn hwtest`")
    check_output_path(out, "--out", folder=True)
    ks = _parse_margins(early_exit, backend) if early_exit else None  # refused before the run
    image = ChipImage.load(chip, trust_edits=trust_edits)
    options: dict = {}
    if spike is not None:
        options["spike"] = spike
    if backend == "time-binned":
        options["T"] = T
    if max_events is not None:
        options["max_events"] = max_events
    be = make_backend(backend, image=image, **options)
    ds = load_event_dataset(dataset, split=split, root=root, seed=seed, limit=limit,
                            progress=cli_progress)
    # -- sharded evaluation (flexsnn.deploy.sharded, distributed helper): exact same results --
    if shard or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        from flexsnn.deploy.sharded import evaluate_in_session

        res = evaluate_in_session(be, ds, limit=limit, progress=cli_progress, workers=workers)
        if res is None:  # not rank 0: rank 0 writes and prints
            return
    else:
        res = evaluate_dataset(be, ds, limit=limit, progress=cli_progress, workers=workers)
    sharding = res.provenance.get("sharding")
    res.provenance = provenance({"chip": str(chip), "dataset": dataset, "split": split,
                                 "seed": seed, "backend": backend, "options": options,
                                 "limit": limit, "workers": workers})
    if sharding is not None:
        res.provenance["sharding"] = sharding
    out.mkdir(parents=True, exist_ok=True)
    res.write(out / "eval.json")
    if len(ds):
        i = min(max(sample, 0), len(ds) - 1)
        events, label = ds[i]
        sim_result = be.run(events)
        raster_png(out / "raster.png", events, sim_result,
                   sensor_width=ds.sensor.width,
                   title=f"{ds.name}[{i}] label {label} -> prediction {sim_result.prediction} ({backend})")
    rows = [("backend", backend + (f" (T={T})" if backend == "time-binned" else "")),
            ("samples", f"{res.samples}"),
            ("accuracy", f"{res.accuracy:.4f}"),
            ("no decision", f"{res.no_decision}"),
            ("SynOps / sample", f"{res.synops_mean:,.0f}"),
            ("latency-to-decision (median)",
             "-" if res.latency_us_median is None else f"{res.latency_us_median / 1e3:.1f} ms"),
            ("samples / s", f"{res.samples_per_s:.1f} ({res.workers} worker{'s' if res.workers > 1 else ''})"),
            ("SynOps / s", f"{res.synops_mean * res.samples_per_s:,.0f}")]
    rows += [(f"spikes / sample, core {c}", f"{v:.1f}") for c, v in sorted(res.spikes_mean.items())]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k.ljust(width)}  {v}")
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'raster.png'}")
    if early_exit:
        _early_exit(be, ds, ks, chip=chip, limit=limit, out=out)


def _parse_margins(ks_text: str, backend: str) -> list[int]:
    """``--early-exit`` margins, checked before any simulation runs."""
    from flexsnn.errors import ConfigError
    from flexsnn.options import parse_floats

    if backend != "async":
        raise ConfigError("--early-exit", ks_text, "--backend async", "early stop replays event prefixes")
    values = parse_floats(ks_text, option="--early-exit")
    if any(v != int(v) or v < 1 for v in values):
        raise ConfigError("--early-exit", ks_text, "whole numbers >= 1 (output spike-count margins), e.g. 1,2,4,8")
    return [int(v) for v in values]


def _early_exit(be, ds, ks: list[int], *, chip: Path, limit, out: Path) -> None:
    """``--early-exit``: the early-stop sweep of :mod:`flexsnn.apps.analysis` on this backend."""
    from flexsnn.apps.analysis import early_stop_entry, format_early_stop, write_early_stop
    from flexsnn.progress import cli_progress

    entry = early_stop_entry(be, ds, ks, limit=limit, progress=cli_progress)
    res = write_early_stop({Path(chip).stem: entry}, out, ks=ks, config={"chip": str(chip)})
    typer.echo(format_early_stop(res))
    typer.echo(f"wrote {out / 'early_stop.json'} and {out / 'early_stop.png'}")


def register(app: typer.Typer) -> None:
    """Add ``flexsnn simulate`` to the app."""
    app.command("simulate", help=SIMULATE_HELP)(simulate)
