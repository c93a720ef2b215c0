"""rMD17: counts, kcal/mol -> eV, original MD17 keys, official split files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hipnn_pyg.data import RMD17Dataset, rmd17_split_files
from tests.data.helpers import require

KCAL = 0.0433641  # eV per kcal/mol, written out independently of the package


@pytest.fixture(scope="module")
def ethanol(shared_data):
    return require(shared_data / "rmd17" / "rmd17_ethanol_train_01.npz")


def test_counts_units_and_first_frame(ethanol):
    raw = np.load(ethanol)
    dataset = RMD17Dataset(ethanol)
    assert len(dataset) == 1000
    first = dataset[0]
    assert first.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert first.energy.dtype == torch.float64 and first.energy.shape == (1,)
    assert first.energy.item() == pytest.approx(raw["energies"][0] * KCAL, abs=1e-3)
    assert first.energy.item() == pytest.approx(-4209.7839, abs=1e-3)
    np.testing.assert_allclose(first.forces.numpy(), raw["forces"][0] * KCAL, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.pos.numpy(), raw["coords"][0], atol=1e-6)
    assert dataset[999].idx.item() == 999
    assert not first.pbc.any() and not first.cell.any()


def test_old_labels_and_max_frames(ethanol):
    raw = np.load(ethanol)
    dataset = RMD17Dataset(ethanol, use_old=True, max_frames=10)
    assert len(dataset) == 10
    assert dataset[3].energy.item() == pytest.approx(raw["old_energies"][3] * KCAL, abs=1e-3)


def test_agrees_with_botnet_extxyz_in_ev(shared_data):
    """BOTNet's ethanol train.xyz holds rMD17 split-04 frames already in eV."""
    from hipnn_pyg.data import ASEDataset

    botnet = ASEDataset(
        require(shared_data / "botnet" / "dataset_ethanol" / "train.xyz"), index=":5"
    )
    rmd17 = RMD17Dataset(
        require(shared_data / "rmd17" / "rmd17_ethanol_train_04.npz"), max_frames=5
    )
    for a, b in zip(botnet, rmd17, strict=True):
        torch.testing.assert_close(a.pos, b.pos)
        assert a.energy.item() == pytest.approx(b.energy.item(), abs=1e-3)
        torch.testing.assert_close(a.forces, b.forces, atol=1e-4, rtol=1e-4)


def test_original_md17_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "md17.npz"
    np.savez(
        path,
        z=np.array([8, 1, 1]),
        R=rng.normal(size=(4, 3, 3)),
        E=np.arange(4.0)[:, None],
        F=np.ones((4, 3, 3)),
    )
    dataset = RMD17Dataset(path)
    assert len(dataset) == 4
    assert dataset[2].energy.item() == pytest.approx(2 * KCAL, rel=1e-6)
    assert dataset[2].forces[0, 0].item() == pytest.approx(KCAL, rel=1e-6)


def test_official_split_files(shared_data):
    train, test = rmd17_split_files(shared_data / "rmd17", "ethanol", 1)
    assert train.name == "rmd17_ethanol_train_01.npz" and test.name == "rmd17_ethanol_test_01.npz"
    old_train = np.load(train)["old_indices"]
    old_test = np.load(require(test))["old_indices"]
    assert not set(old_train) & set(old_test)
    with pytest.raises(FileNotFoundError, match="rmd17_ethanol_train_09"):
        rmd17_split_files(shared_data / "rmd17", "ethanol", 9)
