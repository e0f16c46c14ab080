"""Plugins written by a test, importable as installed ones would be."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def on_path(folder: Path, *modules: str) -> Iterator[Path]:
    """``folder`` first on ``sys.path`` for the block; after it, the folder goes and so do the
    ``modules`` imported from it (names, or prefixes ending in ``*``)."""
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in list(sys.modules):
            if any(name == m or (m.endswith("*") and name.startswith(m[:-1])) for m in modules):
                del sys.modules[name]
