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
    representation = getattr(model, "representation", None)
    if hasattr(representation, "set_lean"):  # frozen: MD needs no [edges, S] kept
        representation.set_lean(True)
    return model


def _has_charges(model: nn.Module) -> bool:
    return "charges" in getattr(model, "output_names", ())


def _numpy_results(model: nn.Module, atoms: Atoms, device: torch.device,
                   dtype: torch.dtype, charge: float | None,
                   with_stress: bool = True) -> dict[str, Any]:
    r"""One model's energy, forces, stress (periodic cells, when ``with_stress``) and
    (with a charge head) charges, dipole and quadrupole for ``atoms``, in ASE units and
    layout."""
    data = atoms_to_batch(atoms, device, dtype)
    if charge is not None:
        data.charge = torch.tensor([float(charge)], dtype=dtype, device=device)
    periodic = bool(atoms.pbc.any()) and with_stress
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
        head: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.charge = charge
        self.models = [_load(model, self.device, dtype) for model in models]
        if head is not None:  # a multi-fidelity model's level of theory
            for model in self.models:
                model.select_level(head)
        if all(_has_charges(model) for model in self.models):
            # an instance attribute, so plain-energy calculators keep refusing dipoles
            self.implemented_properties = [*type(self).implemented_properties,
                                           "charges", "dipole"]

    def _member_results(self, atoms: Atoms | None, properties: list[str] | None,
                        system_changes: list[str]) -> list[dict[str, Any]]:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        # The strain derivative costs a sizeable part of a step: only when asked for
        # (ASE calls again for a property missing from the results).
        with_stress = "stress" in (properties or [])
        return [_numpy_results(model, self.atoms, self.device, self.dtype, self.charge,
                               with_stress) for model in self.models]


class HIPNNCalculator(_ModelsCalculator):
    r"""An ASE calculator for a HIP-NN model.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's Voigt order) for periodic
    cells, computed only when asked for (MD that needs forces alone skips the strain
    derivative); all derivatives are exact, by autograd. Models with a charge head
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
        head (str, optional): The level of theory to answer at, for a multi-fidelity
            model (:class:`~hipnn_pyg.nn.fidelity.MultiFidelityHead`), e.g. ``"ccsdt"``.
            (default: :obj:`None`, the model's default level)
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        charge: float | None = None,
        head: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__([model], device, dtype, charge, head, **kwargs)

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
    ``dipole_std``; plus ``energies_all`` ``[num_models]``, the members' energies, and
    ``forces_all`` ``[num_models, num_atoms, 3]``, their forces.

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
        if "forces" in results:
            results["forces_all"] = np.stack([member["forces"] for member in members])
        self.results = results


class ExportedCalculator(Calculator):
    r"""An ASE calculator that runs an exported model (:mod:`hipnn_pyg.export`), for
    production MD: no Python model code per step, and a Verlet pair list.

    The pairs are searched within ``cutoff + skin`` and kept while no atom has moved
    more than ``skin / 2`` since the search, so every pair inside the cutoff is in the
    list; pairs between the cutoff and ``cutoff + skin`` add exactly zero (the cutoff
    function and its derivative vanish there). A change of elements, cell or
    periodicity searches again. Energies, forces and (periodic cells) stress, from the
    program's virial, equal :class:`HIPNNCalculator`'s in the program's precision.

    Args:
        exported (str or ExportedPotential): A ``.pt2`` archive of
            :func:`~hipnn_pyg.export.export_energy_forces` (read weights-only), or its
            :func:`~hipnn_pyg.export.load_exported` result.
        aoti_package (str, optional): An AOTInductor package of the same program
            (:func:`~hipnn_pyg.export.compile_aoti`) to run instead of the exported
            graph: compiled code, so load only packages you built.
            (default: :obj:`None`)
        skin (float): Verlet skin in Å; 0 searches at every step. (default: :obj:`1.0`,
            as hippynn's calculator)
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, exported: Any, aoti_package: str | os.PathLike[str] | None = None,
                 skin: float = 1.0, **kwargs: Any) -> None:
        from hipnn_pyg.export import ExportedPotential, load_exported

        super().__init__(**kwargs)
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.potential = (exported if isinstance(exported, ExportedPotential)
                          else load_exported(exported))
        self.program = self.potential.function
        if aoti_package is not None:
            from hipnn_pyg.compat.torch import aoti_load

            self.program = aoti_load(aoti_package)
        self.skin = float(skin)
        self.searches = 0  # neighbour searches so far
        self._list: tuple[Any, ...] | None = None

    def _pair_list(self, atoms: Atoms, z: torch.Tensor, pos: torch.Tensor,
                   cell: torch.Tensor | None, pbc: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        from hipnn_pyg.export import pair_list

        key = (atoms.numbers.tobytes(), np.asarray(atoms.cell).tobytes(), atoms.pbc.tobytes())
        if self._list is not None and self._list[0] == key:
            # NaN positions compare false: they fall through to the checks below
            moved = float((pos - self._list[1]).norm(dim=1).max()) if len(pos) else 0.0
            if moved <= self.skin / 2:
                return self._list[2], self._list[3]
        self.potential.check(z, pos, cell, pbc)
        edge_index, offsets = pair_list(pos, self.potential.cutoff + self.skin, cell, pbc)
        self._list = (key, pos.clone(), edge_index, offsets)
        self.searches += 1
        return edge_index, offsets

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        dtype, device = self.potential.dtype, self.potential.device
        z = torch.as_tensor(self.atoms.numbers, dtype=torch.long, device=device)
        pos = torch.as_tensor(self.atoms.positions, dtype=dtype, device=device)
        cell = pbc = None
        if self.atoms.pbc.any():
            cell = torch.as_tensor(np.asarray(self.atoms.cell), dtype=dtype,
                                   device=device).view(1, 3, 3)
            pbc = torch.as_tensor(self.atoms.pbc, device=device).view(1, 3)
        edge_index, offsets = self._pair_list(self.atoms, z, pos, cell, pbc)
        out = self.potential.run(z, pos, edge_index, offsets, self.program)
        energy = float(out["energy"])
        self.results = {"energy": energy, "free_energy": energy,
                        "energies": out["atom_energy"].detach().cpu().numpy(),
                        "forces": out["forces"].detach().cpu().numpy().astype(np.float64)}
        if self.atoms.pbc.any():  # ASE's stress is -W / V
            virial = out["virial"].detach().cpu().numpy()
            stress = -virial / abs(self.atoms.get_volume())
            self.results["stress"] = stress.reshape(9)[[0, 4, 8, 5, 2, 1]]
