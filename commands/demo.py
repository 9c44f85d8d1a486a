"""``flexsnn demo`` and ``flexsnn reproduce speck-table``: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flexsnn.options import MAX_COUNT, MAX_SEED, in_range, parse_ints

DEMO_HELP = """The README's main job: SDT vs MTT, trained here, run on a Speck2e chip image.

On saccade-mnist (generated offline, cached), train speck3c1fc with SDT at T=10 and
BatchNorm, remove biases (fold BN), fine-tune once with SDT and once with MTT (s=3, same
epochs), export both to Speck2e chip images, and evaluate each time-binned at T=1..10 and on
the event-driven asynchronous simulator, plus on real N-MNIST recordings when --data DIR is
given or ../shared/data/nmnist-small exists beside the repository. Prints a table and writes
a report folder (report.md, report.html, PNGs) and a results JSON.

Default budget: <= 15 min on a 2-core CPU; --quick: <= 3 min (rough figures).

\b
Examples:
  flexsnn demo
  flexsnn demo --quick                 # writes reports/demo-quick/
  flexsnn demo --record                # also keeps benchmarks/results/demo.json
  flexsnn demo --data ~/data/N-MNIST --reuse
  flexsnn demo --epochs 20 --finetune-epochs 10 --seed 1
"""

REPRODUCE_HELP = """Reproduce a published experiment at full scale (needs the data; a GPU helps)."""

SPECK_TABLE_HELP = """The MTT paper's Speck2e table (Table 7) at full scale on real N-MNIST.

Trains on the full N-MNIST from --data DIR (Train/ and Test/ in the original layout) with
the paper's code's settings: AdamW, lr 5e-4, weight decay 0.02, batch 32, cosine schedule,
T=10, SDT+BN for 300 epochs, bias removal, then 60 fine-tune epochs with SDT and with MTT
(s=3, later stages from U[1, 10]). Evaluates on the whole N-MNIST test set, time-binned and
on the asynchronous simulator, and writes the same report as `flexsnn demo`, with the
paper's figures (SDT 98.61 -> 96.18 on chip, MTT 97.79 -> 98.5) beside the measured ones.

\b
Examples:
  flexsnn reproduce speck-table --data ~/data/N-MNIST --device cuda
  flexsnn reproduce speck-table --data ~/data/N-MNIST --epochs 100 --finetune-epochs 20
