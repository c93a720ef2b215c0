"""The ASE calculator: consistent with the model, usable by ASE's tools, loadable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from hipnn_pyg.calculator import HIPNNCalculator, HIPNNEnsembleCalculator
from hipnn_pyg.serialization import UnsafeFileError, save_model
from tests.nn.helpers import ethanol, random_crystal, small_model
from tests.test_serialization import crafted_model_file


def ethanol_atoms() -> Atoms:
    z, pos = ethanol()
    return Atoms(numbers=z.numpy(), positions=pos.numpy())


def test_energy_and_forces_match_the_model() -> None:
    model = small_model()
    atoms = ethanol_atoms()
    atoms.calc = HIPNNCalculator(model)
    z, pos = ethanol()
    assert atoms.get_potential_energy() == pytest.approx(float(model(z, pos)), rel=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    numeric = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), numeric, rtol=1e-6, atol=1e-5)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()  # no stress for a free molecule


def test_stress_matches_ase_numerical_stress() -> None:
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(5))
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy(), cell=cell.numpy(), pbc=True)
    atoms.calc = HIPNNCalculator(small_model())
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_stress(), numeric, atol=1e-7)
    # MD asks for forces only: no strain derivative then, and stress when asked later
    atoms.positions[0] += 0.01
    forces = atoms.get_forces()
    assert "stress" not in atoms.calc.results
    stress = atoms.get_stress()
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7)


def test_optimiser_and_md_run(tmp_path) -> None:
    atoms = ethanol_atoms()
    path = tmp_path / "model.pt"
    save_model(small_model(), path)
    atoms.calc = HIPNNCalculator(str(path))
    start = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=30)
    assert atoms.get_potential_energy() < start
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dyn.run(10)
    assert np.isfinite(atoms.get_positions()).all()


def test_loading_a_missing_or_broken_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model file not found"):
        HIPNNCalculator(tmp_path / "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.pt"):
        HIPNNCalculator(broken)


@pytest.mark.parametrize("ensemble", [False, True])
def test_the_callers_model_is_left_as_it_was_and_keeps_training(ensemble: bool) -> None:
    model = small_model(torch.float32).train()  # as in the middle of a training run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    atoms = ethanol_atoms()
    if ensemble:
        atoms.calc = HIPNNEnsembleCalculator([model, small_model(torch.float32)])
    else:
        atoms.calc = HIPNNCalculator(model)
    energy = atoms.get_potential_energy()
    atoms.get_forces()
    assert model.training
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())

    # training goes on, and the calculator keeps the weights it was given
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    z, pos = ethanol(torch.float32)
    model(z, pos).sum().backward()
    optimizer.step()
    key = "representation.interactions.0.interaction_weight"
    assert not torch.equal(model.state_dict()[key], before[key])
    atoms.calc.reset()
    assert atoms.get_potential_energy() == energy


def test_crafted_model_file_is_refused_without_running_code(tmp_path) -> None:
    marker = tmp_path / "code_ran"
    path = crafted_model_file(tmp_path / "model.pt", marker)
    save_model(small_model(), tmp_path / "good.pt")
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*model\.pt.*could run"):
        HIPNNCalculator(path)
    with pytest.raises(UnsafeFileError, match=r"model\.pt"):
        HIPNNEnsembleCalculator([tmp_path / "good.pt", path])
    assert not marker.exists()
