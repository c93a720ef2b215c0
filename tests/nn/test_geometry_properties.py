"""Energies, forces and stress over the whole space of geometries (property-based):
invariant under translation along any axis and under wrapping along periodic axes, the
same for a system in a random mixed batch as alone, and no stress for a free molecule.
The systems mix every pbc pattern, triclinic and small cells, and positions far outside
the cell."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

from hipnn_pyg import energy_forces_stress
from tests.nn.helpers import small_model, trained_looking
from tests.strategies import systems

MODEL = trained_looking(small_model(cutoff=3.0, soft_max_distance=2.8, min_distance=0.2),
                        scale=0.05)
SEPARATION = 0.5  # no two atoms (or images) closer than this: a valid geometry


def tensors(atoms: Atoms) -> tuple[torch.Tensor, ...]:
    return (torch.tensor(atoms.numbers), torch.tensor(atoms.positions),
            torch.tensor(atoms.cell[:])[None], torch.tensor(atoms.pbc)[None])


def evaluate(atoms: Atoms, stress: bool = False) -> dict[str, torch.Tensor]:
    z, pos, cell, pbc = tensors(atoms)
    return energy_forces_stress(MODEL, z, pos, None, cell, pbc, compute_stress=stress)


@settings(max_examples=60, deadline=None)
@given(atoms=systems(max_atoms=8, min_separation=SEPARATION),
       shift=st.tuples(*[st.floats(-40.0, 40.0)] * 3))
def test_energy_is_invariant_under_any_translation(atoms: Atoms, shift) -> None:
    moved = atoms.copy()
    moved.positions += np.array(shift)
    before, after = evaluate(atoms), evaluate(moved)
    torch.testing.assert_close(after["energy"], before["energy"], rtol=0, atol=1e-9)
    torch.testing.assert_close(after["forces"], before["forces"], rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(atoms=systems(max_atoms=8, min_separation=SEPARATION), data=st.data())
def test_energy_is_invariant_under_wrapping_along_periodic_axes(atoms: Atoms, data) -> None:
    # Each atom moved by its own whole lattice vectors, along periodic directions only.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    steps = rng.integers(-3, 4, size=(len(atoms), 3)) * atoms.pbc
    moved = atoms.copy()
    moved.positions += steps @ atoms.cell[:]
    before, after = evaluate(atoms), evaluate(moved)
    torch.testing.assert_close(after["energy"], before["energy"], rtol=0, atol=1e-9)
    torch.testing.assert_close(after["forces"], before["forces"], rtol=0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(members=st.lists(systems(max_atoms=6, min_separation=SEPARATION), min_size=2,
                        max_size=4))
def test_each_system_of_a_mixed_batch_is_as_it_is_alone(members: list[Atoms]) -> None:
    z = torch.cat([torch.tensor(a.numbers) for a in members])
    pos = torch.cat([torch.tensor(a.positions) for a in members])
    batch = torch.cat([torch.full((len(a),), g) for g, a in enumerate(members)])
    cell = torch.tensor(np.stack([a.cell[:] for a in members]))
    pbc = torch.tensor(np.stack([a.pbc for a in members]))
    mixed = energy_forces_stress(MODEL, z, pos, batch, cell, pbc, compute_stress=True)
    start = 0
    for g, atoms in enumerate(members):
        alone = evaluate(atoms, stress=True)
        end = start + len(atoms)
        torch.testing.assert_close(mixed["energy"][g], alone["energy"][0], rtol=0, atol=1e-9)
        torch.testing.assert_close(mixed["forces"][start:end], alone["forces"], rtol=0,
                                   atol=1e-9)
        torch.testing.assert_close(mixed["stress"][g], alone["stress"][0], rtol=0, atol=1e-9)
        start = end


@settings(max_examples=40, deadline=None)
@given(atoms=systems(max_atoms=8, min_separation=SEPARATION))
def test_a_free_molecule_has_no_stress_whatever_cell_it_carries(atoms: Atoms) -> None:
    free = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=False)
    out = evaluate(free, stress=True)
    assert torch.all(out["stress"] == 0)


def test_stress_of_a_periodic_graph_without_volume_is_refused() -> None:
    import pytest

    z, pos = torch.tensor([1, 1]), torch.tensor([[0.0, 0, 0], [0.7, 0, 0]], dtype=torch.float64)
    cell = torch.tensor([[[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]]], dtype=torch.float64)
    pbc = torch.tensor([[True, True, False]])
    out = energy_forces_stress(MODEL, z, pos, None, cell, pbc)  # energy and forces: fine
    assert torch.isfinite(out["forces"]).all()
    with pytest.raises(ValueError, match="no volume"):
        energy_forces_stress(MODEL, z, pos, None, cell, pbc, compute_stress=True)
