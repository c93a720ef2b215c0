"""ASE-readable files: BOTNet extxyz, mlearn crystals (kbar virial stress), water, .db."""

from __future__ import annotations

import gzip

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from hipnn_pyg.data import ASEDataset, DataFormatError
from tests.data.helpers import require

KBAR_PER_EV_A3 = 1602.1766  # 1 eV/Å³ = 160.21766 GPa


def test_botnet_ethanol(shared_data):
    path = require(shared_data / "botnet" / "dataset_ethanol" / "train.xyz")
    with open(path) as stream:
        stream.readline()
        header = stream.readline()
        first_atom = stream.readline().split()
    dataset = ASEDataset(path)
    assert len(dataset) == 1000
    first = dataset[0]
    assert first.energy.item() == pytest.approx(-4209.4657843064815, abs=1e-9)
    np.testing.assert_allclose(
        first.forces[0].numpy(), [float(v) for v in first_atom[4:7]], rtol=1e-6
    )
    assert 'Lattice="50.0' in header  # a box in the file, but no periodicity:
    assert not first.pbc.any() and not first.cell.any()


def test_energy_only_file_and_index(shared_data):
    path = require(shared_data / "botnet" / "dataset_ethanol" / "test_dimers.xyz")
    dataset = ASEDataset(path, index="10:20")
    assert len(dataset) == 10 and not dataset.has("forces")
    assert dataset._data.idx.tolist() == list(range(10, 20))


def _read_gz(path) -> list[Atoms]:
    with gzip.open(path, "rt") as stream:  # ASE re-decompresses on every frame otherwise
        return ase.io.read(stream, index=":", format="extxyz")


@pytest.fixture(scope="module")
def mlearn_si(shared_data):
    path = require(shared_data / "mlearn" / "mlearn_Si_test.extxyz.gz")
    return path, ASEDataset(path), _read_gz(path)


def test_mlearn_periodic_and_stress_units(mlearn_si):
    _, dataset, images = mlearn_si
    assert len(dataset) == 25
    assert dataset._data.pbc.all()
    first = dataset[0]
    np.testing.assert_allclose(first.cell[0].numpy(), images[0].cell.array, atol=1e-5)
    kbar = images[0].info["virial_stress_source"]
    assert first.stress[0, 0, 0].item() == pytest.approx(-kbar[0] / KBAR_PER_EV_A3, rel=1e-5)
    assert first.stress[0, 0, 1].item() == pytest.approx(-kbar[3] / KBAR_PER_EV_A3, rel=1e-5)
    assert dataset.source_keys["stress"] == "virial_stress_source"


def test_mlearn_stress_sign_on_compressed_cell(mlearn_si):
    """A cell compressed along x pushes outwards: ASE stress xx < 0."""
    _, dataset, images = mlearn_si
    lengths = np.array([a.cell.lengths() for a in images])
    elastic = [i for i, a in enumerate(images) if a.info["config_type"] == "Elastic"]
    diagonal = [i for i in elastic if np.allclose(images[i].cell.angles(), 90.0)]
    i = min(diagonal, key=lambda k: lengths[k, 0] / lengths[k, 1])
    assert lengths[i, 0] < 0.95 * lengths[i, 1]
    stress = dataset[i].stress[0]
    assert stress[0, 0] < 0 and stress[0, 0] < stress[1, 1]


def _argmax_2d(matrix: torch.Tensor) -> tuple[int, int]:
    return divmod(int(matrix.argmax()), matrix.shape[1])


def _shear_components(path, order: str) -> set[tuple[tuple[int, int], tuple[int, int]]]:
    """(sheared cell plane, largest off-diagonal stress) of the sheared Elastic cells."""
    dataset, images = ASEDataset(path, virial_stress_order=order), _read_gz(path)
    found = set()
    for data, atoms in zip(dataset, images, strict=True):
        if atoms.info["config_type"] != "Elastic":
            continue
        cell, stress = data.cell[0].double(), data.stress[0].double()
        off = (cell + cell.T).abs().triu(1)
        shear = (stress.abs() * KBAR_PER_EV_A3).triu(1)
        if off.max() > 0.1 and shear.max() > 5:
            found.add((_argmax_2d(off), _argmax_2d(shear)))
    return found


