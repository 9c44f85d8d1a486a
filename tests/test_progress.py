"""Progress and log output for people and for machines (issue 20): tqdm bars on a terminal,
plain throttled lines otherwise, ``-q`` for warnings and errors only, ``-v`` for debug."""

from __future__ import annotations

import io
import logging

import pytest

from flexsnn import progress as progress_mod
from flexsnn.progress import LineProgress, cli_progress, configure_output


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level = root.level
    yield
    configure_output()
    root.setLevel(level)


def test_line_progress_writes_plain_throttled_lines(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = LineProgress(total=100, desc="epoch 1/3", interval=10.0, stream=out)
    for _ in range(100):            # one clock second per update: 100 s in all
        now[0] += 1.0
        bar.update(1)
        bar.set_postfix(loss=0.123456)
    bar.close()
    bar.close()                     # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 11          # one line per 10 s, plus the closing line
    assert lines[-1].startswith("epoch 1/3: done 100/100 (100%)") and "loss=0.1235" in lines[-1]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_cli_progress_without_a_terminal_is_line_based(restore_logging, capsys) -> None:
    configure_output()              # an earlier `-q` in this process must not leak into this check
    bar = cli_progress(total=3, desc="eval")
    assert isinstance(bar, LineProgress)    # pytest's captured stderr is not a terminal
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("eval: done 3/3")


def test_quiet_leaves_warnings_and_errors_only(restore_logging, capsys) -> None:
    configure_output(quiet=True)
    log = logging.getLogger("flexsnn.test")
    assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)
    bar = cli_progress(total=2, desc="silent")
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""
    configure_output(verbose=True)
    assert log.isEnabledFor(logging.DEBUG)
    configure_output()
    assert log.isEnabledFor(logging.INFO) and not log.isEnabledFor(logging.DEBUG)


def test_root_quiet_option_is_accepted(restore_logging, capsys) -> None:
    from flexsnn.cli import main

    assert main(["-q", "demo", "--help"]) == 0
    assert not logging.getLogger("flexsnn").isEnabledFor(logging.INFO)
