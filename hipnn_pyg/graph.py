r"""Neighbour lists for free molecules and periodic cells.

Free molecules go through :func:`torch_cluster.radius_graph`. Periodic systems are
wrapped into their cell, replicated over the few cell images that can lie within the
cutoff, and searched with :func:`torch_cluster.radius`. Every edge carries the integer
cell shift :math:`\mathbf{S}` of its source image, so that

.. math::
    \mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{S}_{ij} \, \mathbf{C}

is an exact, differentiable function of the positions and of the cell.

Conventions follow PyG (``flow="source_to_target"``): ``edge_index[0]`` is the
neighbour :math:`j` (source), ``edge_index[1]`` the centre :math:`i` (target).
ASE's ``neighbor_list("ijS")`` gives the same pairs as ``(edge_index[1], edge_index[0],
shifts)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

try:  # torch_geometric 2.8 routes radius_graph to pyg-lib; we call torch_cluster directly
    import torch_cluster
except ImportError as error:  # pragma: no cover - import guard
    raise ImportError(
        "hipnn_pyg needs torch-cluster for neighbour lists: "
        "pip install --no-build-isolation torch-cluster"
    ) from error


class Graph(NamedTuple):
    r"""A radius graph.

    Attributes:
        edge_index (torch.Tensor): ``[2, num_edges]``, rows (neighbour j, centre i).
        shifts (torch.Tensor): ``[num_edges, 3]`` integer cell shifts of neighbour j
            (all zero for free molecules).
        vectors (torch.Tensor): ``[num_edges, 3]`` pair vectors :math:`r_j - r_i`.
        distances (torch.Tensor): ``[num_edges]`` pair distances.
    """

    edge_index: Tensor
    shifts: Tensor
    vectors: Tensor
    distances: Tensor


@torch.compiler.disable  # data-dependent search: runs eagerly inside compiled models
def radius_graph(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    max_num_neighbors: int | None = None,
) -> Graph:
    r"""Builds the pair list within ``cutoff`` for a batch of molecules and/or crystals.

    Args:
        pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å.
        cutoff (float): Pair cutoff in Å.
        batch (torch.Tensor, optional): Sorted graph index of each atom ``[num_atoms]``.
            (default: :obj:`None`, one graph)
        cell (torch.Tensor, optional): Cells ``[num_graphs, 3, 3]``, lattice vectors as
            rows. Ignored for graphs whose ``pbc`` is all :obj:`False`.
            (default: :obj:`None`)
        pbc (torch.Tensor, optional): Periodic directions ``[num_graphs, 3]`` (bool).
            (default: :obj:`None`, no periodicity)
        max_num_neighbors (int, optional): A cap on neighbours per atom. No pair is ever
            dropped silently: an atom with more neighbours raises :obj:`RuntimeError`.
            (default: :obj:`None`, no cap)
    """
    if batch is None:
        batch = pos.new_zeros(pos.size(0), dtype=torch.long)
    periodic = pbc is not None and cell is not None and bool(pbc.any())
    if periodic:
        edge_index, shifts = _periodic_pairs(pos, cutoff, batch, cell, pbc, max_num_neighbors)
    else:
        cap = _query_cap(max_num_neighbors, pos.size(0))
        edge_index = torch_cluster.radius_graph(
            pos, r=cutoff, batch=batch, loop=False, max_num_neighbors=cap,
            flow="source_to_target",
        )
        _check_cap(edge_index[1], pos.size(0), max_num_neighbors)
        shifts = edge_index.new_zeros(edge_index.size(1), 3)
    vectors = pair_vectors(pos, edge_index, shifts, batch, cell if periodic else None)
    return Graph(edge_index, shifts, vectors, vectors.norm(dim=-1))


def pair_vectors(
    pos: Tensor,
    edge_index: Tensor,
    shifts: Tensor,
    batch: Tensor,
    cell: Tensor | None = None,
) -> Tensor:
    r"""Pair vectors :math:`x_j - x_i + S_{ij} C`, differentiable in ``pos`` and ``cell``."""
    source, target = edge_index
    vectors = pos[source].sub_(pos[target])  # in place: one [E, 3] temporary fewer
    if cell is None:
        return vectors
    shifts = shifts.to(pos.dtype)
    if cell.size(0) == 1:
        return torch.addmm(vectors, shifts, cell[0])
    # One lattice vector at a time: [E, 3] temporaries, not the edges' cells [E, 3, 3].
    edge_graph = batch[target]
    for k in range(3):
        vectors = vectors + shifts[:, k : k + 1] * cell[edge_graph, k]
    return vectors


def _query_cap(max_num_neighbors: int | None, num_points: int) -> int:
    # Ask for one more than the cap, so that an atom *at* the cap shows it overflowed.
    return max(num_points, 1) if max_num_neighbors is None else max_num_neighbors + 1


def _check_cap(centres: Tensor, num_atoms: int, max_num_neighbors: int | None) -> None:
    if max_num_neighbors is None or centres.numel() == 0:
        return
    counts = torch.bincount(centres, minlength=num_atoms)
    if int(counts.max()) > max_num_neighbors:
        atom = int(counts.argmax())
        raise RuntimeError(
            f"atom {atom} has more than max_num_neighbors={max_num_neighbors} neighbours "
            "within the cutoff; raise max_num_neighbors (no pair is dropped silently)"
        )


def _periodic_pairs(
    pos: Tensor,
    cutoff: float,
    batch: Tensor,
    cell: Tensor,
    pbc: Tensor,
    max_num_neighbors: int | None,
) -> tuple[Tensor, Tensor]:
    num_atoms, device = pos.size(0), pos.device
    pbc = pbc.to(torch.bool)
    with torch.no_grad():
        cell = cell.detach().to(torch.float64)
        pos64 = pos.detach().to(torch.float64)
        any_pbc = pbc.any(dim=1)
        # Free graphs in a mixed batch get a unit cell: they are never wrapped or shifted.
        eye = torch.eye(3, dtype=cell.dtype, device=device).expand_as(cell)
        safe_cell = torch.where(any_pbc[:, None, None], cell, eye)
        _check_cells(safe_cell, any_pbc)

        # Wrap periodic coordinates into [0, 1) and remember the integer offsets.
        frac = torch.linalg.solve(safe_cell[batch].transpose(1, 2), pos64.unsqueeze(-1))
        frac = frac.squeeze(-1)
        offsets = torch.where(pbc[batch], torch.floor(frac), torch.zeros_like(frac))
        wrapped = pos64 - torch.einsum("nk,nkd->nd", offsets, safe_cell[batch])

        # Images needed per direction: cutoff over the spacing of lattice planes.
        plane_spacing = 1.0 / torch.linalg.inv(safe_cell).norm(dim=1)
        reach = torch.ceil(cutoff / plane_spacing).long() * pbc.long()
        max_reach = reach.max(dim=0).values.tolist()
        shifts = torch.cartesian_prod(
            *[torch.arange(-m, m + 1, device=device) for m in max_reach]
        ).view(-1, 3)
        num_shifts = shifts.size(0)

        # Image k of atom a lies at k = a * num_shifts + s; keeping atom-major order
        # keeps the image batch vector sorted, as torch_cluster requires.
        image_shift = shifts.repeat(num_atoms, 1)
        image_atom = torch.arange(num_atoms, device=device).repeat_interleave(num_shifts)
        image_batch = batch[image_atom]
        allowed = (image_shift.abs() <= reach[image_batch]).all(dim=1)
        # An image lying a fractional gap g_d outside the home cell along d is at least
        # g_d * plane_spacing_d from every atom of it: only images within the cutoff of
        # the cell take part (a few percent of the atoms in a large cell, not 26 copies).
        image_frac = (frac - offsets)[image_atom] + image_shift
        gap = torch.clamp(torch.maximum(-image_frac, image_frac - 1.0), min=0.0)
        allowed &= (gap * plane_spacing[image_batch] <= cutoff).all(dim=1)
        image_shift, image_atom, image_batch = (
            image_shift[allowed], image_atom[allowed], image_batch[allowed]
        )
        image_pos = wrapped[image_atom] + torch.einsum(
            "nk,nkd->nd", image_shift.to(cell.dtype), safe_cell[image_batch]
        )

        cap = _query_cap(max_num_neighbors, image_pos.size(0))
        centre, image = torch_cluster.radius(
            image_pos, wrapped, r=cutoff, batch_x=image_batch, batch_y=batch,
            max_num_neighbors=cap,
        )
        # Per-edge tensors are the memory of a large cell (5e6 pairs at 1e5 atoms of
        # water): keep [E] indices until the end, build the [E, 3] shifts once.
        neighbour = image_atom[image]
        keep = (neighbour != centre) | (image_shift != 0).any(dim=1)[image]  # not self
        centre, image, neighbour = centre[keep], image[keep], neighbour[keep]
        del keep
        _check_cap(centre, num_atoms, max_num_neighbors)
        order = torch.argsort(centre * num_atoms + neighbour, stable=True)
        del neighbour
        centre, image = centre[order], image[order]
        del order
        neighbour = image_atom[image]
        # Shifts for the unwrapped positions: undo the wrap of both atoms.
        shift = image_shift[image]
        del image
        atom_offsets = offsets.long()
        shift += atom_offsets[centre]
        shift -= atom_offsets[neighbour]
        edge_index = torch.stack([neighbour, centre])
    return edge_index, shift


def _check_cells(cell: Tensor, periodic: Tensor) -> None:
    volumes = torch.linalg.det(cell).abs()
    lengths = cell.norm(dim=-1).prod(dim=-1).clamp_min(1e-300)
    singular = periodic & (volumes / lengths < 1e-8)
    if bool(singular.any()):
        graph = int(singular.nonzero()[0])
        raise ValueError(
            f"singular cell in graph {graph} (volume {float(volumes[graph]):.3g} Å^3): "
            "periodic systems need three linearly independent lattice vectors"
        )
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("cell contains NaN or inf")


def cell_volume(cell: Tensor) -> Tensor:
    r"""Volumes ``[num_graphs]`` of cells ``[num_graphs, 3, 3]``."""
    return torch.linalg.det(cell).abs()


__all__ = ["Graph", "radius_graph", "pair_vectors", "cell_volume"]
