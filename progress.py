"""Progress reporting without printing from library code.

Library functions that loop for long take ``progress: ProgressFactory | None``; they call
``bar = progress(total=N, desc="train")`` and then ``bar.update(1)``,
``bar.set_postfix(loss=...)`` and ``bar.close()``. The CLI passes :func:`tqdm_progress`;
the default :func:`null_progress` does nothing.
"""

from __future__ import annotations

from typing import Any, Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> Any: ...

    def close(self) -> Any: ...


class ProgressFactory(Protocol):
    def __call__(self, *, total: int | None, desc: str) -> ProgressBar: ...


class _NullBar:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **values: Any) -> None:
        return None

    def close(self) -> None:
        return None


def null_progress(*, total: int | None = None, desc: str = "") -> ProgressBar:
    """A progress factory that reports nothing (the library default)."""
    return _NullBar()


def tqdm_progress(*, total: int | None = None, desc: str = "") -> ProgressBar:
    """A progress factory drawing a tqdm bar on stderr (used by the CLI)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