@pytest.mark.parametrize(
    ("element", "order"), [("Si", "xx yy zz xy yz zx"), ("Cu", "xx yy zz xy xz yz")]
)
def test_mlearn_voigt_order(shared_data, element, order):
    """Sheared cells must show their shear stress in the sheared plane."""
    path = require(shared_data / "mlearn" / f"mlearn_{element}_test.extxyz.gz")
    pairs = _shear_components(path, order)
    assert len(pairs) == 3 and all(plane == stress for plane, stress in pairs)


def test_water_gz_reads_every_frame(shared_data):
    path = require(shared_data / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz")
    dataset = ASEDataset(path)
    assert len(dataset) == 400 and dataset._data.z.numel() == 400 * 192
    assert dataset[0].cell[0, 0, 0].item() == pytest.approx(12.444661, abs=1e-5)
    assert dataset[-1].idx.item() == 399


def _labelled(n_frames: int = 3) -> list[Atoms]:
    rng = np.random.default_rng(1)
    images = []
    for k in range(n_frames):
        atoms = Atoms("H2O", positions=rng.normal(size=(3, 3)), cell=np.eye(3) * 4.0, pbc=True)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=-10.0 - k,
            forces=np.full((3, 3), 0.5),
            stress=np.arange(6.0) * 0.01,
            dipole=np.array([0.1, 0.2, 0.3]),
            charges=np.array([0.2, 0.2, -0.4]),
        )
        images.append(atoms)
    return images


def test_ase_database(tmp_path):
    path = tmp_path / "set.db"
    with ase.db.connect(path) as db:
        for atoms in _labelled():
            db.write(atoms, total_charge=-1.0, data={"quadrupole": np.eye(3)})
    dataset = ASEDataset(path, charge_key="total_charge", index="1:")
    assert len(dataset) == 2 and dataset._data.idx.tolist() == [1, 2]
    data = dataset[0]
    assert data.energy.item() == pytest.approx(-11.0)
    assert data.charge.item() == pytest.approx(-1.0)
    # ASE Voigt order xx yy zz yz xz xy -> full tensor
    expected = torch.tensor([[0.0, 0.05, 0.04], [0.05, 0.01, 0.03], [0.04, 0.03, 0.02]])
    torch.testing.assert_close(data.stress[0], expected)
    torch.testing.assert_close(data.dipole[0], torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(data.quadrupole[0], torch.eye(3))
    torch.testing.assert_close(data.charges, torch.tensor([0.2, 0.2, -0.4]))


def test_custom_keys_and_virial(tmp_path):
    images = _labelled(2)
    for atoms in images:
        atoms.calc = None
        atoms.info["REF_energy"] = -3.0
        atoms.arrays["REF_forces"] = np.ones((3, 3))
        atoms.info["virial"] = np.eye(3) * 6.4  # eV; volume 64 Å³
    path = tmp_path / "set.extxyz.gz"
    with gzip.open(path, "wt") as stream:
        ase.io.write(stream, images, format="extxyz")
    dataset = ASEDataset(path, energy_key="REF_energy", forces_key="REF_forces")
    data = dataset[1]
    assert data.energy.item() == -3.0 and data.forces.sum().item() == 9.0
    torch.testing.assert_close(data.stress[0], -0.1 * torch.eye(3))


def test_label_in_some_frames_only(tmp_path):
    images = _labelled(3)
    images[1].calc = SinglePointCalculator(images[1], energy=1.0)  # no forces
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, images)
    with pytest.raises(DataFormatError, match=r"'forces' present in 2 of 3.*configuration 1"):
        ASEDataset(path)
