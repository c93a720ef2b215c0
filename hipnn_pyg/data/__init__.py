r"""Datasets in one unit system: eV, Å, e (dipoles e·Å, stress eV/Å³).

Every loader yields :class:`~torch_geometric.data.Data` with the schema documented in
:mod:`hipnn_pyg.data.base`: ``z``, ``pos``, ``cell``, ``pbc``, ``charge``, ``idx``
always; ``energy`` (float64), ``forces``, ``stress``, ``dipole``,
``dipole_magnitude``, ``quadrupole``, ``charges`` where the file has them.

:class:`HIPNNDataModule` is imported on first use, so that ``import hipnn_pyg.data``
does not pull in Lightning.
"""

from __future__ import annotations

from typing import Any

from hipnn_pyg.data.ani import ANIDataset
from hipnn_pyg.data.ase_dataset import ASEDataset, voigt_to_matrix
from hipnn_pyg.data.base import AtomsDataset, DataFormatError, Frames
from hipnn_pyg.data.formats import FORMATS, detect_format, load_dataset
from hipnn_pyg.data.loader import AtomsLoader
from hipnn_pyg.data.qm9 import QM9_TARGETS, QM9Dataset
from hipnn_pyg.data.rmd17 import RMD17Dataset, rmd17_split_files
from hipnn_pyg.data.splits import (
    Split,
    load_split,
    save_split,
    split_dataset,
    split_indices,
    split_sizes,
)

__all__ = [
    "ANIDataset",
    "ASEDataset",
    "AtomsDataset",
    "AtomsLoader",
    "DataFormatError",
    "FORMATS",
    "Frames",
    "HIPNNDataModule",
    "LevelledDataset",
    "MultiFidelityDataModule",
    "QM9Dataset",
    "QM9_TARGETS",
    "RMD17Dataset",
    "Split",
    "detect_format",
    "load_dataset",
    "load_split",
    "rmd17_split_files",
    "save_split",
    "split_dataset",
    "split_indices",
    "split_sizes",
    "voigt_to_matrix",
]


def __getattr__(name: str) -> Any:
    if name == "HIPNNDataModule":
        from hipnn_pyg.data.datamodule import HIPNNDataModule

        return HIPNNDataModule
    if name in ("LevelledDataset", "MultiFidelityDataModule"):  # imports Lightning
        from hipnn_pyg.data import levels

        return getattr(levels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
