r"""The ``hipnn-active`` program behind ``scripts/active.py`` and :mod:`hipnn_pyg.cli`."""

from __future__ import annotations

import sys

from omegaconf import DictConfig


def active_main(cfg: DictConfig) -> None:
    r"""Runs :func:`~hipnn_pyg.active.loop.run_active`; a bad input or setting prints a
    one-line error and exits with status 1 (the run folder is kept: fix and rerun)."""
    from hipnn_pyg.active.loop import run_active

    try:
        run_active(cfg)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"hipnn-active: error: {error}", file=sys.stderr)
        sys.exit(1)
