"""Pair lists: free molecules, periodic cells, slabs, wires and mixed batches against
ASE's ``neighbor_list`` (property-based, positions anywhere), caps and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hipnn_pyg.graph import radius_graph
from tests.strategies import systems


def ase_pairs(atoms: Atoms, cutoff: float) -> set[tuple[int, int, int, int, int]]:
    i, j, shifts = neighbor_list("ijS", atoms, cutoff)
    return {(a, b, *map(int, s)) for a, b, s in zip(i, j, shifts, strict=True)}


def our_pairs(graph, offset: int = 0) -> set[tuple[int, int, int, int, int]]:
    source, target = graph.edge_index.tolist()
    return {
        (i - offset, j - offset, *s)
        for i, j, s in zip(target, source, graph.shifts.tolist(), strict=True)
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cell_scale", [2.0, 4.5, 9.0])
def test_periodic_pairs_match_ase(seed: int, cell_scale: float) -> None:
    rng = np.random.default_rng(seed)
    cutoff = 5.0  # larger than the 2 Å cell: many images per direction
    cell = cell_scale * (np.eye(3) + 0.4 * rng.random((3, 3)))
    pbc = [True, bool(seed % 2), True]
    # Atoms partly outside the cell, to exercise wrapping.
    positions = (rng.random((7, 3)) * 1.6 - 0.3) @ cell
    atoms = Atoms("H7", positions=positions, cell=cell, pbc=pbc)
    graph = radius_graph(
        torch.tensor(positions), cutoff, cell=torch.tensor(cell)[None],
        pbc=torch.tensor(pbc)[None],
    )
    assert our_pairs(graph) == ase_pairs(atoms, cutoff)
    expected = np.linalg.norm(
        positions[graph.edge_index[0]] - positions[graph.edge_index[1]]
        + graph.shifts.numpy() @ cell, axis=1,
    )
    np.testing.assert_allclose(graph.distances.numpy(), expected, rtol=1e-12)


def test_mixed_batch_of_free_and_periodic_graphs() -> None:
    rng = np.random.default_rng(7)
    cutoff = 3.0
    crystal = Atoms("H4", positions=rng.random((4, 3)) * 2.5,
                    cell=2.5 * np.eye(3) + 0.2 * rng.random((3, 3)), pbc=True)
    molecule = Atoms("H5", positions=rng.random((5, 3)) * 3.0)
    pos = torch.tensor(np.concatenate([molecule.positions, crystal.positions]))
    batch = torch.tensor([0] * 5 + [1] * 4)
    cell = torch.stack([torch.zeros(3, 3, dtype=torch.float64), torch.tensor(crystal.cell[:])])
    pbc = torch.tensor([[False] * 3, [True] * 3])
    graph = radius_graph(pos, cutoff, batch, cell, pbc)
    in_molecule = graph.edge_index[1] < 5
    molecule_graph = type(graph)(*(t[..., in_molecule] if t.dim() == 2 and t.size(0) == 2
                                   else t[in_molecule] for t in graph))
    crystal_graph = type(graph)(*(t[..., ~in_molecule] if t.dim() == 2 and t.size(0) == 2
                                  else t[~in_molecule] for t in graph))
    assert our_pairs(molecule_graph) == ase_pairs(molecule, cutoff)
    assert our_pairs(crystal_graph, offset=5) == ase_pairs(crystal, cutoff)


def test_free_molecule_matches_ase() -> None:
    rng = np.random.default_rng(1)
    atoms = Atoms("H20", positions=rng.random((20, 3)) * 6.0)
    graph = radius_graph(torch.tensor(atoms.positions), 2.5)
    assert our_pairs(graph) == ase_pairs(atoms, 2.5)
    assert not graph.shifts.any()


def test_distances_differentiable_in_cell() -> None:
    cell = (3.0 * torch.eye(3, dtype=torch.float64)).requires_grad_(True)
    pos = torch.tensor([[0.1, 0.2, 0.3], [1.5, 1.4, 1.6]], dtype=torch.float64)
    graph = radius_graph(pos, 4.0, cell=cell[None], pbc=torch.ones(1, 3, dtype=torch.bool))
    graph.distances.sum().backward()
    assert cell.grad is not None and cell.grad.abs().sum() > 0


def test_neighbour_cap_raises_instead_of_dropping() -> None:
    pos = torch.rand(30, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="max_num_neighbors=5"):
        radius_graph(pos, 5.0, max_num_neighbors=5)
    graph = radius_graph(pos, 5.0, max_num_neighbors=29)
    assert graph.edge_index.size(1) == 30 * 29


def test_singular_cell_is_named() -> None:
    pos = torch.rand(3, 3, dtype=torch.float64)
    cell = torch.tensor([[[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="singular cell"):
        radius_graph(pos, 2.0, cell=cell, pbc=torch.ones(1, 3, dtype=torch.bool))


# --- property-based: every pbc pattern, positions anywhere, against ASE ----------------

settings_pairs = settings(max_examples=300, deadline=None)


def pairs_away_from_cutoff(pairs, atoms: Atoms, cutoff: float, tol: float = 1e-9):
    # A pair within 1e-9 Å of the cutoff may fall either side by rounding in either code.
    def distance(p):
        i, j, *shift = p
        return np.linalg.norm(atoms.positions[j] - atoms.positions[i] + np.array(shift)
                              @ atoms.cell[:])
    return {p for p in pairs if abs(distance(p) - cutoff) > tol}


def graph_of(atoms: Atoms, cutoff: float):
    return radius_graph(
        torch.tensor(atoms.positions), cutoff, cell=torch.tensor(atoms.cell[:])[None],
        pbc=torch.tensor(atoms.pbc)[None],
    )


@settings_pairs
@given(atoms=systems())
def test_pairs_equal_ase_for_every_pbc_pattern(atoms: Atoms) -> None:
    cutoff = 3.0
    ours = pairs_away_from_cutoff(our_pairs(graph_of(atoms, cutoff)), atoms, cutoff)
    theirs = pairs_away_from_cutoff(ase_pairs(atoms, cutoff), atoms, cutoff)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(atoms=systems(max_atoms=6), cutoff=st.floats(4.0, 12.0))
def test_pairs_equal_ase_for_cells_smaller_than_the_cutoff(atoms: Atoms, cutoff: float) -> None:
    ours = pairs_away_from_cutoff(our_pairs(graph_of(atoms, cutoff)), atoms, cutoff)
    theirs = pairs_away_from_cutoff(ase_pairs(atoms, cutoff), atoms, cutoff)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(atoms=systems(), data=st.data())
def test_zero_lattice_vector_along_a_non_periodic_direction(atoms: Atoms, data) -> None:
    # ASE accepts a slab's or wire's cell without its non-periodic vectors.
    pbc = atoms.pbc.copy()
    assume(not pbc.all())
    cell = atoms.cell[:].copy()
    cell[~pbc] = 0.0
    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=cell, pbc=pbc)
    cutoff = 3.0
    ours = pairs_away_from_cutoff(our_pairs(graph_of(atoms, cutoff)), atoms, cutoff)
    theirs = pairs_away_from_cutoff(ase_pairs(atoms, cutoff), atoms, cutoff)
    assert ours == theirs


@settings(max_examples=60, deadline=None)
@given(members=st.lists(systems(max_atoms=8), min_size=2, max_size=4))
def test_mixed_batch_pairs_equal_each_system_alone(members: list[Atoms]) -> None:
    cutoff = 3.0
    pos = torch.tensor(np.concatenate([a.positions for a in members]))
    batch = torch.cat([torch.full((len(a),), g) for g, a in enumerate(members)])
    cell = torch.tensor(np.stack([a.cell[:] for a in members]))
    pbc = torch.tensor(np.stack([a.pbc for a in members]))
    graph = radius_graph(pos, cutoff, batch, cell, pbc)
    offset = 0
    for g, atoms in enumerate(members):
        in_graph = batch[graph.edge_index[1]] == g
        sub = type(graph)(graph.edge_index[:, in_graph], graph.shifts[in_graph],
                          graph.vectors[in_graph], graph.distances[in_graph])
        ours = pairs_away_from_cutoff(our_pairs(sub, offset), atoms, cutoff)
        theirs = pairs_away_from_cutoff(ase_pairs(atoms, cutoff), atoms, cutoff)
        assert ours == theirs, f"system {g} of the batch"
        offset += len(atoms)


def test_slab_translated_along_its_vacuum_keeps_its_pairs() -> None:
    from ase.build import fcc111

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=2.0)
    reference = ase_pairs(slab, 3.0)
    for dz in (3.0, -7.0, 12.0, 250.0):
        moved = slab.copy()
        moved.positions[:, 2] += dz
        assert our_pairs(graph_of(moved, 3.0)) == reference, dz


def test_working_cap_grows_until_no_atom_reaches_it() -> None:
    # A dense cluster: every atom has far more neighbours than the first working cap.
    from hipnn_pyg import graph as graph_module

    rng = np.random.default_rng(0)
    pos = torch.tensor(rng.random((300, 3)) * 4.0)
    reference = radius_graph(pos, 10.0, max_num_neighbors=299)
    assert reference.edge_index.size(1) == 300 * 299
    first = graph_module.FIRST_CAP
    try:
        graph_module.FIRST_CAP = 3
        grown = radius_graph(pos, 10.0)
    finally:
        graph_module.FIRST_CAP = first
    assert our_pairs(grown) == our_pairs(reference)


def test_pairs_at_the_cutoff_to_rounding_come_in_both_directions() -> None:
    # A flat cell: the wrapped search and the unwrapped distances round differently.
    atoms = Atoms("H", positions=[[0.01, 0.01, 0.01]], cell=np.diag([5.0, 5.0, 0.1]), pbc=True)
    graph = graph_of(atoms, 2.0)
    pairs = our_pairs(graph)
    assert pairs == ase_pairs(atoms, 2.0)
    assert all((j, i, -a, -b, -c) in pairs for i, j, a, b, c in pairs)
    assert float(graph.distances.max()) < 2.0


def test_a_nearly_singular_cell_is_named_not_a_failed_allocation() -> None:
    cell = torch.tensor([[[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 1e-6]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="too thin for cutoff"):
        radius_graph(torch.rand(4, 3, dtype=torch.float64), 5.0, cell=cell,
                     pbc=torch.ones(1, 3, dtype=torch.bool))


def test_bad_arguments_are_named() -> None:
    from hipnn_pyg.errors import GeometryError

    pos = torch.rand(3, 3, dtype=torch.float64)
    pos[1, 2] = float("nan")
    with pytest.raises(GeometryError, match=r"NaN or inf \(atoms \[1\]\)"):
        radius_graph(pos, 2.0)
    cell, pbc = torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"cell must have shape \[num_graphs, 3, 3\]"):
        radius_graph(torch.rand(3, 3, dtype=torch.float64), 2.0, cell=cell, pbc=pbc)
    with pytest.raises(ValueError, match="given together"):
        radius_graph(torch.rand(3, 3, dtype=torch.float64), 2.0, cell=cell[None])
