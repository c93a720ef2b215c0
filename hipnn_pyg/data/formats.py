r"""One entry point for every supported file: :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hipnn_pyg.data.ani import ANIDataset
from hipnn_pyg.data.ase_dataset import ASEDataset, is_ase_readable
from hipnn_pyg.data.base import AtomsDataset, DataFormatError, PathLike
from hipnn_pyg.data.npz import npz_keys
from hipnn_pyg.data.qm9 import QM9Dataset
from hipnn_pyg.data.rmd17 import RMD17Dataset

#: Format names accepted by :func:`load_dataset` and the class each selects.
FORMATS: dict[str, type[AtomsDataset]] = {
    "rmd17": RMD17Dataset,
    "md17": RMD17Dataset,
    "qm9": QM9Dataset,
    "ani": ANIDataset,
    "hdf5": ANIDataset,
    "ase": ASEDataset,
    "extxyz": ASEDataset,
    "xyz": ASEDataset,
    "db": ASEDataset,
}
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: PathLike) -> str:
    r"""Guesses the format of ``path`` from its name and, for npz and HDF5, its content.

    Returns:
        ``"rmd17"``, ``"qm9"``, ``"ani"`` or ``"ase"``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataFormatError: if the format is not recognised.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".npz":
        keys = set(npz_keys(path))
        if {"offsets", "Z", "R_ang"} <= keys:
            return "qm9"
        if {"nuclear_charges", "coords"} <= keys or {"z", "R"} <= keys:
            return "rmd17"
        raise DataFormatError(f"{path}: npz layout not recognised (keys {sorted(keys)})")
    if path.suffix in _HDF5_SUFFIXES:
        return "ani"
    with open(path, "rb") as stream:
        if stream.read(8) == _HDF5_MAGIC:
            return "ani"
    if is_ase_readable(path):
        return "ase"
    raise DataFormatError(f"{path}: unknown data format; pass format= one of {sorted(FORMATS)}")


def load_dataset(path: PathLike, format: str = "auto", **kwargs: Any) -> AtomsDataset:
    r"""Loads any supported file as an :class:`~hipnn_pyg.data.AtomsDataset` in eV, Å, e.

    Args:
        path: the data file.
        format: ``"auto"`` (see :func:`detect_format`) or a key of :data:`FORMATS`:
            ``"rmd17"``/``"md17"``, ``"qm9"``, ``"ani"``/``"hdf5"``,
            ``"ase"``/``"extxyz"``/``"xyz"``/``"db"``.
        **kwargs: passed to the dataset class (e.g. ``target="U0"`` for QM9,
            ``energy_key="REF_energy"`` for ASE files).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataFormatError: for an unknown format or an unreadable file.
    """
    key = detect_format(path) if format == "auto" else format.lower()
    if key not in FORMATS:
        raise DataFormatError(
            f"{path}: unknown format '{format}'; choose from {['auto', *sorted(FORMATS)]}"
        )
    cls = FORMATS[key]
    if key in ("extxyz", "db"):  # "xyz" and "ase" let ASE guess (extxyz for *.xyz)
        kwargs.setdefault("format", key)
    return cls(path, **kwargs)
