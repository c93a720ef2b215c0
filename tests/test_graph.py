"""Pair lists: free molecules, periodic cells (against ASE), caps and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from hipnn_pyg.graph import radius_graph


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
