"""Every output file of flexsnn goes through a temporary file and a rename (io_utils).

A static audit of the production code: each write call (``open(..., "w")``, ``write_text``,
``write_bytes``, ``savefig``, ``np.save``, ``torch.save``, ``save_file``) must target a
temporary path (``tmp`` from :func:`flexsnn.io_utils.atomic_path`, or an in-memory buffer).
A new direct write fails this test with its file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import flexsnn

ROOT = Path(flexsnn.__file__).resolve().parent
#: the atomic writers themselves
ALLOWED_FILES = {"io_utils.py"}
WRITE_METHODS = {"write_text", "write_bytes", "savefig"}
SAVE_FUNCS = {"save", "savez", "savez_compressed", "save_file"}


def _mentions_temp(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return "tmp" in text or "buf" in text


def _direct_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        where = f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}"
        if isinstance(f, ast.Attribute) and f.attr in WRITE_METHODS:
            target = f.value if f.attr != "savefig" else (node.args[0] if node.args else f.value)
            if not _mentions_temp(target):
                found.append(where)
        elif node.args and ((isinstance(f, ast.Attribute) and f.attr in SAVE_FUNCS
                             and isinstance(f.value, ast.Name) and f.value.id in ("np", "numpy", "torch"))
                            or (isinstance(f, ast.Name) and f.id in SAVE_FUNCS)):
            if not any(_mentions_temp(a) for a in node.args):  # objects' own .save() are audited inside
                found.append(where)
        elif isinstance(f, ast.Name) and f.id == "open" and len(node.args) >= 2:
            mode = node.args[1]
            if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax"):
                if not _mentions_temp(node.args[0]):
                    found.append(where)
    return found


def test_production_code_writes_only_through_temporary_files():
    files = [p for p in ROOT.rglob("*.py")
             if "tests" not in p.relative_to(ROOT).parts and ".venv" not in p.parts
             and not (p.parent.name == "hwtests" and p.name.startswith("test_"))
             and p.name not in ALLOWED_FILES]
    assert len(files) > 50
    offenders = [w for p in files for w in _direct_writes(p)]
    assert offenders == [], "\n".join(offenders)


def test_the_audit_catches_a_direct_write(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("from pathlib import Path\nPath('out.json').write_text('{}')\n"
                   "fig.savefig(out / 'a.png')\nopen(path, 'w').write('x')\nnp.save(out, a)\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert len(_direct_writes(bad)) == 4
