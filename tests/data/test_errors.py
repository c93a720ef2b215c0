"""Bad data fails loudly, naming the file and the problem."""

from __future__ import annotations

import gzip
import shutil

import ase.io as ase_io
import numpy as np
import pytest

from hipnn_pyg.data import (
    ANIDataset,
    ASEDataset,
    DataFormatError,
    HIPNNDataModule,
    QM9Dataset,
    RMD17Dataset,
    load_dataset,
)
from tests.data.helpers import require


def _truncate(source, target, fraction: float = 0.5):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _md17(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "nuclear_charges": np.array([8, 1, 1]),
        "coords": rng.normal(size=(4, 3, 3)),
        "energies": np.zeros(4),
        "forces": np.zeros((4, 3, 3)),
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("cls", [RMD17Dataset, QM9Dataset, ANIDataset, ASEDataset, load_dataset])
def test_missing_file(tmp_path, cls):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        cls(tmp_path / "nowhere.npz")


def test_truncated_npz(shared_data, tmp_path):
    bad = _truncate(
        require(shared_data / "rmd17" / "rmd17_ethanol_test_01.npz"), tmp_path / "cut.npz"
    )
    for loader in (RMD17Dataset, load_dataset):
        with pytest.raises(DataFormatError, match="cut.npz"):
            loader(bad)


def test_truncated_hdf5(shared_data, tmp_path):
    bad = _truncate(require(shared_data / "comp6" / "s66x8_wb97x6-31gd.h5"), tmp_path / "cut.h5")
    with pytest.raises(DataFormatError, match="cut.h5.*HDF5"):
        load_dataset(bad)


def test_truncated_xyz(shared_data, tmp_path):
    source = require(shared_data / "botnet" / "dataset_ethanol" / "train.xyz")
    bad = _truncate(source, tmp_path / "cut.xyz", 0.3)
    with pytest.raises(DataFormatError, match="cut.xyz"):
        ASEDataset(bad)
    gz = tmp_path / "cut.extxyz.gz"
    with open(source, "rb") as raw, gzip.open(tmp_path / "full.extxyz.gz", "wb") as out:
        shutil.copyfileobj(raw, out)
    _truncate(tmp_path / "full.extxyz.gz", gz)
    with pytest.raises(DataFormatError, match="cut.extxyz.gz"):
        load_dataset(gz)


def test_wrong_shapes(tmp_path):
    with pytest.raises(DataFormatError, match=r"'coords' has shape \[4, 9\]"):
        RMD17Dataset(_md17(tmp_path / "a.npz", coords=np.zeros((4, 9))))
    with pytest.raises(DataFormatError, match=r"b.npz.*'forces' has shape \[4, 2, 3\]"):
        RMD17Dataset(_md17(tmp_path / "b.npz", forces=np.zeros((4, 2, 3))))
    with pytest.raises(DataFormatError, match=r"'energies' has shape \[3\]"):
        RMD17Dataset(_md17(tmp_path / "c.npz", energies=np.zeros(3)))


def test_nan_positions(tmp_path):
    coords = np.random.default_rng(0).normal(size=(4, 3, 3))
    coords[2, 1, 0] = np.nan
    with pytest.raises(DataFormatError, match=r"nan.npz: 'pos' holds NaN.*configuration 2"):
        RMD17Dataset(_md17(tmp_path / "nan.npz", coords=coords))


def test_unknown_formats(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a data file")
    with pytest.raises(DataFormatError, match="junk.bin: unknown data format"):
        load_dataset(junk)
    with pytest.raises(DataFormatError, match="unknown format 'csv'"):
        load_dataset(_md17(tmp_path / "ok.npz"), format="csv")
    other = tmp_path / "other.npz"
    np.savez(other, foo=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"other.npz: npz layout not recognised.*foo"):
        load_dataset(other)


def test_require_forces(shared_data):
    path = require(shared_data / "botnet" / "dataset_ethanol" / "test_dimers.xyz")
    module = HIPNNDataModule(path, num_train=10, num_val=5, require_forces=True)
    with pytest.raises(ValueError, match=r"require_forces=True.*test_dimers.xyz.*'forces'"):
        module.setup()


def test_degenerate_periodic_cell_and_bad_elements(tmp_path):
    from ase import Atoms

    flat = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[3.0, 3.0, 0.0], pbc=True)
    ase_io.write(tmp_path / "flat.extxyz", flat)
    with pytest.raises(DataFormatError, match=r"flat.extxyz: periodic direction 2 .*zero"):
        ASEDataset(tmp_path / "flat.extxyz")
    with pytest.raises(DataFormatError, match=r"atomic number 0 outside 1..118"):
        RMD17Dataset(_md17(tmp_path / "z.npz", nuclear_charges=np.array([8, 0, 1])))
