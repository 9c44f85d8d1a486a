"""``flexsnn hwtest``: run the hardware-in-the-loop suite and write its report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flexsnn.options import MAX_COUNT, in_range

HWTEST_HELP = """Run the hardware-in-the-loop suite (hwtests/) on a Speck2e devkit, the simulator,
or the independent reference simulator standing in for the device.

The same checks run on every selected backend: configuration validity (flexsnn's validator and
samna's), one-spike-in-one-spike-out identity on cores 2-8, agreement on random integer chip
images, plain chains and branch-merges where the event order matters (exact on cores 2-8,
statistical on cores 0-1), reset between samples, and N-MNIST accuracy of an exported image
(with throughput and latency to decision). Each backend is compared with a run it was not
derived from: the simulator (sim) with the plain-Python reference, the reference and the
devkit with the simulator; so the suite can fail without hardware. Devkit tests skip with the
reason when samna or a devkit is missing. --chip runs the accuracy and chip-agreement tests on
an exported image; without --chip or --checkpoint a tiny model is trained first (about a
minute; low accuracy threshold, see hwtests/suite.json). Writes hwtest_report.json and
hwtest_report.md into --out.

\b
Examples:
  flexsnn hwtest --backend sim --out hw-report
  flexsnn hwtest --backend reference --chip mtt.chip
  flexsnn hwtest --backend speck2e --chip mtt.chip --data ~/N-MNIST
  flexsnn hwtest --backend both --checkpoint ck.safetensors --samples 500 --device-serial 0123
"""

HWTESTS_DIR = Path(__file__).resolve().parents[1] / "hwtests"


def run_hwtest(*, backend: str = "sim", checkpoint: Optional[Path] = None, chip: Optional[Path] = None,
               data: Optional[Path] = None,
               out: Path = Path("hwtest-report"), samples: Optional[int] = None, suite: Optional[Path] = None,
               device_index: Optional[int] = None, device_serial: Optional[str] = None,
               select: Optional[str] = None, quiet: bool = True) -> tuple[int, Path, Path]:
    """Run the suite through ``pytest.main``; return (pytest exit code, JSON path, markdown path).

    Raises:
        CheckpointError: ``checkpoint`` does not exist, or ``chip`` is not a valid chip image.
        ChipConstraintError: ``chip`` breaks a chip limit.
        ConfigError: unknown backend, or ``suite``/``data`` missing.
    """
    import pytest

    from flexsnn.errors import CheckpointError, ConfigError
    from flexsnn.hwtests.report import JSON_NAME, MD_NAME

    if backend not in ("reference", "sim", "speck2e", "both"):
        raise ConfigError("--backend", backend, "reference, sim, speck2e or both")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(str(checkpoint), "checkpoint not found", "train one with `flexsnn train`")
    if checkpoint is not None:  # fail before the suite starts, with the loader's named error
        from flexsnn.models.checkpoint import load_model

        if Path(checkpoint).suffix == ".chip":
            raise CheckpointError(str(checkpoint), "is a chip image, not a training checkpoint",
                                  "pass a chip image with --chip, or a .safetensors checkpoint with --checkpoint")
        load_model(checkpoint)
    if chip is not None:
        from flexsnn.converters.chip_image import ChipImage

        ChipImage.load(chip)  # every check before the suite starts; errors name the field
    if data is not None and not Path(data).is_dir():
        raise ConfigError("--data", str(data), "an N-MNIST folder (Train/<digit>/*.bin, Test/<digit>/*.bin)")
    if suite is not None and not Path(suite).is_file():
        raise ConfigError("--suite", str(suite), "a suite config JSON (see hwtests/suite.json)")
    out = Path(out)
    args = [str(HWTESTS_DIR), "-p", "no:cacheprovider", "-rs", f"--backend={backend}", f"--hw-report={out}"]
    args.append("-q" if quiet else "-v")
    if checkpoint is not None:
        args.append(f"--checkpoint={Path(checkpoint).resolve()}")
    if chip is not None:
        args.append(f"--chip={Path(chip).resolve()}")
    if data is not None:
        args.append(f"--data={Path(data).resolve()}")
    if samples is not None:
        args.append(f"--hw-samples={int(samples)}")
    if suite is not None:
        args.append(f"--suite={Path(suite).resolve()}")
    if device_index is not None:
        args.append(f"--device-index={int(device_index)}")
    if device_serial is not None:
        args.append(f"--device-serial={device_serial}")
    if select:
        args += ["-k", select]
    code = int(pytest.main(args))
    return code, out / JSON_NAME, out / MD_NAME


def register(app: typer.Typer) -> None:
    @app.command("hwtest", help=HWTEST_HELP)
    def hwtest(
        backend: str = typer.Option("sim", "--backend", help="reference (plain-Python simulator standing in for "
                                    "the device), sim, speck2e or both (sim and speck2e)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained checkpoint (.safetensors)."),
        chip: Optional[Path] = typer.Option(None, "--chip", help="Exported chip image (.chip) to test "
                                            "(accuracy and chip agreement); replaces --checkpoint."),
        data: Optional[Path] = typer.Option(None, "--data", help="N-MNIST folder; default the nmnist-small subset."),
        out: Path = typer.Option(Path("hwtest-report"), "--out", help="Folder for the JSON and markdown report."),
        samples: Optional[int] = typer.Option(None, "--samples", help="Test samples for the accuracy check.",
                                              callback=in_range(1, MAX_COUNT)),
        suite: Optional[Path] = typer.Option(None, "--suite", help="Suite config JSON (default hwtests/suite.json)."),
        device_index: Optional[int] = typer.Option(None, "--device-index", help="Which Speck2e devkit (0-based).",
                                                   callback=in_range(0, 255)),
        device_serial: Optional[str] = typer.Option(None, "--device-serial", help="Devkit serial number."),
        select: Optional[str] = typer.Option(None, "-k", help="Only tests matching this pytest -k expression."),
        verbose_tests: bool = typer.Option(False, "--verbose-tests", help="One line per test."),
    ) -> None:
        from flexsnn.options import check_output_path

        check_output_path(out, "--out", folder=True)
        code, json_path, md_path = run_hwtest(
            backend=backend, checkpoint=checkpoint, chip=chip, data=data, out=out, samples=samples, suite=suite,
            device_index=device_index, device_serial=device_serial, select=select, quiet=not verbose_tests)
        typer.echo(f"report: {json_path} and {md_path}")
        if code not in (0, 5):
            typer.echo(f"hardware-in-the-loop suite FAILED (pytest exit code {code}); see {md_path}", err=True)
            raise typer.Exit(code)
