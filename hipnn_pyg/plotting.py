r"""Shared matplotlib plumbing for the PNG plots (parity, IR spectra, density)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    r"""``matplotlib.pyplot`` on the Agg backend: plots go to files, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    r"""Lays out, writes (creating folders) and closes ``fig``; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
