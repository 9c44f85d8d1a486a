"""``flexsnn export | inspect | validate``: checkpoint -> Speck2e chip image, and checks of both."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EXPORT_HELP = """Export a trained checkpoint to a Speck2e chip image (.chip).

Folds BatchNorm, converts Linear to Conv and AvgPool to SumPool, checks every Speck2e limit
(all problems are listed at once), maps layers to cores by bipartite matching, discretizes
with sinabs' rules and writes an integer-only chip image (plus a memory PNG beside it).
Optionally also writes the chip-ready model as NIR and as a one-time-step ONNX graph.

\b
Examples:
  flexsnn export --checkpoint runs/mtt/final.safetensors --out mtt.chip
  flexsnn export --checkpoint ck.safetensors --out m.chip --nir m.nir --onnx m.onnx
  flexsnn export --checkpoint ck.safetensors --out m.chip --core-order 0,1,3,5
  flexsnn export --checkpoint ck.safetensors --out m.chip --readout --allow-leak
"""

INSPECT_HELP = """Print a chip image's summary (cores, shapes, thresholds, memory) and any warning
(e.g. a feedback cycle whose loop gain can run away). Writes nothing unless --png FILE asks for
a PNG of each core's kernel and neuron memory use against its capacity.

\b
Examples:
  flexsnn inspect mtt.chip
  flexsnn inspect mtt.chip --png mtt-memory.png
"""

VALIDATE_HELP = """Check a checkpoint (conversion + every Speck2e limit + core mapping) or a chip
image (document hash, every field's type, array hashes, shapes, thresholds, limits) without
writing anything. Exit code 0 when it fits; warnings (e.g. a feedback cycle whose loop gain can
run away) go to stderr.

\b
Examples:
  flexsnn validate runs/mtt/final.safetensors
  flexsnn validate mtt.chip
"""


def _parse_order(text: Optional[str]) -> Optional[list[int]]:
    from flexsnn.errors import ConfigError

    if text is None or not text.strip():
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise ConfigError("--core-order", text, "comma-separated core ids, e.g. 0,1,2,3") from err


def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (.safetensors with its .json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Chip image to write (.chip)."),
    nir_path: Optional[Path] = typer.Option(None, "--nir", help="Also write the chip-ready model as NIR."),
    onnx_path: Optional[Path] = typer.Option(None, "--onnx", help="Also write one time step as ONNX."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Accept biases; the chip adds them as a leak "
                                    "on every slow-clock tick."),
    core_order: Optional[str] = typer.Option(None, "--core-order", help="Core id per layer, e.g. 0,1,2,3 "
                                             "(default: found by matching)."),
    readout: bool = typer.Option(False, "--readout", help="Use the readout block (class k on channel 4(k-1))."),
    png: bool = typer.Option(True, "--png/--no-png", help="Write <out>.memory.png."),
) -> None:
    """Export a checkpoint to a Speck2e chip image."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.converters.memory_plot import plot_memory
    from flexsnn.io_utils import check_distinct_paths
    from flexsnn.options import check_output_path

    png_path = out.with_suffix(out.suffix + ".memory.png") if png else None
    check_distinct_paths({"--checkpoint": checkpoint, "the checkpoint's weights": checkpoint.with_suffix(".safetensors"),
                          "the checkpoint's sidecar": checkpoint.with_suffix(".json")},
                         {"--out": out, "--nir": nir_path, "--onnx": onnx_path, "the memory PNG": png_path})

    for path, option in ((out, "--out"), (nir_path, "--nir"), (onnx_path, "--onnx")):
        if path is not None:  # before any work: parent writable, not a folder, not under a file
            check_output_path(path, option)
    image, report = export_chip_image(checkpoint, allow_leak=allow_leak, core_order=_parse_order(core_order),
                                      readout=readout)
    image.save(out)
    typer.echo(image.summary())
    typer.echo(report.table())
    for w in report.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"wrote {out}")
    if png_path is not None:
        typer.echo(f"wrote {plot_memory(image, png_path)}")
    chip_model = report.extra["chip_model"]
    if nir_path is not None:
        from flexsnn.converters.nir_export import export_nir

        typer.echo(f"wrote {export_nir(chip_model, nir_path, input_shape=image.input.shape)}")
    if onnx_path is not None:
        from flexsnn.converters.onnx_export import export_onnx

        typer.echo(f"wrote {export_onnx(chip_model, onnx_path, input_shape=image.input.shape)}")


def inspect(
    chip: Path = typer.Argument(..., help="Chip image (.chip)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write a PNG of each core's memory use to FILE "
                                       "(nothing is written without it)."),
    trust_edits: bool = typer.Option(False, "--trust-edits", help="Read an image whose document hash no longer "
                                     "matches (edited by hand) or a version-1 image; every other check still runs."),
) -> None:
    """Summary of a chip image (read-only unless --png is given)."""
    from flexsnn.converters.chip_check import chip_image_warnings
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.io_utils import check_distinct_paths
    from flexsnn.options import check_output_path

    check_distinct_paths({"CHIP": chip}, {"--png": png})
    if png is not None:
        check_output_path(png, "--png")
    image = ChipImage.load(chip, trust_edits=trust_edits)
    typer.echo(image.summary())
    if image.source:
        typer.echo(f"source: {image.source}")
    typer.echo("scales: " + ", ".join(f"{s:.4g}" for s in image.layer_scales))
    for w in chip_image_warnings(image):
        typer.echo(f"warning: {w}", err=True)
    if png is not None:
        from flexsnn.converters.memory_plot import plot_memory

        typer.echo(f"wrote {plot_memory(image, png)}")


def validate(
    path: Path = typer.Argument(..., help="Checkpoint (.safetensors) or chip image (.chip)."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Accept biases as a leak."),
    trust_edits: bool = typer.Option(False, "--trust-edits", help="Accept a chip image whose document hash no "
                                     "longer matches, or a version-1 image; every other check still runs."),
) -> None:
    """Validate a checkpoint or a chip image against the Speck2e limits."""
    from flexsnn.converters.chip_check import chip_image_warnings
    from flexsnn.converters.chip_image import ChipImage

    if path.suffix in (".safetensors", ".json"):
        from flexsnn.converters.export import export_chip_image

        image, _ = export_chip_image(path, allow_leak=allow_leak)
    else:
        image = ChipImage.load(path, trust_edits=trust_edits)
    for w in chip_image_warnings(image):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"ok: {path} fits {image.chip} (cores {image.core_order()}, output core {image.output_core})")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``inspect`` and ``validate`` to the flexsnn app."""
    app.command("export", help=EXPORT_HELP)(export)
    app.command("inspect", help=INSPECT_HELP)(inspect)
    app.command("validate", help=VALIDATE_HELP)(validate)
