"""The layout rules of the README's Layout section, checked on the source (issue 13):
no import circle (lazy imports included), `commands/` imported only by `cli.py` and never by
another command module, and no module over 700 lines."""

from __future__ import annotations

from import_graph import REPO, cycles, import_graph, imports_of, package_modules

MAX_LINES = 700


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_sees_a_lazy_cycle(tmp_path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from flexsnn.b import g\n")
    (tmp_path / "b.py").write_text("from flexsnn import a\n")
    (tmp_path / "c.py").write_text("import flexsnn.a\n")
    (tmp_path / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flexsnn.c import x\n")
    graph = import_graph(tmp_path)
    assert graph["flexsnn.c"] == {"flexsnn.a"}
    assert graph["flexsnn.d"] == set()          # type-checking imports never run
    assert cycles(graph) == [["flexsnn.a", "flexsnn.b"]]


def test_commands_are_imported_only_by_cli() -> None:
    mods = package_modules()
    offenders = []
    for module, path in mods.items():
        if module in ("flexsnn.cli",):
            continue
        for dep in imports_of(module, path, mods):
            if dep.startswith("flexsnn.commands") and dep != "flexsnn.commands":
                offenders.append(f"{module} imports {dep}")
    assert offenders == [], "only cli.py may import from commands/; move shared code into the library"


def test_no_module_over_700_lines() -> None:
    long = {m: n for m, p in package_modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (limit {MAX_LINES} lines): {long}"


def test_package_modules_cover_the_layers() -> None:
    mods = package_modules()
    for layer in ("data", "models", "training", "converters", "deploy", "apps", "commands"):
        assert f"flexsnn.{layer}" in mods
    assert not any(m.startswith("flexsnn.tests") for m in mods)
    assert (REPO / "cli.py").is_file()
