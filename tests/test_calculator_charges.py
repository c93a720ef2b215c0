"""ASE calculators with a charge head, and the committee (ensemble) calculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from hipnn_pyg.calculator import HIPNNCalculator, HIPNNEnsembleCalculator
from hipnn_pyg.nn import HIPNNPotential
from hipnn_pyg.serialization import save_model
from tests.nn.helpers import ethanol, small_model


def ethanol_atoms(charge: float = 0.0) -> Atoms:
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    atoms.info["charge"] = charge
    return atoms


def test_charges_and_dipole_from_the_calculator() -> None:
    atoms = ethanol_atoms(charge=1.0)
    atoms.calc = HIPNNCalculator(HIPNNPotential(small_model()))
    charges = atoms.get_charges()
    assert charges.sum() == pytest.approx(1.0, abs=1e-12)
    dipole = atoms.get_dipole_moment()
    masses = atoms.get_masses()
    com = (masses[:, None] * atoms.positions).sum(0) / masses.sum()
    np.testing.assert_allclose(dipole, (charges[:, None] * (atoms.positions - com)).sum(0),
                               atol=1e-12)
    assert atoms.calc.results["quadrupole"].shape == (3, 3)
    atoms.calc = HIPNNCalculator(HIPNNPotential(small_model()), charge=-1.0)
    assert atoms.get_charges().sum() == pytest.approx(-1.0, abs=1e-12)


def test_plain_model_still_refuses_dipoles() -> None:
    atoms = ethanol_atoms()
    atoms.calc = HIPNNCalculator(small_model())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_dipole_moment()


def test_ensemble_mean_and_spread(tmp_path) -> None:
    members = [HIPNNPotential(small_model()) for _ in range(3)]
    save_model(members[0], tmp_path / "m0.pt")
    atoms = ethanol_atoms()
    calc = HIPNNEnsembleCalculator([tmp_path / "m0.pt", *members[1:]])
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    singles = []
    for member in members:
        single = ethanol_atoms()
        single.calc = HIPNNCalculator(member)
        singles.append((single.get_potential_energy(), single.get_forces()))
    energies = np.array([e for e, _ in singles])
    assert energy == pytest.approx(energies.mean(), rel=1e-12)
    assert calc.results["energy_std"] == pytest.approx(energies.std(), rel=1e-9)
    forces = np.stack([f for _, f in singles])
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(0), atol=1e-12)
    np.testing.assert_allclose(calc.results["forces_std"], forces.std(0), atol=1e-12)
    assert calc.results["energy_std"] > 0 and atoms.get_dipole_moment().shape == (3,)
    assert calc.results["dipole_std"].shape == (3,)
    with pytest.raises(ValueError, match="at least 2"):
        HIPNNEnsembleCalculator([members[0]])


def test_identical_members_have_zero_spread() -> None:
    model = small_model()
    atoms = ethanol_atoms()
    atoms.calc = HIPNNEnsembleCalculator([model, model], dtype=torch.float64)
    atoms.get_forces()
    assert atoms.calc.results["energy_std"] == 0.0
    assert np.all(atoms.calc.results["forces_std"] == 0.0)
