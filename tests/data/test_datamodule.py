"""HIPNNDataModule: splits, loaders, official rMD17 test file, mixed batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from hipnn_pyg.data import ASEDataset, HIPNNDataModule, split_indices
from tests.data.helpers import require


def test_qm9_module_with_dataset_kwargs(shared_data, tmp_path):
    path = require(shared_data / "qm9" / "qm9_qm9pack_130831.npz")
    split_file = tmp_path / "qm9_split.npz"
    module = HIPNNDataModule(
        path,
        num_train=200,
        num_val=50,
        num_test=50,
        batch_size=16,
        seed=7,
        split_file=split_file,
        target="H",
        max_molecules=1000,
    )
    module.setup("fit")
    assert (len(module.train_dataset), len(module.val_dataset), len(module.test_dataset)) == (
        200,
        50,
        50,
    )
    assert module.dataset.target == "H"
    np.testing.assert_array_equal(module.split.train, split_indices(1000, 200, 50, 50, 7).train)
    batch = next(iter(module.train_dataloader()))
    assert batch.num_graphs == 16 and batch.energy.shape == (16,)
    assert batch.cell.shape == (16, 3, 3) and batch.pbc.shape == (16, 3)
    assert set(module.species) <= {1, 6, 7, 8, 9}
    again = HIPNNDataModule(
        path,
        num_train=200,
        num_val=50,
        num_test=50,
        seed=1,
        split_file=split_file,
        max_molecules=1000,
    )
    again.setup()
    np.testing.assert_array_equal(again.split.val, module.split.val)


def test_rmd17_official_test_file(shared_data):
    folder = shared_data / "rmd17"
    train = require(folder / "rmd17_ethanol_train_01.npz")
    test = require(folder / "rmd17_ethanol_test_01.npz")
    module = HIPNNDataModule(
        train, test_path=test, num_train=950, num_val=50, batch_size=100, require_forces=True
    )
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset), len(module.test_dataset)) == (
        950,
        50,
        1000,
    )
    assert str(module.test_dataset.path).endswith("test_01.npz")
    assert len(next(iter(module.test_dataloader())).energy) == 100
    subset = HIPNNDataModule(train, test_path=test, num_train=900, num_val=100, num_test=10)
    subset.setup()
    assert len(subset.test_dataset) == 10


def test_fixed_validation_file(tmp_path):
    # active learning's committees validate on one fixed external file: all of it,
    # and the training file then gives every frame to training
    from hipnn_pyg.active.structures import read, write_frames

    frames = read("data/ethanol_gfn2/ethanol_gfn2.extxyz", ":30")
    write_frames(tmp_path / "train.extxyz", frames[:20])
    write_frames(tmp_path / "val.extxyz", frames[20:])
    module = HIPNNDataModule(tmp_path / "train.extxyz", val_path=tmp_path / "val.extxyz",
                             num_train=None, num_val=0.5, num_test=0)
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset)) == (20, 10)
    np.testing.assert_allclose(module.val_dataset[0].energy.numpy(),
                               [frames[20].get_potential_energy()])


def test_molecules_and_crystals_batch_together(shared_data):
    molecules = ASEDataset(
        require(shared_data / "botnet" / "dataset_ethanol" / "train.xyz"), index=":2"
    )
    water = ASEDataset(
        require(shared_data / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz"), index=":1"
    )
    batch = Batch.from_data_list([molecules[0], water[0], molecules[1]])
    assert batch.cell.shape == (3, 3, 3) and batch.pbc.tolist()[1] == [True] * 3
    assert not batch.pbc[0].any() and batch.energy.dtype == torch.float64
    assert batch.forces.shape == (9 + 192 + 9, 3)


def test_bad_split_request(shared_data):
    path = require(shared_data / "rmd17" / "rmd17_ethanol_test_01.npz")
    with pytest.raises(ValueError, match="add up to"):
        HIPNNDataModule(path, num_train=900, num_val=200).setup()
