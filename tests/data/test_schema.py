"""Every loader yields the same Data schema: keys, shapes, dtypes."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg.data import load_dataset
from tests.data.helpers import require

FILES = {
    "rmd17": ("rmd17/rmd17_aspirin_test_01.npz", {}),
    "qm9": ("qm9/qm9_qm9pack_130831.npz", {"max_molecules": 50}),
    "comp6": ("comp6/s66x8_wb97x6-31gd.h5", {"charges_key": "cm5"}),
    "ani1": ("ani1/ani_gdb_s01.h5", {}),
    "botnet": ("botnet/dataset_3BPA/train_300K.xyz", {"index": ":20"}),
    "mlearn": ("mlearn/mlearn_Mo_test.extxyz.gz", {}),
}
SHAPES = {
    "z": ("N",),
    "pos": ("N", 3),
    "forces": ("N", 3),
    "charges": ("N",),
    "energy": (1,),
    "cell": (1, 3, 3),
    "pbc": (1, 3),
    "charge": (1,),
    "idx": (1,),
    "stress": (1, 3, 3),
    "dipole": (1, 3),
    "dipole_magnitude": (1,),
    "quadrupole": (1, 3, 3),
}
DTYPES = {"z": torch.long, "idx": torch.long, "pbc": torch.bool, "energy": torch.float64}


@pytest.mark.parametrize("name", list(FILES))
def test_schema(shared_data, name):
    relative, kwargs = FILES[name]
    dataset = load_dataset(require(shared_data / relative), **kwargs)
    data = dataset[len(dataset) - 1]
    assert {"z", "pos", "cell", "pbc", "charge", "idx", "energy"} <= set(data.keys())
    assert set(data.keys()) <= set(SHAPES)
    n = data.z.numel()
    for key, value in data.items():
        expected = tuple(n if s == "N" else s for s in SHAPES[key])
        assert tuple(value.shape) == expected, key
        assert value.dtype == DTYPES.get(key, torch.float32), key
    assert data.idx.item() == (len(dataset) - 1 if name != "botnet" else 19)
