"""Imports of optional, heavy or hardware-only modules go through :func:`require`.

samna is never imported at module level anywhere in flexsnn. sinabs depends on the PyPI
``samna`` package, which is only a stub: importing it runs ``pip install`` against SynSense's
own index to fetch the real SDK. :func:`require` therefore inspects samna *before* importing
it and refuses the stub with a clear reason instead of letting it download.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from flexsnn.errors import BackendUnavailable

INSTALL_HINTS = {
    "samna": (
        "install SynSense's chip SDK (`pip install 'flexsnn[hardware]'`, then make sure the real "
        "samna from SynSense is installed, not the PyPI stub that downloads it at import time)"
    ),
}

_STUB_MARKERS = ("PYPI_SAMNA = True", "install_real_samna")


def samna_status() -> tuple[bool, str]:
    """(usable, reason) for samna, decided without importing it.

    Returns ``(False, reason)`` when samna is absent or is the PyPI download stub.
    """
    spec = importlib.util.find_spec("samna")
    if spec is None:
        return False, "samna is not installed"
    origin = spec.origin
    if origin and origin.endswith("__init__.py"):
        try:
            head = Path(origin).read_text(encoding="utf-8", errors="replace")[:4000]
        except OSError as err:
            return False, f"cannot read samna at {origin}: {err}"
        if any(marker in head for marker in _STUB_MARKERS):
            return False, (
                f"the samna at {Path(origin).parent} is the PyPI stub (it downloads the real SDK "
                "when imported, which needs SynSense's package index)"
            )
    return True, f"samna found at {origin}"


def require(module: str, *, backend: str | None = None, hint: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailable` naming the install step.

    samna (and its submodules) are checked with :func:`samna_status` first. Only
    ``ImportError`` and ``OSError`` (a broken binary) become :class:`BackendUnavailable`.
    """
    top = module.split(".")[0]
    install_hint = hint or INSTALL_HINTS.get(top, f"pip install {top}")
    if top == "samna":
        usable, reason = samna_status()
        if not usable:
            raise BackendUnavailable(backend or top, reason, install_hint)
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as err:
        raise BackendUnavailable(
            backend or top, f"cannot import {module!r} ({type(err).__name__}: {err})", install_hint
        ) from err
