"""ANI HDF5: COMP6 gradients negated into forces, charges, ANI-1 energies."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hipnn_pyg.data import ANIDataset
from tests.data.helpers import require

HARTREE = 27.211386  # eV


@pytest.fixture(scope="module")
def comp6_path(shared_data):
    return require(shared_data / "comp6" / "s66x8_wb97x6-31gd.h5")


@pytest.fixture(scope="module")
def comp6(comp6_path):
    return ANIDataset(comp6_path, charges_key="hirshfeld")


def test_comp6_counts_units_and_force_sign(comp6, comp6_path):
    assert len(comp6) == 528
    with h5py.File(comp6_path) as handle:
        group = handle["s66x8/mol00"]
        energy, gradient = group["energies"][0], group["forces"][0]
        hirshfeld = group["hirshfeld"][0]
    first = comp6[0]
    assert first.z.tolist() == [8, 1, 1, 8, 1, 1]
    assert first.energy.item() == pytest.approx(energy * HARTREE, abs=1e-4)
    np.testing.assert_allclose(first.forces.numpy(), -gradient * HARTREE, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.charges.numpy(), hirshfeld[:6], atol=1e-7)


def test_comp6_forces_integrate_to_energy_differences(comp6):
    """Along each S66x8 dissociation curve (rigid monomers) the energy change between
    neighbouring distances must equal minus the work of the forces (trapezoid rule)."""
    de, work = [], []
    for start in range(0, len(comp6), 8):
        curve = [comp6[start + k] for k in range(8)]
        for a, b in zip(curve[:-1], curve[1:], strict=True):
            de.append((b.energy - a.energy).item())
            step = (b.pos - a.pos).double()
            work.append(-0.5 * ((a.forces + b.forces).double() * step).sum().item())
    de, work = np.array(de), np.array(work)
    # A few curves are not rigid scans, so judge robustly: signs and median error.
    assert np.mean(np.sign(de) == np.sign(work)) > 0.9
    assert np.median(np.abs(de - work) / np.abs(de)) < 0.1


def test_gradient_flag_flips_sign(comp6_path, comp6):
    raw = ANIDataset(comp6_path, forces_are_gradients=False)
    torch.testing.assert_close(raw[5].forces, -comp6[5].forces)


def test_ani1_energies_only(shared_data):
    dataset = ANIDataset(require(shared_data / "ani1" / "ani_gdb_s01.h5"))
    assert len(dataset) == 10_800
    assert not dataset.has("forces") and dataset.has("energy")
    assert dataset.species() == [1, 6, 7, 8]
    assert dataset[0].z.tolist() == [6, 1, 1, 1, 1]
    assert dataset[10_799].idx.item() == 10_799
    per_atom = dataset._data.energy / dataset.atom_counts()
    assert (per_atom < -100).all()  # total energies in eV, not Hartree


def test_atomic_numbers_layout(tmp_path):
    path = tmp_path / "ani1x_like.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("C1H4")
        group["atomic_numbers"] = np.array([6, 1, 1, 1, 1])
        group["coordinates"] = np.random.default_rng(0).normal(size=(3, 5, 3))
        group["wb97x_dz.energy"] = np.array([-40.0, -40.1, -40.2])
        group["wb97x_dz.forces"] = np.ones((3, 5, 3))
    dataset = ANIDataset(
        path, energy_key="wb97x_dz.energy", forces_key="wb97x_dz.forces", forces_are_gradients=False
    )
    assert len(dataset) == 3
    assert dataset[1].energy.item() == pytest.approx(-40.1 * HARTREE)
    assert dataset[1].forces[0, 0].item() == pytest.approx(HARTREE, rel=1e-6)
