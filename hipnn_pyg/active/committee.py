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

Members trained separately carry their own energy offsets (their self-energies), which
ρ counts as disagreement although they shift every structure of a composition alike.
The offset-free measure ``rho_centred`` first subtracts each member's offset, one per
element and member fitted by least squares to the members' deviations from the committee
mean over the training set (:meth:`Committee.fit_offsets`; with one composition, the
mean deviation), so it measures disagreement in how energies *vary*.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from torch import nn

from hipnn_pyg.calculator import HIPNNEnsembleCalculator

#: Disagreement measures of :class:`Committee`: ``info`` key of each.
MEASURES = {"energy": "rho", "forces": "force_dev", "energy_centred": "rho_centred"}


def member_offsets(energies: np.ndarray, counts: np.ndarray) -> np.ndarray:
    r"""Each member's offset per element ``[num_elements, num_models]`` (eV per atom):
    the least-squares fit (minimum norm) of the members' deviations from the committee
    mean, ``energies`` ``[num_structures, num_models]``, on the structures' element
    counts ``[num_structures, num_elements]``. With one composition it spreads each
    member's mean deviation over that composition's atoms."""
    energies = np.asarray(energies, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if energies.ndim != 2 or energies.shape[1] < 2 or energies.shape[0] == 0:
        raise ValueError(f"expected energies [num_structures >= 1, num_models >= 2], got "
                         f"{list(energies.shape)}")
    if counts.ndim != 2 or counts.shape[0] != energies.shape[0]:
        raise ValueError(f"expected element counts [{energies.shape[0]}, num_elements], got "
                         f"{list(counts.shape)}")
    deviations = energies - energies.mean(axis=1, keepdims=True)
    table, *_ = np.linalg.lstsq(counts, deviations, rcond=None)
    return table


def element_counts(numbers: np.ndarray, elements: Sequence[int]) -> np.ndarray:
    r"""How many atoms of each of ``elements`` ``numbers`` holds ``[num_elements]``."""
    numbers = np.asarray(numbers)
    return np.array([np.count_nonzero(numbers == z) for z in elements], dtype=np.float64)


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


def frames_batch(frames: Sequence[Atoms], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> SimpleNamespace:
    r"""Structures as one batch with the fields :func:`~hipnn_pyg.nn.predict.predict`
    reads (``z``, ``pos``, ``batch``, ``cell``, ``pbc``, ``charge``, ``num_graphs``)."""
    def tensor(values: Any, kind: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=kind, device=device)

    return SimpleNamespace(
        z=tensor(np.concatenate([a.numbers for a in frames]), torch.long),
        pos=tensor(np.concatenate([a.positions for a in frames]), dtype),
        batch=tensor(np.repeat(np.arange(len(frames)), [len(a) for a in frames]), torch.long),
        cell=tensor(np.stack([np.asarray(a.cell) for a in frames]), dtype),
        pbc=tensor(np.stack([a.pbc for a in frames]), torch.bool),
        charge=tensor([float(a.info.get("charge", 0.0)) for a in frames], dtype),
        num_graphs=len(frames))


@dataclass
class Prediction:
    r"""The committee on one structure: means, and the two disagreement measures."""

    energy: float
    forces: np.ndarray
    rho: float
    force_dev: float
    rho_centred: float = float("nan")
    #: The members' energies ``[num_models]`` (eV).
    energies: np.ndarray = field(default_factory=lambda: np.zeros(0))

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
        #: Elements and per-element member offsets ``[num_elements, num_models]``
        #: (:meth:`fit_offsets`; none fitted: no offsets).
        self.offset_elements: list[int] = []
        self.offset_table = np.zeros((0, len(self.models)))
        #: Median of each measure over the training set (:meth:`fit_offsets`).
        self.training_disagreement: dict[str, float] = {}

    def offsets(self, numbers: np.ndarray) -> np.ndarray:
        r"""The members' offsets ``[num_models]`` (eV) for a structure of atomic numbers
        ``numbers`` (elements outside the fitted table add nothing)."""
        return element_counts(numbers, self.offset_elements) @ self.offset_table

    def fit_offsets(self, frames: Sequence[Atoms]) -> np.ndarray:
        r"""Fits the members' per-element offsets (:func:`member_offsets`) on ``frames``
        (the training set), for ``rho_centred``, and records the median of every measure
        there (:attr:`training_disagreement`, for relative thresholds); returns the
        table ``[num_elements, num_models]``."""
        self.offset_elements, self.offset_table = [], np.zeros((0, len(self.models)))
        predictions = self.predict_many(frames)
        energies = np.array([p.energies for p in predictions])
        elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
        counts = np.array([element_counts(a.numbers, elements) for a in frames])
        self.offset_table = member_offsets(energies, counts)
        self.offset_elements = elements
        self.training_disagreement = {
            "energy": float(np.median([p.rho for p in predictions])),
            "forces": float(np.median([p.force_dev for p in predictions])),
            "energy_centred": float(np.median([
                energy_disagreement(p.energies - self.offsets(a.numbers), len(a))
                for p, a in zip(predictions, frames, strict=True)]))}
        self.reset()
        return self.offset_table

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
        self.results["rho_centred"] = energy_disagreement(
            np.asarray(self.results["energies_all"]) - self.offsets(self.atoms.numbers),
            len(self.atoms))
        # the parent's spreads are population ones (ddof=0): rescale to ddof=1
        variance = np.square(self.results["forces_std"]) * num_models / (num_models - 1)
        self.results["force_dev"] = float(np.sqrt(variance.sum(axis=-1).max()))

    def predict_many(self, frames: Sequence[Atoms], batch_size: int = 64) -> list[Prediction]:
        r"""The committee on each of ``frames``, evaluated in batches of ``batch_size``
        structures (the same numbers as :meth:`predict`, many times faster for a pool
        or a test set)."""
        from hipnn_pyg.nn.predict import predict

        predictions: list[Prediction] = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            batch = frames_batch(chunk, self.device, self.dtype)
            sizes = [len(atoms) for atoms in chunk]
            energies, forces = [], []
            for model in self.models:
                result = predict(model, batch, compute_forces=True)
                energies.append(result["energy"].detach().cpu().double().numpy())
                forces.append(result["forces"].detach().cpu().double().numpy())
            energy, force = np.stack(energies, axis=1), np.stack(forces)
            starts = np.cumsum([0, *sizes])
            for k, size in enumerate(sizes):
                member_forces = force[:, starts[k]:starts[k + 1]]
                predictions.append(Prediction(
                    float(energy[k].mean()), member_forces.mean(axis=0),
                    energy_disagreement(energy[k], size),
                    force_disagreement(member_forces),
                    energy_disagreement(energy[k] - self.offsets(chunk[k].numbers), size),
                    energy[k].copy()))
        return predictions

    def predict(self, atoms: Atoms) -> Prediction:
        r"""The committee's means and disagreement on ``atoms`` (reusing the last
        results when ``atoms`` has not changed since)."""
        if self.calculation_required(atoms, ["energy", "forces"]):
            self.calculate(atoms, ["energy", "forces"])
        return Prediction(float(self.results["energy"]), np.array(self.results["forces"]),
                          float(self.results["rho"]), float(self.results["force_dev"]),
                          float(self.results["rho_centred"]),
                          np.array(self.results["energies_all"], dtype=np.float64))
