r"""ASE calculator for HIP-NN models, so ASE's optimisers and MD drivers can use them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from hipnn_pyg.io import load_model
from hipnn_pyg.nn.predict import predict


class _AtomsBatch:
    r"""The few fields of a PyG batch that :func:`~hipnn_pyg.nn.predict` reads."""

    def __init__(self, atoms: Atoms, device: torch.device, dtype: torch.dtype) -> None:
        self.z = torch.as_tensor(atoms.numbers, dtype=torch.long, device=device)
        self.pos = torch.as_tensor(atoms.positions, dtype=dtype, device=device)
        self.batch = torch.zeros_like(self.z)
        self.pbc = torch.as_tensor(atoms.pbc, device=device).view(1, 3)
        self.cell = torch.as_tensor(np.asarray(atoms.cell), dtype=dtype, device=device)
        self.cell = self.cell.view(1, 3, 3)
        self.charge = torch.tensor(
            [float(atoms.info.get("charge", 0.0))], dtype=dtype, device=device
        )


def atoms_to_batch(
    atoms: Atoms, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
) -> Any:
    r"""Converts ASE :class:`~ase.Atoms` into the batch fields the models read."""
    return _AtomsBatch(atoms, torch.device(device), dtype)


class HIPNNCalculator(Calculator):
    r"""An ASE calculator for a HIP-NN model.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's Voigt order) for periodic
    cells; all derivatives are exact, by autograd.

    Args:
        model (nn.Module or str): A model such as :class:`~hipnn_pyg.HIPNN`, or the path
            of a file written by :func:`hipnn_pyg.io.save_model` or a training
            checkpoint.
        device (str): Torch device to run on. (default: :obj:`"cpu"`)
        dtype (torch.dtype): Precision of the evaluation; float64 keeps MD energy
            conservation clean. (default: :obj:`torch.float64`)
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model, map_location=device)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        data = atoms_to_batch(self.atoms, self.device, self.dtype)
        periodic = bool(self.atoms.pbc.any())
        result = predict(self.model, data, compute_forces=True, compute_stress=periodic)
        energy = float(result["energy"].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": result["atom_energy"].detach().cpu().numpy(),
            "forces": result["forces"].detach().cpu().numpy(),
        }
        if periodic:
            stress = result["stress"][0].detach().cpu().numpy()
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
