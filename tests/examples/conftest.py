"""The example plugins are importable as their installed packages would be: from their folders."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
for folder in sorted(EXAMPLES.iterdir()):
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
