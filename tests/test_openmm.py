"""OpenMM through OpenMM-ML: MLPotential("hipnn", modelPath=...) finds the model by the
package's entry point; energies and forces equal the ASE calculator's (kJ/mol, nm
converted exactly), periodic and free; createMixedSystem gives ML/MM; an element outside
the model is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from hipnn_pyg import HIPNN, HIPNNCalculator, save_model

openmm = pytest.importorskip("openmm", reason="pip install openmm openmmml (scripts/setup.sh)")
openmmml = pytest.importorskip("openmmml")
from openmm import app, unit  # noqa: E402

from hipnn_pyg.openmm import KJ_PER_MOL_PER_EV  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=2, num_atom_layers=1,
                  num_sensitivities=6, soft_max_distance=3.5, cutoff=4.0).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("openmm") / "model.pt"
    save_model(model, path)
    return path


def topology_of(atoms: Atoms) -> app.Topology:
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for symbol in atoms.get_chemical_symbols():
        topology.addAtom(symbol, app.Element.getBySymbol(symbol), residue)
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(np.asarray(atoms.cell) * 0.1 * unit.nanometer)
    return topology


def openmm_energy_forces(system, atoms: Atoms) -> tuple[float, np.ndarray]:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    if atoms.pbc.any():
        context.setPeriodicBoxVectors(*(np.asarray(atoms.cell) * 0.1))
    context.setPositions(atoms.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


def reference(atoms: Atoms, model_path) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = HIPNNCalculator(model_path)
    return atoms.get_potential_energy(), atoms.get_forces()


def water_box() -> Atoms:
    rng = np.random.default_rng(0)
    waters = []
    for corner in np.stack(np.meshgrid(*[np.arange(2)] * 3), -1).reshape(-1, 3) * 3.1:
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3))
        water.positions += corner + 1.0
        waters.append(water)
    box = waters[0]
    for water in waters[1:]:
        box += water
    box.cell, box.pbc = np.eye(3) * 6.2, True
    return box


@pytest.mark.parametrize("system", ["ethanol", "periodic water"])
def test_energy_and_forces_equal_the_ase_calculator(model_path, system: str) -> None:
    atoms = molecule("CH3CH2OH") if system == "ethanol" else water_box()
    potential = openmmml.MLPotential("hipnn", modelPath=str(model_path))
    energy, forces = openmm_energy_forces(potential.createSystem(topology_of(atoms)), atoms)
    expected_energy, expected_forces = reference(atoms, model_path)
    assert energy == pytest.approx(expected_energy * KJ_PER_MOL_PER_EV, rel=1e-9)
    np.testing.assert_allclose(forces, expected_forces * KJ_PER_MOL_PER_EV * 10.0, rtol=1e-6,
                               atol=1e-6)
    assert np.abs(forces).max() > 1.0  # kJ/mol/nm: a real comparison
    assert pytest.approx(96.48533212331002, rel=1e-15) == KJ_PER_MOL_PER_EV


def test_mixed_system_puts_the_ml_atoms_under_the_model(model_path) -> None:
    # ML/MM: a water (ML) beside a particle held by a harmonic MM force only.
    atoms = molecule("H2O") + Atoms("O", positions=[[5.0, 0.0, 0.0]])
    topology = topology_of(atoms)
    mm = openmm.System()
    for atom in topology.atoms():
        mm.addParticle(atom.element.mass)
    spring = openmm.CustomExternalForce("0.5*k*(x-0.5)^2")  # nm: at rest at 5 Å
    spring.addGlobalParameter("k", 100.0)
    spring.addParticle(3, [])
    mm.addForce(spring)
    mixed = openmmml.MLPotential("hipnn", modelPath=str(model_path)).createMixedSystem(
        topology, mm, [0, 1, 2])
    energy, forces = openmm_energy_forces(mixed, atoms)
    water_energy, water_forces = reference(atoms[:3], model_path)
    assert energy == pytest.approx(water_energy * KJ_PER_MOL_PER_EV, rel=1e-9)
    np.testing.assert_allclose(forces[:3], water_forces * KJ_PER_MOL_PER_EV * 10, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(forces[3], 0.0, atol=1e-9)  # at the spring's rest point


def test_an_element_outside_the_model_is_named(model_path) -> None:
    atoms = molecule("CH3Cl")
    potential = openmmml.MLPotential("hipnn", modelPath=str(model_path))
    with pytest.raises(ValueError, match=r"Cl \(Z=17\) not among the species"):
        potential.createSystem(topology_of(atoms))
