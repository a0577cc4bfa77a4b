"""The one error the stores raise."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """The store cannot be opened, read or written. ``path`` is the file at fault."""

    def __init__(self, path: Path, message: str, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{path}: {message}{detail}")
        self.path = path
