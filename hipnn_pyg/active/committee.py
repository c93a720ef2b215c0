r"""Query by committee: the ensemble's disagreement on a structure.

The energy measure is ANI-1x's (Smith et al., J. Chem. Phys. 148, 241733, 2018;
TorchANI's ``energies_qbcs``): the standard deviation of the members' total energies
divided by the square root of the atom count,

.. math::
    \rho = \frac{\sigma(E)}{\sqrt{N_\mathrm{atoms}}}, \qquad
    \sigma(E) = \sqrt{\frac{1}{K - 1} \sum_k (E_k - \bar E)^2},

with the sample (``K - 1``) standard deviation over the ``K`` members, as TorchANI
does by default. The force measure is the largest per-atom spread of the force
vectors, :math:`\max_i \sqrt{\sum_a \sigma(F_{ia})^2}` (eV/Å), with the same sample
standard deviation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from torch import nn

from hipnn_pyg.calculator import HIPNNEnsembleCalculator

#: Disagreement measures of :class:`Committee`: ``info`` key of each.
MEASURES = {"energy": "rho", "forces": "force_dev"}


def energy_disagreement(energies: Sequence[float], num_atoms: int) -> float:
    r"""ANI-1x's :math:`\rho = \sigma(E)/\sqrt{N}` (eV/√atom) from the members' total
    energies (eV); sample standard deviation over the members."""
    values = np.asarray(energies, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"a committee needs at least 2 energies, got {values.size}")
    return float(values.std(ddof=1) / math.sqrt(num_atoms))


def force_disagreement(forces: np.ndarray) -> float:
    r"""The largest per-atom force spread (eV/Å) from the members' forces
    ``[num_models, num_atoms, 3]``: :math:`\max_i \sqrt{\sum_a \sigma(F_{ia})^2}`."""
    forces = np.asarray(forces, dtype=np.float64)
    if forces.ndim != 3 or forces.shape[0] < 2:
        raise ValueError(f"expected member forces [num_models >= 2, num_atoms, 3], got "
                         f"{list(forces.shape)}")
    variance = forces.var(axis=0, ddof=1).sum(axis=-1)
    return float(np.sqrt(variance.max()))


@dataclass
class Prediction:
    r"""The committee on one structure: means, and the two disagreement measures."""

    energy: float
    forces: np.ndarray
    rho: float
    force_dev: float

    def measure(self, name: str) -> float:
        r"""The disagreement called ``name`` (``"energy"``: ρ, ``"forces"``)."""
        if name not in MEASURES:
            raise ValueError(f"unknown disagreement measure '{name}'; choose one of "
                             f"{sorted(MEASURES)}")
        return float(getattr(self, MEASURES[name]))


class Committee(HIPNNEnsembleCalculator):
    r"""An ensemble calculator that also reports the query-by-committee measures.

    After a calculation, ``results`` holds what
    :class:`~hipnn_pyg.calculator.HIPNNEnsembleCalculator` gives plus ``rho`` and
    ``force_dev`` (see module docs).

    Args:
        models (Sequence[nn.Module or str]): The members, or paths of saved models.
        device (str): Torch device. (default: :obj:`"cpu"`)
        dtype (torch.dtype): Precision. (default: :obj:`torch.float64`)
    """

    def __init__(self, models: Sequence[nn.Module | str | os.PathLike[str]],
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> None:
        super().__init__(models, device=device, dtype=dtype)

    @property
    def species(self) -> set[int]:
        r"""Atomic numbers every member knows."""
        known = [set(int(z) for z in getattr(model, "species", [])) for model in self.models]
        return set.intersection(*known)

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        num_models = len(self.models)
        self.results["rho"] = energy_disagreement(self.results["energies_all"], len(self.atoms))
        # the parent's spreads are population ones (ddof=0): rescale to ddof=1
        variance = np.square(self.results["forces_std"]) * num_models / (num_models - 1)
        self.results["force_dev"] = float(np.sqrt(variance.sum(axis=-1).max()))

    def predict(self, atoms: Atoms) -> Prediction:
        r"""The committee's means and disagreement on ``atoms`` (reusing the last
        results when ``atoms`` has not changed since)."""
        if self.calculation_required(atoms, ["energy", "forces"]):
            self.calculate(atoms, ["energy", "forces"])
        return Prediction(float(self.results["energy"]), np.array(self.results["forces"]),
                          float(self.results["rho"]), float(self.results["force_dev"]))
