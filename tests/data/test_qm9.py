"""QM9: all 130,831 molecules, Hartree -> eV, Debye -> e·Å, vectorised load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hipnn_pyg.data import QM9Dataset
from tests.data.helpers import require

HARTREE = 27.211386  # eV, written out independently of the package
DEBYE = 0.2081943  # e·Å


@pytest.fixture(scope="module")
def qm9_path(shared_data):
    return require(shared_data / "qm9" / "qm9_qm9pack_130831.npz")


@pytest.fixture(scope="module")
def qm9(qm9_path):
    return QM9Dataset(qm9_path)


def test_count(qm9):
    assert len(qm9) == 130_831
    assert qm9._data.z.numel() == 2_359_210


def test_units_and_known_values(qm9):
    methane, ammonia = qm9[0], qm9[1]
    assert methane.z.tolist() == [6, 1, 1, 1, 1]
    assert methane.energy.dtype == torch.float64
    assert methane.energy.item() == pytest.approx(-40.47893 * HARTREE, abs=1e-4)
    assert ammonia.dipole_magnitude.item() == pytest.approx(1.6256 * DEBYE, rel=1e-6)
    assert methane.charges.shape == (5,)
    assert methane.charges.sum().item() == pytest.approx(0.0, abs=1e-4)
    assert not qm9.has("forces")
    bond = (methane.pos[1] - methane.pos[0]).norm().item()
    assert 1.0 < bond < 1.2  # C-H bond in Å


def test_target_subset_and_max_molecules(qm9_path):
    raw = np.load(qm9_path)
    rows = [5, 100, 130_830]
    dataset = QM9Dataset(qm9_path, target="G", subset=rows, mulliken=False)
    assert len(dataset) == 3 and not dataset.has("charges")
    assert dataset._data.idx.tolist() == rows
    last = dataset[2]
    assert last.z.tolist() == raw["Z"][raw["offsets"][-2] :].tolist()
    assert last.energy.item() == pytest.approx(raw["G_Ha"][-1] * HARTREE, abs=1e-4)
    assert len(QM9Dataset(qm9_path, max_molecules=7)) == 7
    with pytest.raises(ValueError, match="unknown QM9 target"):
        QM9Dataset(qm9_path, target="mu")
