r"""OpenMM through OpenMM-ML: ``MLPotential("hipnn", modelPath="model.pt")``.

Installed with hipnn_pyg, this module is the entry point ``hipnn`` of the group
``openmmml.potentials``, so OpenMM-ML (``pip install openmm openmmml``) finds it::

    from openmmml import MLPotential

    potential = MLPotential("hipnn", modelPath="model.pt")
    system = potential.createSystem(topology)                 # free or periodic
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)   # ML/MM

The model runs through :class:`~hipnn_pyg.HIPNNCalculator` (its checks, its frozen
float64 copy) inside an ``openmm.PythonForce``; positions come in nm, energies and forces
go out in kJ/mol and kJ/mol/nm, converted with the exact SI values (1 eV =
96.48533212331002 kJ/mol, e·N_A/1000). Importing this module imports only OpenMM-ML's
base classes: torch and the model load when a system is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

#: kJ/mol per eV: the elementary charge times Avogadro's number over 1000, exact in SI.
KJ_PER_MOL_PER_EV = 1.602176634e-19 * 6.02214076e23 / 1000.0
#: Å per nm.
ANGSTROM_PER_NM = 10.0


class HIPNNPotentialImplFactory(MLPotentialImplFactory):
    r"""Creates :class:`HIPNNPotentialImpl` for ``MLPotential("hipnn", ...)``."""

    def createImpl(self, name: str, modelPath: str | None = None, device: str = "cpu",
                   dtype: str = "float64", **args: Any) -> MLPotentialImpl:
        if modelPath is None:
            raise ValueError("MLPotential('hipnn') needs modelPath='<model.pt or .ckpt>' (a "
                             "model saved by hipnn-train)")
        return HIPNNPotentialImpl(name, modelPath, device, dtype)


class HIPNNPotentialImpl(MLPotentialImpl):
    r"""A hipnn_pyg model as an OpenMM force.

    Args:
        name (str): The name it was created under (``"hipnn"``).
        model_path (str): A saved model or training checkpoint.
        device (str): Where the model runs. (default: :obj:`"cpu"`)
        dtype (str): Its precision, ``"float64"`` or ``"float32"``.
            (default: :obj:`"float64"`)
    """

    def __init__(self, name: str, model_path: str, device: str = "cpu",
                 dtype: str = "float64") -> None:
        self.name, self.model_path = name, str(model_path)
        self.device, self.dtype = device, dtype

    def addForces(self, topology: Any, system: Any, atoms: Iterable[int] | None,
                  forceGroup: int, charge: float = 0.0, **args: Any) -> None:
        import openmm
        import torch
        from ase import Atoms

        from hipnn_pyg.calculator import HIPNNCalculator
        from hipnn_pyg.nn.checks import model_limits

        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[i] for i in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("MLPotential('hipnn'): every atom of the topology needs an element")
        numbers = [atom.element.atomic_number for atom in included]
        calculator = HIPNNCalculator(self.model_path, device=self.device,
                                     dtype=getattr(torch, self.dtype))
        species, _ = model_limits(calculator.model)
        unknown = sorted({(a.element.symbol, a.element.atomic_number) for a in included
                          if species is not None and a.element.atomic_number not in species})
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(f"{symbol} (Z={z})" for symbol, z in unknown)
            raise ValueError(f"MLPotential('hipnn'): element(s) {names} not among the species "
                             f"of {self.model_path}: "
                             f"{', '.join(chemical_symbols[z] for z in species)}")
        periodic = topology.getPeriodicBoxVectors() is not None
        structure = Atoms(numbers=numbers, pbc=periodic, info={"charge": float(charge)})
        structure.calc = calculator

        def compute(state: Any) -> tuple[float, Any]:
            from openmm import unit

            positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            structure.set_positions(positions * ANGSTROM_PER_NM)
            if periodic:
                box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
                structure.set_cell(box * ANGSTROM_PER_NM)
            energy = structure.get_potential_energy()
            forces = structure.get_forces()
            return (energy * KJ_PER_MOL_PER_EV,
                    forces * (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM))

        force = openmm.PythonForce(compute)
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(atoms)
        system.addForce(force)


__all__ = ["HIPNNPotentialImplFactory", "HIPNNPotentialImpl", "KJ_PER_MOL_PER_EV"]
