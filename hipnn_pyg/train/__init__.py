r"""Training HIP-NN with Lightning: the module, losses, metrics, checkpoints, and the
Hydra-driven :func:`~hipnn_pyg.train.run.train` / :func:`~hipnn_pyg.train.run.evaluate`."""

from __future__ import annotations

from typing import Any

from hipnn_pyg.train.budget import BudgetSchedule
from hipnn_pyg.train.callbacks import CpuTimeLimit, EpochSeed
from hipnn_pyg.train.checkpoint import AtomicCheckpointIO
from hipnn_pyg.train.ema import EMA, ExponentialMovingAverage
from hipnn_pyg.train.metrics import ErrorMetric
from hipnn_pyg.train.module import HIPNNLightningModule

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "BudgetSchedule",
    "CpuTimeLimit",
    "EpochSeed",
    "ErrorMetric",
    "ExponentialMovingAverage",
    "HIPNNLightningModule",
    "fit_self_energies",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: self_energy.py belongs to the data side and pulls in its loaders.
    if name == "fit_self_energies":
        from hipnn_pyg.train.self_energy import fit_self_energies

        return fit_self_energies
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
