"""Several levels of theory in one model: each structure answers at its own level, a
structure without a label adds nothing to the loss, the levels reload from the file, the
calculator's head= selects one; a Δ model is the base plus its correction."""

from __future__ import annotations

import math

import pytest
import torch
from ase import Atoms

from hipnn_pyg import HIPNNCalculator, load_model, save_model
from hipnn_pyg.nn import (
    DeltaPotential,
    HIPNNRepresentation,
    InverseGaussianSensitivity,
    MultiFidelityHead,
    Potential,
    energy_forces_stress,
)
from hipnn_pyg.train.losses import mse
from hipnn_pyg.train.targets import build_targets, num_atoms
from tests.nn.helpers import ethanol, small_model, trained_looking


def two_level_model() -> Potential:
    torch.manual_seed(0)
    representation = HIPNNRepresentation(
        (1, 6, 8), InverseGaussianSensitivity(6, 0.8, 3.5, cutoff=4.0), hidden_channels=8)
    model = Potential(representation, {"energy": MultiFidelityHead(["pbe", "ccsdt"])})
    return trained_looking(model.double(), 0.1)


def batch_of_two():
    z, pos = ethanol()
    return (torch.cat([z, z]), torch.cat([pos, pos + 0.02]),
            torch.tensor([0] * 9 + [1] * 9))


def test_each_structure_gets_the_energy_and_forces_of_its_own_level() -> None:
    model = two_level_model()
    z, pos, batch = batch_of_two()
    mixed = energy_forces_stress(model, z, pos, batch, level=torch.tensor([0, 1]))
    for graph, level in enumerate(("pbe", "ccsdt")):
        model.select_level(level)
        alone = energy_forces_stress(model, z[batch == graph], pos[batch == graph])
        torch.testing.assert_close(mixed["energy"][graph], alone["energy"][0])
        torch.testing.assert_close(mixed["forces"][batch == graph], alone["forces"])
    assert not torch.allclose(mixed["energy_pbe"], mixed["energy_ccsdt"])


def test_a_structure_without_a_label_adds_nothing_to_the_loss() -> None:
    model = two_level_model()
    z, pos, batch = batch_of_two()
    energy = torch.tensor([-4200.0, float("nan")], dtype=torch.float64)  # graph 1: none
    forces = torch.full((18, 3), float("nan"), dtype=torch.float64)
    forces[:9] = 0.1  # graph 0 has forces, graph 1 none
    data = type("Batch", (), {"energy": energy, "forces": forces, "batch": batch,
                              "ptr": torch.tensor([0, 9, 18]), "num_graphs": 2})()
    targets = [t for t in build_targets({"energy": 1.0, "forces": 10.0}) if t.trained]

    def loss(level_of_second: int) -> torch.Tensor:
        out = energy_forces_stress(model, z, pos, batch, create_graph=True,
                                   level=torch.tensor([0, level_of_second]))
        return sum(t.weight * mse(t.loss_residual(out, data, num_atoms(data)))
                   for t in targets)

    ccsdt = model.heads["energy"].heads["ccsdt"]
    total = loss(1)
    assert math.isfinite(float(total))
    grads = torch.autograd.grad(total, list(ccsdt.parameters()), allow_unused=True)
    # graph 1 is the only CCSD(T) structure and carries no label: no gradient at all
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    pbe = model.heads["energy"].heads["pbe"]
    assert any(g is not None and float(g.abs().max()) > 0
               for g in torch.autograd.grad(loss(1), list(pbe.parameters()), allow_unused=True))


def test_the_levels_reload_identically_and_head_selects_one(tmp_path) -> None:
    model = two_level_model()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.levels == ["pbe", "ccsdt"]
    z, pos, batch = batch_of_two()
    for level in ("pbe", "ccsdt"):
        model.select_level(level)
        loaded.select_level(level)
        torch.testing.assert_close(loaded.outputs(z, pos, batch)["energy"],
                                   model.outputs(z, pos, batch)["energy"], rtol=0, atol=0)
    atoms = Atoms(numbers=z[:9].numpy(), positions=pos[:9].numpy())
    energies = {}
    for level in ("pbe", "ccsdt"):
        atoms.calc = HIPNNCalculator(tmp_path / "model.pt", head=level)
        energies[level] = atoms.get_potential_energy()
        model.select_level(level)
        assert energies[level] == pytest.approx(float(model(z[:9], pos[:9])), abs=1e-9)
    assert energies["pbe"] != energies["ccsdt"]
    with pytest.raises(ValueError, match="unknown level 'mp2'"):
        HIPNNCalculator(tmp_path / "model.pt", head="mp2")
    with pytest.raises(ValueError, match="one level of theory"):
        HIPNNCalculator(small_model(), head="ccsdt")


def test_a_delta_model_is_the_base_plus_its_correction(tmp_path) -> None:
    base, delta = small_model(), trained_looking(small_model(hidden_channels=4), 0.1)
    model = DeltaPotential(base, delta)
    z, pos = ethanol()
    out = energy_forces_stress(model, z, pos)
    torch.testing.assert_close(
        out["forces"], energy_forces_stress(base, z, pos)["forces"]
        + energy_forces_stress(delta, z, pos)["forces"])
    save_model(model, tmp_path / "delta.pt")
    loaded = load_model(tmp_path / "delta.pt")
    torch.testing.assert_close(loaded(z, pos), model(z, pos), rtol=0, atol=0)
