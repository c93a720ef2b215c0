r"""ASE calculators for HIP-NN models (single and committee), so ASE's optimisers, MD
drivers and vibrational analysis can use them."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import load_model


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


def _load(model: nn.Module | str | os.PathLike[str], device: torch.device,
          dtype: torch.dtype) -> nn.Module:
    r"""The calculator's own frozen, eval-mode copy of ``model`` (or of the model in a
    file), on ``device`` in ``dtype``; a model handed in stays as it was (dtype,
    training mode, gradients), so it can go on training."""
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, map_location=device)
    else:
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _has_charges(model: nn.Module) -> bool:
    return "charges" in getattr(model, "output_names", ())


def _numpy_results(model: nn.Module, atoms: Atoms, device: torch.device,
                   dtype: torch.dtype, charge: float | None) -> dict[str, Any]:
    r"""One model's energy, forces, stress and (with a charge head) charges, dipole and
    quadrupole for ``atoms``, in ASE units and layout."""
    data = atoms_to_batch(atoms, device, dtype)
    if charge is not None:
        data.charge = torch.tensor([float(charge)], dtype=dtype, device=device)
    periodic = bool(atoms.pbc.any())
    result = predict(model, data, compute_forces=True, compute_stress=periodic)
    energy = float(result["energy"].detach().sum())
    out: dict[str, Any] = {
        "energy": energy,
        "free_energy": energy,
        "energies": result["atom_energy"].detach().cpu().numpy(),
        "forces": result["forces"].detach().cpu().numpy(),
    }
    if periodic:
        stress = result["stress"][0].detach().cpu().numpy()
        out["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if "charges" in result:
        out["charges"] = result["charges"].detach().cpu().numpy()
        out["dipole"] = result["dipole"][0].detach().cpu().numpy()
        out["quadrupole"] = result["quadrupole"][0].detach().cpu().numpy()
    return out


class _ModelsCalculator(Calculator):
    r"""What both calculators share: loading models onto one device and precision,
    the total charge, and offering charges and dipoles when every model has a charge
    head."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        models: Sequence[nn.Module | str | os.PathLike[str]],
        device: str | torch.device,
        dtype: torch.dtype,
        charge: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.charge = charge
        self.models = [_load(model, self.device, dtype) for model in models]
        if all(_has_charges(model) for model in self.models):
            # an instance attribute, so plain-energy calculators keep refusing dipoles
            self.implemented_properties = [*type(self).implemented_properties,
                                           "charges", "dipole"]

    def _member_results(self, atoms: Atoms | None, properties: list[str] | None,
                        system_changes: list[str]) -> list[dict[str, Any]]:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        return [_numpy_results(model, self.atoms, self.device, self.dtype, self.charge)
                for model in self.models]


class HIPNNCalculator(_ModelsCalculator):
    r"""An ASE calculator for a HIP-NN model.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's Voigt order) for periodic
    cells; all derivatives are exact, by autograd. Models with a charge head
    (:class:`~hipnn_pyg.nn.HIPNNPotential`) also give ``charges`` (e), ``dipole``
    (e·Å, as :meth:`ase.Atoms.get_dipole_moment` expects) and ``quadrupole`` (e·Å²,
    traceless, in ``calc.results`` only); the total charge is
    ``atoms.info["charge"]`` (default 0) unless ``charge`` is given.

    Args:
        model (nn.Module or str): A model such as :class:`~hipnn_pyg.HIPNN`, or the path
            of a file written by :func:`hipnn_pyg.serialization.save_model` or a training
            checkpoint (read weights-only). The calculator runs its own frozen copy:
            a model handed in keeps its precision, mode and gradients.
        device (str): Torch device to run on. (default: :obj:`"cpu"`)
        dtype (torch.dtype): Precision of the evaluation; float64 keeps MD energy
            conservation clean. (default: :obj:`torch.float64`)
        charge (float, optional): Total charge in e for every structure.
            (default: :obj:`None`, from ``atoms.info``)
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        charge: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__([model], device, dtype, charge, **kwargs)

    @property
    def model(self) -> nn.Module:
        r"""The calculator's own (frozen, eval-mode) copy of the model it runs."""
        return self.models[0]

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        (self.results,) = self._member_results(atoms, properties, system_changes)


class HIPNNEnsembleCalculator(_ModelsCalculator):
    r"""The mean of several HIP-NN models and their spread, the query-by-committee
    uncertainty of active learning (Smith et al., arXiv:1801.09319).

    ``calc.results`` holds the committee means under the usual names (``energy``,
    ``forces``, ``stress``, and ``charges``/``dipole`` when every model has a charge
    head) and the standard deviations over models (population, ``ddof=0``):
    ``energy_std`` (eV), ``forces_std`` ``[num_atoms, 3]`` (eV/Å), ``stress_std``,
    ``dipole_std``; plus ``energies_all`` ``[num_models]``, the members' energies.

    Args:
        models (Sequence[nn.Module or str]): The members, or paths of saved models;
            the calculator runs frozen copies, as :class:`HIPNNCalculator` does.
        device (str): Torch device. (default: :obj:`"cpu"`)
        dtype (torch.dtype): Precision. (default: :obj:`torch.float64`)
        charge (float, optional): Total charge in e. (default: :obj:`None`, from
            ``atoms.info``)
    """

    def __init__(
        self,
        models: Sequence[nn.Module | str | os.PathLike[str]],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        charge: float | None = None,
        **kwargs: Any,
    ) -> None:
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
        super().__init__(models, device, dtype, charge, **kwargs)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        members = self._member_results(atoms, properties, system_changes)
        results: dict[str, Any] = {}
        for key in members[0]:
            if not all(key in member for member in members):
                continue
            stack = np.stack([np.asarray(member[key]) for member in members])
            mean = stack.mean(axis=0)
            results[key] = float(mean) if stack.ndim == 1 else mean
            if key in ("energy", "forces", "stress", "dipole", "charges"):
                std = stack.std(axis=0)
                results[f"{key}_std"] = float(std) if stack.ndim == 1 else std
        results["energies_all"] = np.array([member["energy"] for member in members])
        self.results = results
