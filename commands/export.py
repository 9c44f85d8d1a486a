"""``flexsnn export | inspect | validate``: checkpoint or NIR graph -> chip image, and checks of both."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EXPORT_HELP = """Export a trained checkpoint, or a NIR graph from any tool, to a chip image (.chip).

Folds BatchNorm, converts Linear to Conv and AvgPool to SumPool, checks every limit of the
chosen chip (all problems are listed at once), maps layers to cores by bipartite matching,
discretizes with sinabs' rules and writes an integer-only chip image (plus a memory PNG beside
it). The table shows each layer's threshold before and after rounding. Optionally also writes
the chip-ready model as NIR and as a one-time-step ONNX graph.

--from-nir takes a NIR graph written by sinabs, snnTorch, norse, Rockpool or `nir` itself:
Input, Conv2d, IF (or a LIF without leak), SumPool2d, AvgPool2d, Flatten, Affine/Linear,
Output in one chain. Anything else (a leaky LIF, CubaLIF, a recurrent edge) is refused by name.

\b
Examples:
  flexsnn export --checkpoint runs/mtt/final.safetensors --out mtt.chip
  flexsnn export --from-nir net.nir --out net.chip --input-shape 2,34,34
  flexsnn export --from-nir net.nir --out net.chip --chip speck2f
  flexsnn export --checkpoint ck.safetensors --out m.chip --nir m.nir --onnx m.onnx
  flexsnn export --checkpoint ck.safetensors --out m.chip --core-order 0,1,3,5
  flexsnn export --checkpoint ck.safetensors --out m.chip --readout --allow-leak
  flexsnn export --checkpoint ck.safetensors --out m.chip --threshold-scale 0=2   # fewer SynOps
"""

INSPECT_HELP = """Print a chip image's summary (cores, shapes, thresholds, memory) and any warning
(e.g. a feedback cycle whose loop gain can run away). Writes nothing unless --png FILE asks for
a PNG of each core's kernel and neuron memory use against its capacity.

\b
Examples:
  flexsnn inspect mtt.chip
  flexsnn inspect mtt.chip --png mtt-memory.png
