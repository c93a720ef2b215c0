"""Transfer to CCSD(T) by multi-fidelity training and by Δ-learning, through
hipnn-train: each run from a pretrained file, with the shipped PBE and CCSD(T) data, to a
model file that answers at either level (multi-fidelity) or at the high one (Δ)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase.io import read

from hipnn_pyg import HIPNN, HIPNNCalculator, save_model
from hipnn_pyg.serialization import load_model
from hipnn_pyg.train.resolvers import repo_root
from hipnn_pyg.train.run import train

from .helpers import QUIET, compose_config

pytestmark = pytest.mark.slow
CCSDT = repo_root() / "data" / "ethanol_ccsdt" / "ethanol_ccsdt_forces.extxyz"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=1, num_atom_layers=1,
                  num_sensitivities=4, soft_max_distance=4.0, cutoff=4.5)
    model.set_self_energies([-13.6, -1029.0, -2041.0])
    path = tmp_path_factory.mktemp("pretrained") / "model.pt"
    save_model(model, path)
    return path


def test_multifidelity_training_gives_a_model_of_both_levels(pretrained: Path,
                                                             tmp_path: Path) -> None:
    train(compose_config("train", tmp_path, [
        "experiment=ethanol_multifidelity", f"finetune.from={pretrained}", *QUIET,
        "trainer.max_epochs=2", "data.levels.pbe.num_train=16", "data.levels.pbe.num_val=4"]))
    model = load_model(tmp_path / "model.pt")
    assert model.levels == ["pbe", "ccsdt"]
    frame = read(CCSDT, index=0)
    label = frame.get_potential_energy()  # CCSD(T), eV
    energies = {}
    for level in model.levels:
        frame.calc = HIPNNCalculator(tmp_path / "model.pt", head=level)
        energies[level] = frame.get_potential_energy()
    # each head's self-energies were refitted on its own level's energies: the CCSD(T)
    # head is near the CCSD(T) label, the PBE head near PBE's (2.7 eV apart here)
    assert abs(energies["ccsdt"] - label) < abs(energies["pbe"] - label)
    assert abs(energies["ccsdt"] - label) < 1.0


def test_delta_learning_freezes_the_base_and_trains_the_correction(pretrained: Path,
                                                                  tmp_path: Path) -> None:
    train(compose_config("train", tmp_path, [
        "experiment=ethanol_ccsdt_finetune", f"finetune.from={pretrained}", *QUIET,
        "data.path=" + str(CCSDT), "data.num_train=8", "data.num_val=4", "data.num_test=4",
        "module.loss_weights.forces=1.0", "trainer.max_epochs=2", "finetune.freeze=none",
        "finetune.delta={hidden_channels: 8, num_interactions: 1, num_atom_layers: 1, "
        "num_sensitivities: 4, soft_max_distance: 3.5, cutoff: 4.0}"]))
    model = load_model(tmp_path / "model.pt")
    assert type(model).__name__ == "DeltaPotential"
    base = load_model(pretrained)
    for (name, ours), theirs in zip(model.base.state_dict().items(),
                                    base.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name  # the base stayed bit-identical
    assert any(float(p.abs().max()) > 0 for p in model.delta.energy_head.readouts[1:]
               .parameters())
