r"""Safe reading of ``.npz`` archives with file-naming errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hipnn_pyg.data.base import DataFormatError, PathLike


def read_npz(path: PathLike, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    r"""Reads the arrays ``keys`` (all if ``None``) of an npz archive into memory.

    Args:
        path: the archive.
        keys: arrays to read; keys absent from the file are skipped.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataFormatError: if the archive is truncated or not an npz file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files if keys is None else [k for k in keys if k in archive.files]
            return {name: archive[name] for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{path}: not a readable npz archive ({exc})") from exc


def npz_keys(path: PathLike) -> list[str]:
    r"""Names of the arrays in an npz archive, without loading them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable npz archive ({exc})") from exc
