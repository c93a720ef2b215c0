"""Small helpers shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the test naming the missing file."""
    if not path.exists():
        pytest.skip(f"reference file not found: {path}")
    return path
