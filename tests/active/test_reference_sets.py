"""Reference sets of the active-learning benchmark: bonds, rotors, MD frames, scans."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from hipnn_pyg.active.reference_sets import bonds, md_frames, rotor, torsion_scan


def _ethanol():
    atoms = molecule("CH3CH2OH")
    return atoms


def test_rotors_of_ethanol() -> None:
    atoms = _ethanol()
    oxygen = int(np.flatnonzero(atoms.numbers == 8)[0])
    carbons = [int(i) for i in np.flatnonzero(atoms.numbers == 6)]
    alpha = next(c for c in carbons if (min(c, oxygen), max(c, oxygen)) in bonds(atoms))
    beta = next(c for c in carbons if c != alpha)
    hydroxyl = rotor(atoms, (alpha, oxygen))
    assert [atoms.numbers[i] for i in hydroxyl] == [1]
    methyl = rotor(atoms, (alpha, beta))
    assert sorted(atoms.numbers[i] for i in methyl) == [1, 1, 1]
    ring = molecule("C6H6")
    with pytest.raises(ValueError, match="in a ring"):
        rotor(ring, (0, 1))


def test_relaxed_scan_holds_each_dihedral() -> None:
    atoms = _ethanol()
    oxygen = int(np.flatnonzero(atoms.numbers == 8)[0])
    linked = {j for pair in bonds(atoms) if oxygen in pair for j in pair} - {oxygen}
    hydrogen = next(j for j in linked if atoms.numbers[j] == 1)
    alpha = next(j for j in linked if atoms.numbers[j] == 6)
    beta = next(int(c) for c in np.flatnonzero(atoms.numbers == 6) if c != alpha)
    dihedral = [hydrogen, oxygen, alpha, beta]
    frames = torsion_scan(atoms, EMT(), dihedral, [0.0, 120.0, 240.0], max_steps=30)
    assert [a.info["dihedral_deg"] for a in frames] == [0.0, 120.0, 240.0]
    for atoms_k, angle in zip(frames, [0.0, 120.0, 240.0], strict=True):
        measured = atoms_k.get_dihedral(*dihedral)
        assert min(abs(measured - angle), 360 - abs(measured - angle)) < 0.1
        assert "forces" in atoms_k.calc.results and not atoms_k.constraints


def test_md_frames_are_labelled_and_spaced() -> None:
    from ase.cluster import Icosahedron

    cluster = Icosahedron("Cu", 2)
    frames = md_frames(cluster, EMT(), 300.0, frames=3, interval=5, equilibration=10,
                       seed=0, timestep_fs=2.0)
    assert [a.info["md_step"] for a in frames] == [15, 20, 25]
    assert all(a.info["temperature_K"] == 300.0 for a in frames)
    for atoms in frames:
        reference = atoms.copy()
        reference.calc = EMT()
        np.testing.assert_allclose(atoms.calc.results["forces"], reference.get_forces())
    assert not np.allclose(frames[0].positions, frames[1].positions)
