"""Self-energy fit: exact on synthetic data, rank deficiency, real QM9 and ANI-1; set
before a new run's training, never on resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate as hydra_instantiate
from torch.utils.data import Subset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from hipnn_pyg import HIPNN
from hipnn_pyg.data import ANIDataset, QM9Dataset, RMD17Dataset, split_indices
from hipnn_pyg.train.self_energy import (
    composition_and_energy,
    fit_self_energies,
    initialize_self_energies,
)

from .helpers import SHIPPED, TINY, compose_config

SPECIES = [1, 6, 7, 8]
TRUE = torch.tensor([-13.6, -1030.0, -1485.0, -2040.0], dtype=torch.float64)


def _synthetic(n: int = 60, seed: int = 0) -> list[Data]:
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n):
        z = torch.as_tensor(rng.choice(SPECIES, size=int(rng.integers(2, 12))))
        counts = torch.tensor([(z == s).sum().item() for s in SPECIES], dtype=torch.float64)
        energy = counts @ TRUE + 1e-3 * rng.normal()
        data.append(
            Data(
                z=z, pos=torch.zeros(len(z), 3), energy=torch.tensor([energy], dtype=torch.float64)
            )
        )
    return data


def test_recovers_known_self_energies():
    data = _synthetic()
    fitted = fit_self_energies(data, SPECIES)
    assert fitted.dtype == torch.float64 and fitted.shape == (4,)
    torch.testing.assert_close(fitted, TRUE, atol=2e-3, rtol=0)
    from_loader = fit_self_energies(DataLoader(data, batch_size=7, shuffle=True), SPECIES)
    torch.testing.assert_close(from_loader, fitted)


def test_absent_species_is_zero_with_warning():
    data = [d for d in _synthetic(200) if not (d.z == 7).any()]
    with pytest.warns(UserWarning, match=r"species \[7, 9\] do not occur"):
        fitted = fit_self_energies(data, [*SPECIES, 9])
    assert fitted[2] == 0 and fitted[4] == 0
    torch.testing.assert_close(fitted[[0, 1, 3]], TRUE[[0, 1, 3]], atol=5e-3, rtol=0)


def test_foreign_element_is_an_error():
    with pytest.raises(ValueError, match=r"elements \[8\] that are not in species"):
        fit_self_energies(_synthetic(), [1, 6, 7])


def test_rank_deficient_rmd17(shared_data):
    path = shared_data / "rmd17" / "rmd17_ethanol_train_01.npz"
    if not path.exists():
        pytest.skip(f"reference file not found: {path}")
    dataset = RMD17Dataset(path)
    with pytest.warns(UserWarning, match="rank 1 < 3"):
        fitted = fit_self_energies(dataset, [1, 6, 8])
    mean_per_atom = dataset._data.energy.mean() / 9
    torch.testing.assert_close(fitted, mean_per_atom.repeat(3), atol=1e-6, rtol=0)
    counts, energy = composition_and_energy(dataset, [1, 6, 8])
    assert abs((energy - counts @ fitted).mean().item()) < 1e-6


def _residual_ratio(dataset, species):
    counts, energy = composition_and_energy(dataset, species)
    fitted = fit_self_energies(dataset, species)
    return (energy - counts @ fitted).std() / energy.std(), fitted


def test_qm9_training_split_only(shared_data):
    path = shared_data / "qm9" / "qm9_qm9pack_130831.npz"
    if not path.exists():
        pytest.skip(f"reference file not found: {path}")
    dataset = QM9Dataset(path, mulliken=False)
    split = split_indices(dataset, 20_000, 5_000, 5_000, seed=0)
    train = dataset[torch.as_tensor(split.train)]
    ratio, fitted = _residual_ratio(train, [1, 6, 7, 8, 9])
    assert ratio < 2e-3  # a spread of ~1e3 eV in total energies down to about 1 eV
    assert -17.0 < fitted[0].item() < -13.0  # H near its atomic energy (-13.6 eV)
    val = dataset[torch.as_tensor(split.val)]
    counts, energy = composition_and_energy(val, [1, 6, 7, 8, 9])
    assert (energy - counts @ fitted).abs().mean() < 2.0  # generalises, in eV
    as_subset = fit_self_energies(Subset(dataset, split.train.tolist()), [1, 6, 7, 8, 9])
    torch.testing.assert_close(as_subset, fitted)


def test_ani1(shared_data):
    path = shared_data / "ani1" / "ani_gdb_s01.h5"
    if not path.exists():
        pytest.skip(f"reference file not found: {path}")
    # CH4, NH3, H2O only: three compositions for four species.
    with pytest.warns(UserWarning, match="rank 3 < 4"):
        ratio, _ = _residual_ratio(ANIDataset(path), SPECIES)
    assert ratio < 1e-2


def test_initialize_fits_zero_self_energies_only() -> None:
    data = _synthetic()
    model = HIPNN(species=SPECIES, hidden_channels=4, num_interactions=1, num_atom_layers=1)
    assert initialize_self_energies(model, data)
    fitted = model.self_energies.detach().clone()
    torch.testing.assert_close(fitted, fit_self_energies(data, SPECIES).to(fitted))
    assert not initialize_self_energies(model, data)  # given (non-zero): left alone
    assert not initialize_self_energies(torch.nn.Linear(1, 1), data)  # no self-energies


def test_run_fits_on_a_new_run_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hipnn_pyg.train import run

    common = [*SHIPPED, *TINY, "test=false", "resume=true"]
    run.train(compose_config("train", tmp_path / "off", [*common, "fit_self_energies=false",
                                                         "trainer.max_epochs=1"]))
    state = torch.load(tmp_path / "off" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["state_dict"]["model.heads.energy.readouts.0.weight"].abs().max() < 10  # eV

    def refit(*args: object) -> bool:
        raise AssertionError("self-energies refitted on resume")

    monkeypatch.setattr(run, "initialize_self_energies", refit)
    run.train(compose_config("train", tmp_path / "off", [*common, "trainer.max_epochs=2"]))
    with pytest.raises(AssertionError, match="refitted"):  # a new run does fit
        run.train(compose_config("train", tmp_path / "new", [*common, "trainer.max_epochs=1"]))


def test_run_refits_the_best_weights_on_training_residuals(tmp_path: Path) -> None:
    # After training the energy offset is refitted on the training split: model.pt then
    # has (least squares on one molecule's element counts) zero mean training residual,
    # while the checkpoint keeps the trained self-energies; off, model.pt is the checkpoint.
    from hipnn_pyg.nn.predict import predict
    from hipnn_pyg.serialization import load_model, model_from_state, torch_load
    from hipnn_pyg.train import run

    common = [*SHIPPED, *TINY, "trainer.max_epochs=2"]
    residuals = {}
    for name, flag in [("on", "true"), ("off", "false")]:
        cfg = compose_config("train", tmp_path / name, [*common, f"refit_self_energies={flag}"])
        run.train(cfg)
        datamodule = hydra_instantiate(cfg.data)
        datamodule.setup("fit")
        model = load_model(tmp_path / name / "model.pt")
        batch = next(iter(DataLoader(datamodule.train_dataset, batch_size=64)))
        predicted = predict(model, batch, compute_forces=False)["energy"].view(-1)
        residuals[name] = (batch.energy.view(-1) - predicted).mean().item()
        summary = json.loads((tmp_path / name / "results.json").read_text())
        assert "test/energy_mae" in summary["metrics"]
        best = model_from_state(torch_load(summary["best_checkpoint"])["hipnn_model"])
        same = torch.equal(best.self_energies, model.self_energies)
        assert same == (name == "off")  # the checkpoint keeps the trained self-energies
    # eV: the least-squares shift removes the mean, up to the float32 self-energies
    # (~-468 eV, steps of 3.1e-5 eV): 6 H + 2 C + 1 O round it by at most 1.4e-4 eV
    assert abs(residuals["on"]) < 1.5e-4
    assert abs(residuals["off"]) > 10 * abs(residuals["on"])