"""


def record_path(mode: str) -> Path:
    """Where ``--record`` keeps a run's results in the repository: ``benchmarks/results/demo.json``
    for the default budget, ``demo-<mode>.json`` for any other (a quick run never replaces the
    default run's record)."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    if not results.is_dir():
        from flexsnn.errors import ConfigError

        raise ConfigError("--record", True, "a flexsnn source checkout (benchmarks/results/ beside the package)",
                          "leave --record out; the results JSON is in the report folder (--results-json)")
    return results / ("demo.json" if mode == "default" else f"demo-{mode}.json")


def _check_outputs(out: Path, results_json: Optional[Path]) -> None:
    from flexsnn.options import check_output_path

    check_output_path(out, "--out", folder=True)
    if results_json is not None:
        check_output_path(results_json, "--results-json")


def _run(config, *, quiet: bool = False, record: bool = False) -> None:
    from flexsnn.apps.demo import run_demo
    from flexsnn.apps.report import format_table
    from flexsnn.io_utils import atomic_write_text
    from flexsnn.progress import cli_progress, configure_output

    if quiet:
        configure_output(quiet=True)
    target = record_path(config.mode) if record else None  # refused before the run, not after it
    result = run_demo(config, progress=cli_progress)
    typer.echo(format_table(result))
    typer.echo("")
    typer.echo(f"report:  {Path(config.report_dir) / 'report.md'} (and report.html, PNGs)")
    typer.echo(f"results: {config.results_path}")
    if target is not None:
        atomic_write_text(target, Path(config.results_path).read_text())
        typer.echo(f"recorded: {target}")
    typer.echo(f"total:   {result.seconds:.0f} s")


def register(app: typer.Typer) -> None:
    @app.command("demo", help=DEMO_HELP)
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Small budget (<= 3 min): fewer samples and epochs."),
        data: Optional[Path] = typer.Option(
            None, "--data", help="Real N-MNIST folder to test on (Train/ and/or Test/). Default: "
            "../shared/data/nmnist-small beside the repository when present."),
        no_real: bool = typer.Option(False, "--no-real", help="Skip real recordings even when found."),
        out: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Report folder (default reports/demo, with --quick reports/demo-quick)."),
        results_json: Optional[Path] = typer.Option(None, "--results-json",
                                                    help="Results JSON (default <out>/demo.json)."),
        record: bool = typer.Option(False, "--record", help="Also keep the results as the repository's "
                                    "benchmark record: benchmarks/results/demo.json (default budget) or "
                                    "demo-quick.json (--quick). Nothing in the checkout changes without it."),
        reuse: bool = typer.Option(False, "--reuse", help="Reuse checkpoints of an earlier run with "
                                   "the same settings (in <out>/artifacts)."),
        seed: int = typer.Option(0, "--seed", help="Seed of data split, initialisation, shuffling, MTT sampling.",
                                 callback=in_range(0, MAX_SEED)),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="SDT+BN (base) epochs.",
                                             callback=in_range(1, MAX_COUNT)),
        finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs",
                                                      help="Epochs of each fine-tune (SDT and MTT).",
                                                      callback=in_range(1, MAX_COUNT)),
        train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Training recordings (class-balanced).",
                                                  callback=in_range(1, MAX_COUNT)),
        async_limit: Optional[int] = typer.Option(None, "--async-limit",
                                                  help="Test recordings run on the asynchronous simulator.",
                                                  callback=in_range(1, MAX_COUNT)),
        arms: Optional[str] = typer.Option(
            None, "--arms", help="Fine-tunes to run, comma-separated, from sdt (the baseline), mtt (the chip "
            "recipe) and mtt-plain (the paper's MTT). Default sdt,mtt."),
        channels: Optional[str] = typer.Option(
            None, "--channels", help="speck3c1fc's conv channels conv1,conv2,conv3 (default 16,32,64, the "
            "chip recipe's; 8,16,16 = the paper's net). conv1 above 16 does not fit Speck2e."),
        device: str = typer.Option("auto", "--device", help="Training device: auto (CUDA when present), cpu, cuda."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest on a busy machine).",
                                    callback=in_range(1, 1024)),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only (no progress, no INFO)."),
    ) -> None:
        from flexsnn.apps.demo import DemoConfig, resolve_real_root

        out = out or Path("reports/demo-quick" if quick else "reports/demo")
        _check_outputs(out, results_json)
        real = None if no_real else resolve_real_root(data)
        config = DemoConfig.preset(
            "quick" if quick else "default",
            real_root=str(real) if real else None, report_dir=str(out),
            results_json=str(results_json or (out / "demo.json")), reuse=reuse, seed=seed,
            base_epochs=epochs, finetune_epochs=finetune_epochs, train_limit=train_limit,
            async_limit=async_limit, device=device, threads=threads,
            channels=tuple(parse_ints(channels, option="--channels", count=3)) if channels else None,
            arms=tuple(a.strip() for a in arms.split(",") if a.strip()) if arms else None,
        )
        _run(config, quiet=quiet, record=record)

    reproduce = typer.Typer(help=REPRODUCE_HELP, no_args_is_help=True, add_completion=False,
                            rich_markup_mode=None)
    app.add_typer(reproduce, name="reproduce")

    @reproduce.command("speck-table", help=SPECK_TABLE_HELP)
    def speck_table(
        data: Path = typer.Option(..., "--data", help="Full N-MNIST folder (Train/ and Test/)."),
        out: Path = typer.Option(Path("reports/speck-table"), "--out", "-o", help="Report folder."),
        results_json: Optional[Path] = typer.Option(None, "--results-json",
                                                    help="Results JSON (default <out>/speck_table.json)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="SDT+BN epochs (paper's code: 300).",
                                             callback=in_range(1, MAX_COUNT)),
        finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs",
                                                      help="Fine-tune epochs (paper's code: 60).",
                                                      callback=in_range(1, MAX_COUNT)),
        train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Limit training recordings.",
                                                  callback=in_range(1, MAX_COUNT)),
        test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Limit test recordings.",
                                                 callback=in_range(1, MAX_COUNT)),
        async_limit: Optional[int] = typer.Option(None, "--async-limit",
                                                  help="Limit asynchronous test recordings (default all).",
                                                  callback=in_range(1, MAX_COUNT)),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size (paper's code: 32).",
                                                 callback=in_range(1, MAX_COUNT)),
        reuse: bool = typer.Option(False, "--reuse", help="Reuse matching checkpoints in <out>/artifacts."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default 1000, as the paper's code).",
                                           callback=in_range(0, MAX_SEED)),
        device: str = typer.Option("auto", "--device", help="Training device: auto (CUDA when present), cpu, cuda."),
        threads: Optional[int] = typer.Option(None, "--threads",
                                              help="torch CPU threads (default: torch's choice).",
                                              callback=in_range(1, 1024)),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only (no progress, no INFO)."),
    ) -> None:
        from flexsnn.apps.demo import resolve_real_root
        from flexsnn.apps.reproduce import speck_table_config

        _check_outputs(out, results_json)
        root = resolve_real_root(data, use_shared=False)
        config = speck_table_config(
            root, report_dir=str(out),
            results_json=str(results_json or (out / "speck_table.json")), base_epochs=epochs,
            finetune_epochs=finetune_epochs, train_limit=train_limit, test_limit=test_limit,
            async_limit=async_limit, batch_size=batch_size, reuse=reuse, seed=seed, device=device,
            threads=threads,
        )
        _run(config, quiet=quiet)
