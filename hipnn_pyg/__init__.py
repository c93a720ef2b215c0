r"""hipnn_pyg: HIP-NN interatomic potentials for PyTorch Geometric.

``from hipnn_pyg import HIPNN`` gives the model in the style of PyG's model zoo. The
calculator, the datasets and the Lightning module are exported here too, imported on
first use so that ``import hipnn_pyg`` stays light (no Lightning, no ASE I/O).
"""

from __future__ import annotations

import importlib
from typing import Any

from hipnn_pyg.graph import radius_graph
from hipnn_pyg.nn import (
    HIPNN,
    HIPNNOutput,
    HIPNNPotential,
    Potential,
    energy_forces_stress,
    predict,
)

__version__ = "0.1.0"

_LAZY = {
    "ExportedCalculator": "hipnn_pyg.calculator",
    "HIPNNCalculator": "hipnn_pyg.calculator",
    "HIPNNEnsembleCalculator": "hipnn_pyg.calculator",
    "load_model": "hipnn_pyg.serialization",
    "save_model": "hipnn_pyg.serialization",
    "ANIDataset": "hipnn_pyg.data",
    "ASEDataset": "hipnn_pyg.data",
    "QM9Dataset": "hipnn_pyg.data",
    "RMD17Dataset": "hipnn_pyg.data",
    "HIPNNDataModule": "hipnn_pyg.data",
    "load_dataset": "hipnn_pyg.data",
    "HIPNNLightningModule": "hipnn_pyg.train",
    "fit_self_energies": "hipnn_pyg.train",
}

__all__ = [
    "HIPNN",
    "HIPNNOutput",
    "HIPNNPotential",
    "Potential",
    "energy_forces_stress",
    "predict",
    "radius_graph",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
