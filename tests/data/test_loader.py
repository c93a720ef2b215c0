"""AtomsLoader: vectorised batches identical to PyG's collation."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from hipnn_pyg.data import AtomsLoader, load_dataset
from tests.data.helpers import require


@pytest.mark.parametrize(
    ("relative", "kwargs"),
    [
        ("comp6/s66x8_wb97x6-31gd.h5", {"charges_key": "cm5"}),
        ("mlearn/mlearn_Ni_test.extxyz.gz", {}),
        ("qm9/qm9_qm9pack_130831.npz", {"max_molecules": 300}),
    ],
)
def test_same_batches_as_pyg(shared_data, relative, kwargs):
    dataset = load_dataset(require(shared_data / relative), **kwargs)
    subset = dataset[torch.arange(len(dataset) - 1, 0, -3)]  # a reordered selection
    fast = list(AtomsLoader(subset, batch_size=7))
    reference = list(DataLoader(subset, batch_size=7))
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference, strict=True):
        assert set(a.keys()) == set(b.keys())
        for key in b.keys():  # noqa: SIM118 (Batch iterates over (key, value) pairs)
            assert torch.equal(a[key], b[key]), key
        assert a.num_graphs == b.num_graphs
    example = fast[1].get_example(2)
    for key, value in subset[9].items():
        assert torch.equal(example[key], value), key


def test_transform_and_workers(shared_data):
    path = require(shared_data / "rmd17" / "rmd17_ethanol_test_01.npz")
    dataset = load_dataset(path, max_frames=40)

    def shift(data):
        data = data.clone()
        data.energy = data.energy + 1.0
        return data

    shifted = load_dataset(path, max_frames=40, transform=shift)
    plain = next(iter(AtomsLoader(dataset, batch_size=8)))
    moved = next(iter(AtomsLoader(shifted, batch_size=8)))
    torch.testing.assert_close(moved.energy, plain.energy + 1.0)
    with_workers = list(AtomsLoader(dataset, batch_size=8, num_workers=2))
    assert isinstance(with_workers[0], Batch)
    assert torch.equal(torch.cat([b.idx for b in with_workers]), torch.arange(40))
