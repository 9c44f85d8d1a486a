"""samna must never be imported by accident: the PyPI package is a download stub."""

import subprocess
import sys

import pytest

from flexsnn._optional import require, samna_status
from flexsnn.errors import BackendUnavailable


def test_require_refuses_samna_stub_without_importing_it():
    usable, reason = samna_status()
    if usable:
        pytest.skip(f"a real samna is installed here ({reason})")
    with pytest.raises(BackendUnavailable) as info:
        require("samna")
    assert "hardware" in str(info.value) and info.value.backend == "samna"
    assert "samna" not in sys.modules


def test_require_missing_module_names_install_hint():
    with pytest.raises(BackendUnavailable, match="pip install flexsnn_no_such_module"):
        require("flexsnn_no_such_module")


def test_cli_and_packages_import_without_samna():
    """Import every flexsnn package and build the CLI in a fresh interpreter where importing
    samna would fail loudly; none of it may touch samna or sinabs.backend.dynapcnn."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'samna' or name.startswith('samna.') or name.startswith('sinabs.backend'):\n"
        "            raise ImportError('blocked in test: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import flexsnn, flexsnn.data, flexsnn.converters, flexsnn.deploy\n"
        "from flexsnn.cli import build_app\n"
        "build_app()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