"""

VALIDATE_HELP = """Check a checkpoint or NIR graph (conversion + every limit of --chip + core mapping)
or a chip image (document hash, every field's type, array hashes, shapes, thresholds, limits)
without writing anything. Exit code 0 when it fits; warnings (e.g. a feedback cycle whose loop
gain can run away) go to stderr.

\b
Examples:
  flexsnn validate runs/mtt/final.safetensors
  flexsnn validate net.nir --chip speck2f
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


def _parse_shape(text: Optional[str]) -> Optional[tuple[int, int, int]]:
    from flexsnn.errors import ConfigError

    if text is None or not text.strip():
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ConfigError("--input-shape", text, "C,H,W as three integers, e.g. 2,34,34") from err
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError("--input-shape", text, "C,H,W as three positive integers, e.g. 2,34,34")
    return shape  # type: ignore[return-value]


CHIP_HELP = ("Target device: speck2e (default), speck2f or dynapcnn. Each has its own limits table "
             "(`python -m flexsnn.converters.chips` prints them with their sources).")


def export(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="Checkpoint (.safetensors with its .json)."),
    from_nir: Optional[Path] = typer.Option(None, "--from-nir", help="A NIR graph (.nir) to export instead "
                                            "of a checkpoint."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="C,H,W of the input (default: the "
                                              "NIR graph's Input node, else 2,34,34 for N-MNIST)."),
    chip: str = typer.Option("speck2e", "--chip", help=CHIP_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Chip image to write (.chip)."),
    nir_path: Optional[Path] = typer.Option(None, "--nir", help="Also write the chip-ready model as NIR."),
    onnx_path: Optional[Path] = typer.Option(None, "--onnx", help="Also write one time step as ONNX."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Accept biases; the chip adds them as a leak "
                                    "on every slow-clock tick."),
    core_order: Optional[str] = typer.Option(None, "--core-order", help="Core id per layer, e.g. 0,1,2,3 "
                                             "(default: found by matching)."),
    readout: bool = typer.Option(False, "--readout", help="Use the readout block (class k on channel 4(k-1))."),
    png: bool = typer.Option(True, "--png/--no-png", help="Write <out>.memory.png."),
    threshold_scale: Optional[str] = typer.Option(
        None, "--threshold-scale", help="Multiply cores' thresholds after discretization, POSITION=FACTOR "
        "pairs (0 = the first layer), e.g. 0=2: the first layer then sends about half as many events, "
        "which halved the chip recipe's SynOps at the same accuracy (README, 'What deployment alone "
        "changes'). Check the accuracy of the result with flexsnn simulate."),
) -> None:
    """Export a checkpoint or a NIR graph to a chip image."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.converters.memory_plot import plot_memory
    from flexsnn.errors import ConfigError
    from flexsnn.io_utils import check_distinct_paths
    from flexsnn.options import check_output_path

    if (checkpoint is None) == (from_nir is None):
        raise ConfigError("--checkpoint/--from-nir", None if checkpoint is None else "both",
                          "exactly one of them", "give the checkpoint to export, or --from-nir FILE.nir")
    source = checkpoint if checkpoint is not None else from_nir
    if from_nir is not None and from_nir.suffix.lower() != ".nir":
        raise ConfigError("--from-nir", str(from_nir), "a .nir file (HDF5 written by nir.write)")
    png_path = out.with_suffix(out.suffix + ".memory.png") if png else None
    inputs = ({"--checkpoint": checkpoint, "the checkpoint's weights": checkpoint.with_suffix(".safetensors"),
               "the checkpoint's sidecar": checkpoint.with_suffix(".json")} if checkpoint is not None
              else {"--from-nir": from_nir})
    check_distinct_paths(inputs, {"--out": out, "--nir": nir_path, "--onnx": onnx_path, "the memory PNG": png_path})
    for path, option in ((out, "--out"), (nir_path, "--nir"), (onnx_path, "--onnx")):
        if path is not None:  # before any work: parent writable, not a folder, not under a file
            check_output_path(path, option)
    scale = None
    if threshold_scale is not None:
        from flexsnn.converters.thresholds import parse_threshold_scale, scale_thresholds

        scale = parse_threshold_scale(threshold_scale)  # before the export's work
    image, report = export_chip_image(source, input_shape=_parse_shape(input_shape), allow_leak=allow_leak,
                                      core_order=_parse_order(core_order), readout=readout, chip=chip)
    if scale is not None:
        image = scale_thresholds(image, scale)
        typer.echo("thresholds scaled: " + ", ".join(f"core position {i} x{k:g}" for i, k in sorted(scale.items())))
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

        written = export_nir(chip_model, nir_path, input_shape=image.input.shape,
                             names=report.extra["source_names"], readout=image.readout)
        typer.echo(f"wrote {written}")
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
    from flexsnn.converters.export import threshold_rounding

    rows = threshold_rounding(image)
    if rows:
        typer.echo("threshold rounding: " + ", ".join(
            f"core {r['core']} {r['exact']:.3f} -> {r['threshold_high']} ({100 * r['error']:+.2f}%)" for r in rows))
    else:
        typer.echo("threshold rounding: not recorded (image exported before it was tracked)")
    for w in chip_image_warnings(image):
        typer.echo(f"warning: {w}", err=True)
    if png is not None:
        from flexsnn.converters.memory_plot import plot_memory

        typer.echo(f"wrote {plot_memory(image, png)}")


def validate(
    path: Path = typer.Argument(..., help="Checkpoint (.safetensors), NIR graph (.nir) or chip image (.chip)."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Accept biases as a leak."),
    trust_edits: bool = typer.Option(False, "--trust-edits", help="Accept a chip image whose document hash no "
                                     "longer matches, or a version-1 image; every other check still runs."),
    chip: Optional[str] = typer.Option(None, "--chip", help=CHIP_HELP + " Default: the device a chip image "
                                       "was exported for; speck2e for checkpoints and NIR graphs."),
) -> None:
    """Validate a checkpoint, a NIR graph or a chip image against a chip's limits."""
    from flexsnn.converters.chip_check import chip_image_warnings
    from flexsnn.converters.chip_image import ChipImage

    if path.suffix in (".safetensors", ".json", ".nir"):
        from flexsnn.converters.export import export_chip_image

        chip = chip or "speck2e"
        image, _ = export_chip_image(path, allow_leak=allow_leak, chip=chip)
    else:
        from flexsnn.converters.chips import chip_limits

        image = ChipImage.load(path, limits=chip_limits(chip) if chip else None, trust_edits=trust_edits)
        chip = chip or image.chip
    for w in chip_image_warnings(image):
        typer.echo(f"warning: {w}", err=True)
    made_for = f", exported for {image.chip}" if image.chip != chip else ""
    typer.echo(f"ok: {path} fits {chip} (cores {image.core_order()}, output core {image.output_core}{made_for})")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``inspect`` and ``validate`` to the flexsnn app."""
    app.command("export", help=EXPORT_HELP)(export)
    app.command("inspect", help=INSPECT_HELP)(inspect)
    app.command("validate", help=VALIDATE_HELP)(validate)
