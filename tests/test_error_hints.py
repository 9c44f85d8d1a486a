"""Errors name what exists (issue 20): every option or command an error message suggests exists
for the command that failed, and inputs are refused before the long work starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from chip_builders import nmnist_image
from flexsnn.cli import build_app, main

#: A backquoted command line inside a message, e.g. `flexsnn data prepare --root DIR`.
QUOTED = re.compile(r"`(flexsnn [^`]*)`")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _command(path: list[str]):
    cmd = typer.main.get_command(build_app())
    for token in path:
        assert hasattr(cmd, "commands") and token in cmd.commands, f"no command {' '.join(path)}"
        cmd = cmd.commands[token]
    return cmd


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def _command_path(argv: list[str]) -> list[str]:
    cmd = typer.main.get_command(build_app())
    path = []
    for token in argv:
        if hasattr(cmd, "commands") and token in cmd.commands:
            path.append(token)
            cmd = cmd.commands[token]
        elif not token.startswith("-") and hasattr(cmd, "commands"):
            break
    return path


def suggestions_are_valid(message: str, failing: list[str]) -> list[str]:
    """Problems with the options/commands ``message`` names (empty: all exist)."""
    problems = []
    for quoted in QUOTED.findall(message):
        words = quoted.split()[1:]
        path = [w for w in words if not w.startswith("-")][:2]
        while path:
            try:
                cmd = _command(path)
                break
            except AssertionError:
                path = path[:-1]
        else:
            problems.append(f"`{quoted}` names no flexsnn command")
            continue
        problems += [f"`{quoted}`: {o} is not an option of {' '.join(path)}"
                     for o in OPTION.findall(quoted) if o not in _options(cmd)]
    bare = QUOTED.sub("", message)
    own = _options(_command(failing))
    problems += [f"{o} is not an option of flexsnn {' '.join(failing)}" for o in OPTION.findall(bare)
                 if o not in own]
    return problems


def test_checker_catches_a_wrong_hint() -> None:
    assert suggestions_are_valid("pass --download", ["simulate"])
    assert suggestions_are_valid("run `flexsnn data info --download`", ["simulate"])
    assert not suggestions_are_valid("run `flexsnn data prepare --download`", ["simulate"])
    assert not suggestions_are_valid("pass --root DIR", ["data", "info"])


@pytest.fixture(scope="module")
def chip(tmp_path_factory) -> Path:
    return nmnist_image(0).save(tmp_path_factory.mktemp("chip") / "m.chip")


def _cases(tmp: Path, chip: Path) -> list[list[str]]:
    missing = str(tmp / "missing")
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    bad = tmp / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    return [
        ["data", "info", "--dataset", "nmnist", "--root", missing],
        ["data", "info", "--dataset", "nmnist"],
        ["simulate", "--chip", str(chip), "--dataset", "nmnist", "--root", missing, "--out", str(tmp / "s")],
        ["simulate", "--chip", str(chip), "--dataset", "nmnist", "--out", str(tmp / "s")],
        ["simulate", "--chip", str(chip), "--early-exit", "a,b", "--out", str(tmp / "s")],
        ["simulate", "--chip", str(chip), "--backend", "time-binned", "--early-exit", "1,2", "--out", str(tmp / "s")],
        ["simulate", "--chip", missing + ".chip"],
        ["train", "--loss", "bogus", "--out", str(tmp / "t")],
        ["train", "--device", "cuda", "--out", str(tmp / "t"), "--epochs", "1", "--limit", "8"],
        ["train", "--resume", "--out", str(empty)],
        ["export", "--checkpoint", missing + ".safetensors", "--out", str(tmp / "x.chip")],
        ["hwtest", "--checkpoint", str(chip), "--out", str(tmp / "hw")],
        ["hwtest", "--checkpoint", str(bad), "--out", str(tmp / "hw")],
        ["demo", "--data", str(empty), "--out", str(tmp / "d")],
    ]


def test_every_hint_names_an_existing_option(tmp_path, chip, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.delenv("FLEXSNN_NMNIST_ROOT", raising=False)
    problems = []
    for argv in _cases(tmp_path, chip):
        if argv[:3] == ["train", "--device", "cuda"] and torch.cuda.is_available():
            continue
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, f"{argv} should fail"
        assert "Traceback" not in err and err.strip(), f"{argv}: {err!r}"
        # failing before the work: no run started, so the output folder holds nothing
        if "--out" in argv and argv[argv.index("--out") + 1] != str(tmp_path / "empty"):
            out = Path(argv[argv.index("--out") + 1])
            assert not out.exists() or not any(out.iterdir()), f"{argv} wrote {sorted(out.iterdir())}"
        problems += [f"{' '.join(argv[:2])}: {p}" for p in suggestions_are_valid(err, _command_path(argv))]
    assert problems == []
