"""The ``flexsnn`` command.

Each command group lives in its own module under ``flexsnn/commands/`` and exposes
``register(app: typer.Typer) -> None``. This file only assembles them and maps
:class:`~flexsnn.errors.FlexsnnError` to a one-line message and an exit code, so every
command is also a plain Python function that tests can call.

Command modules must import heavy libraries (torch, sinabs, numba) inside their functions,
so that ``flexsnn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from flexsnn.errors import FlexsnnError
from flexsnn.progress import configure_output

#: Command modules, in the order their commands appear in ``--help``.
COMMAND_MODULES = (
    "data",
    "train",
    "export",
    "simulate",
    "hwtest",
    "demo",
    "analyze",
)

HELP = """flexsnn: train temporally flexible SNNs and deploy them to the SynSense Speck2e.

Typical flow (offline, on the built-in saccade-mnist data):

\b
  flexsnn data prepare                      # generate and cache saccade-mnist
  flexsnn train --scheme mtt --out runs/mtt # mixed time-step training
  flexsnn export --checkpoint runs/mtt/final.safetensors --out mtt.chip
  flexsnn simulate --chip mtt.chip          # asynchronous, event-driven simulation
  flexsnn demo --quick                      # all of the above, SDT vs MTT, with a report

Run `flexsnn COMMAND --help` for each command's options and examples.
"""


def build_app() -> typer.Typer:
    """Create the typer app with every available command module registered."""
    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False,
                      rich_markup_mode=None, pretty_exceptions_enable=False)

    @app.callback()
    def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages too."),
              quiet: bool = typer.Option(False, "--quiet", "-q",
                                         help="Warnings and errors only: no INFO lines, no progress.")) -> None:
        configure_output(quiet=quiet, verbose=verbose)

    for name in COMMAND_MODULES:
        module_name = f"flexsnn.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning flexsnn errors into a message and exit code.

    Usage errors are click's (exit code 2, with the usage line); a :class:`FlexsnnError`
    prints ``error: ...`` and returns its ``exit_code``.
    """
    app = build_app()
    try:
        app(args=argv, prog_name="flexsnn", standalone_mode=True)
    except FlexsnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except SystemExit as err:
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
