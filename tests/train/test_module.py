"""The Lightning module: clear errors, self-energies, EMA weights in what is saved,
metric names, padding masks under data parallelism."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from torch.utils.data import DataLoader, DistributedSampler

from hipnn_pyg import HIPNN
from hipnn_pyg.serialization import load_model
from hipnn_pyg.train import HIPNNLightningModule
from hipnn_pyg.train.run import train

from .helpers import QUIET, SHIPPED, TINY, compose_config, results, tiny_model

REPO = Path(__file__).resolve().parents[2]
ETHANOL = REPO / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz"


@pytest.fixture
def energies_only(tmp_path: Path) -> Path:
    """Ten ethanol frames as extxyz with energies but no forces."""
    raw = np.load(ETHANOL)
    frames = []
    for coords, energy in zip(raw["coords"][:10], raw["energies"][:10], strict=True):
        atoms = ase.Atoms(numbers=raw["nuclear_charges"], positions=coords)
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy) * 0.043364)
        frames.append(atoms)
    path = tmp_path / "energies.extxyz"
    ase.io.write(path, frames)
    return path


@pytest.fixture
def with_charges(tmp_path: Path) -> Path:
    """Twelve ethanol frames as extxyz with energies, forces and per-atom charges."""
    raw = np.load(ETHANOL)
    rng = np.random.default_rng(0)
    frames = []
    for coords, energy, forces in zip(raw["coords"][:12], raw["energies"][:12],
                                      raw["forces"][:12], strict=True):
        atoms = ase.Atoms(numbers=raw["nuclear_charges"], positions=coords)
        charges = rng.normal(0.0, 0.2, len(atoms))
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy) * 0.043364,
                                           forces=forces * 0.043364,
                                           charges=charges - charges.mean())
        frames.append(atoms)
    path = tmp_path / "charges.extxyz"
    ase.io.write(path, frames)
    return path


def test_metrics_report_atomic_charges_and_name_the_running_train_errors(
    tmp_path: Path, with_charges: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = ["data=ase", f"data.path={with_charges}", "data.num_train=8",
                 "data.num_val=2", "data.num_test=2", "model=hipnn_charges",
                 "model.representation.species=[1,6,8]", *tiny_model(),
                 "trainer.max_epochs=1", *QUIET]
    with caplog.at_level("INFO", logger="hipnn_pyg.train.run"):
        train(compose_config("train", tmp_path / "run", overrides))
    metrics = results(tmp_path / "run")["metrics"]
    # the predicted per-atom charges against the labels, never the (given) total charge
    for split in ("val", "test", "train_running"):
        assert metrics[f"{split}/charges_mae"] > 0
        assert f"{split}/charge_mae" not in metrics
    # raw-weight running means are named apart from the EMA-weight val/test errors
    assert "train_running/energy_mae" in metrics and "train/energy_mae" not in metrics
    assert metrics["train/loss"] > 0
    table = next(r.getMessage() for r in caplog.records if "Final errors" in r.getMessage())
    assert "raw weights" in table
    assert any(line.startswith("train_running charges") and line.endswith(" me")
               for line in table.splitlines())


def test_missing_forces_with_forces_weight_is_a_clear_error(
    tmp_path: Path, energies_only: Path
) -> None:
    overrides = ["data=ase", f"data.path={energies_only}", "data.num_train=6",
                 "data.num_val=2", "data.num_test=2", "model.representation.species=[1,6,8]",
                 "trainer.max_epochs=1", *TINY]
    cfg = compose_config("train", tmp_path / "a", [*overrides, "data.require_forces=false"])
    with pytest.raises(ValueError, match=r"loss_weights.forces=100.0 > 0, but the training data"):
        train(cfg)
    # the data module's own check, when asked for
    cfg = compose_config("train", tmp_path / "b", [*overrides, "data.require_forces=true"])
    with pytest.raises(ValueError, match="forces"):
        train(cfg)
    # energies alone train fine once the forces weight is 0
    cfg = compose_config("train", tmp_path / "c", [*overrides, "data.require_forces=false",
                                                   "module.loss_weights.forces=0"])
    train(cfg)
    assert (tmp_path / "c" / "model.pt").is_file()


def test_bad_module_arguments() -> None:
    model = HIPNN(species=(1,), hidden_channels=4, num_interactions=1, num_atom_layers=1)
    with pytest.raises(ValueError, match="optimizer"):
        HIPNNLightningModule(model, optimizer="sgd")
    with pytest.raises(ValueError, match="nothing to train on"):
        HIPNNLightningModule(model, loss_weights={"energy": 0.0})
    with pytest.raises(ValueError, match=">= 0"):
        HIPNNLightningModule(model, loss_weights={"energy": -1.0})


def test_self_energies_fitted_and_ema_weights_saved(tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path, [*SHIPPED, *TINY, "trainer.max_epochs=2",
                                             "callbacks=[default,ema]", "callbacks.ema.decay=0.5"])
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    self_energies = state["model.heads.energy.readouts.0.weight"]
    assert self_energies.abs().min() > 100  # eV: fitted, not zero
    # the model inside the checkpoint and model.pt carry the EMA weights
    from_ckpt = load_model(tmp_path / "checkpoints" / "last.ckpt")
    key = "representation.interactions.0.interaction_weight"
    torch.testing.assert_close(from_ckpt.state_dict()[key], state[f"ema.module.{key}"])
    assert not torch.equal(state[f"ema.module.{key}"], state[f"model.{key}"])
    best = torch.load(checkpoint["callbacks"][next(k for k in checkpoint["callbacks"]
                                                   if "ModelCheckpoint" in k)]["best_model_path"],
                      weights_only=True)
    final = load_model(tmp_path / "model.pt")
    torch.testing.assert_close(final.state_dict()[key], best["state_dict"][f"ema.module.{key}"])


@pytest.mark.parametrize("as_dict", [False, True])
def test_padding_mask_per_validation_loader_in_any_order(as_dict: bool) -> None:
    model = HIPNN(species=(1,), hidden_channels=4, num_interactions=1, num_atom_layers=1)
    module = HIPNNLightningModule(model)
    sizes, batch_sizes, world = (5, 3), (2, 1), 2
    kept: dict[int, list[int]] = {0: [], 1: []}
    for rank in range(world):
        loaders = [DataLoader(range(n), batch_size=b, sampler=DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=False))
            for n, b in zip(sizes, batch_sizes, strict=True)]
        module.trainer = SimpleNamespace(  # type: ignore[assignment]
            val_dataloaders=dict(enumerate(loaders)) if as_dict else loaders)
        batches = [(i, b, batch) for i, loader in enumerate(loaders)
                   for b, batch in enumerate(loader)]
        for loader_idx, batch_idx, batch in reversed(batches):  # order does not matter
            data = SimpleNamespace(num_graphs=len(batch), z=torch.zeros(len(batch)))
            keep = module._padding_mask("val", data, batch_idx, loader_idx)
            kept[loader_idx] += (batch if keep is None else batch[keep]).tolist()
    assert {i: sorted(v) for i, v in kept.items()} == {0: [0, 1, 2, 3, 4], 1: [0, 1, 2]}


def test_norm_force_loss_trains_and_its_validation_loss_is_the_logged_terms(
    tmp_path: Path,
) -> None:
    cfg = compose_config("train", tmp_path, [*SHIPPED, *TINY, "trainer.max_epochs=1",
                                             "module.force_loss=norm",
                                             "module.loss_weights.forces=0.5"])
    train(cfg)
    metrics = results(tmp_path)["metrics"]
    # the loss weighs the mean per-atom error length; a force vector of 3 components is
    # longer than one component's error, shorter than their sum
    assert metrics["val/forces_mae"] < metrics["val/forces_norm_mae"] < \
        3 * metrics["val/forces_mae"]
    energy_mse = metrics["val/energy_per_atom_rmse"] ** 2
    assert metrics["val/loss"] == pytest.approx(energy_mse + 0.5 * metrics["val/forces_norm_mae"],
                                                rel=1e-5)
    with pytest.raises(ValueError, match="module.force_loss='l1'"):
        HIPNNLightningModule(HIPNN(species=(1,), hidden_channels=4, num_interactions=1,
                                   num_atom_layers=1), force_loss="l1")
