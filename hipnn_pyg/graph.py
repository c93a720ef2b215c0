r"""Neighbour lists for free molecules and periodic cells.

Free molecules go through :func:`torch_cluster.radius_graph`. Periodic systems are
wrapped into their cell along their periodic directions, replicated over the few cell
images that can lie within the cutoff, and searched with :func:`torch_cluster.radius`.
Any pbc pattern works (a slab, a wire, a bulk crystal, batches that mix them with free
molecules), with positions anywhere: the images needed are found from the periodic
directions only, and a non-periodic lattice vector may be zero (as in ASE). Every edge
carries the integer cell shift :math:`\mathbf{S}` of its source image, so that

.. math::
    \mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{S}_{ij} \, \mathbf{C}

is an exact, differentiable function of the positions and of the cell.

Conventions follow PyG (``flow="source_to_target"``): ``edge_index[0]`` is the
neighbour :math:`j` (source), ``edge_index[1]`` the centre :math:`i` (target).
ASE's ``neighbor_list("ijS")`` gives the same pairs as ``(edge_index[1], edge_index[0],
shifts)``.

Memory grows with the number of pairs, not with the number of atoms squared: without a
``max_num_neighbors`` the search asks torch-cluster for a per-atom cap estimated from
the density, and grows it while any atom reaches it (torch-cluster's CUDA search
allocates ``num_atoms × cap`` indices, so a cap of ``num_atoms`` would be ``N²``).

The search is where a model's forward still waits on the device (host
synchronisations), by its nature: the number of pairs decides every later size. It
reads whether any graph is periodic (when a cell is given), each search's largest
neighbour count (the cap check), and whether every pair found lies within the cutoff
(then keeps those that do); torch-cluster syncs inside its own search, and periodic
cells add the image bookkeeping (which images each graph needs, the cell checks). The
checks of :func:`_check_arguments` read the positions too; the model skips them
(``validate=False``), having checked its inputs already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from hipnn_pyg.errors import GeometryError

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
    validate: bool = True,
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
            (default: :obj:`None`, no cap; the search's own working cap adapts)
        validate (bool): Check shapes and finite positions first (:obj:`ValueError`,
            :class:`~hipnn_pyg.errors.GeometryError`); the model, which checked them
            already, skips it. (default: :obj:`True`)
    """
    if batch is None:
        batch = pos.new_zeros(pos.size(0), dtype=torch.long)
    if validate:
        _check_arguments(pos, batch, cell, pbc)
    periodic = pbc is not None and cell is not None and bool(pbc.any())
    if periodic:
        edge_index, shifts = _periodic_pairs(pos, cutoff, batch, cell, pbc, max_num_neighbors)
    else:

        def search(cap: int) -> tuple[Tensor, Tensor]:
            pairs = torch_cluster.radius_graph(
                pos.detach(), r=_search_radius(cutoff), batch=batch, loop=False,
                max_num_neighbors=cap, flow="source_to_target",
            )
            return pairs[1], pairs

        candidates = pos.size(0) - 1
        edge_index = _capped_search(search, pos.size(0), max_num_neighbors,
                                    _first_cap(candidates, None, cutoff), candidates)
        shifts = edge_index.new_zeros(edge_index.size(1), 3)
    vectors = pair_vectors(pos, edge_index, shifts, batch, cell if periodic else None)
    distances = vectors.norm(dim=-1)
    # Exactly the pairs closer than the cutoff (as ASE's neighbor_list keeps them), by
    # the distances the model sees; i -> j and j -> i have bitwise equal ones.
    inside = distances.detach() < cutoff
    if not bool(inside.all()):
        edge_index, shifts = edge_index[:, inside], shifts[inside]
        vectors, distances = vectors[inside], distances[inside]
    return Graph(edge_index, shifts, vectors, distances)


def _check_arguments(pos: Tensor, batch: Tensor, cell: Tensor | None,
                     pbc: Tensor | None) -> None:
    if pos.dim() != 2 or pos.size(1) != 3:
        raise ValueError(f"pos must have shape [num_atoms, 3], got {list(pos.shape)}")
    if batch.shape != pos.shape[:1]:
        raise ValueError(f"batch must have shape [num_atoms] = [{pos.size(0)}], got "
                         f"{list(batch.shape)}")
    if (cell is None) != (pbc is None):
        raise ValueError("cell and pbc must be given together")
    if cell is not None and pbc is not None and (
            cell.dim() != 3 or cell.shape[1:] != (3, 3) or pbc.shape != (cell.size(0), 3)):
        raise ValueError(f"cell must have shape [num_graphs, 3, 3] and pbc [num_graphs, 3], "
                         f"got {list(cell.shape)} and {list(pbc.shape)}")
    if pos.numel() and not bool(torch.isfinite(pos).all()):
        atoms = (~torch.isfinite(pos).all(dim=1)).nonzero().view(-1)[:10].tolist()
        raise GeometryError(f"positions contain NaN or inf (atoms {atoms})")


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


#: The working cap's first value for systems without a density estimate (free and
#: partially periodic ones): about twice the neighbours of liquid water at 5.5 Å.
FIRST_CAP = 128


def _first_cap(num_candidates: int, density: float | None, cutoff: float) -> int:
    r"""The first working cap: 1.5 times the neighbours expected at ``density``
    (atoms/Å³) within the cutoff, or :data:`FIRST_CAP`; never above the candidates."""
    guess = FIRST_CAP if density is None else int(1.5 * density * 4.19 * cutoff**3) + 16
    return max(1, min(num_candidates, guess))


def _capped_search(
    search: Callable[[int], tuple[Tensor, Tensor]],
    num_centres: int,
    max_num_neighbors: int | None,
    first_cap: int,
    num_candidates: int,
    self_pairs: int = 0,
) -> Tensor:
    r"""Runs ``search(cap)`` (returning the centres of its pairs and its result) with
    a per-centre cap that never drops a pair: one above the user's cap (plus the
    ``self_pairs`` a search finds of each centre with itself), which raises when
    reached; without one, a working cap grown fourfold while any centre reaches it.
    torch-cluster keeps at most ``cap`` neighbours of each centre (and on CUDA
    allocates ``num_centres × cap`` indices), so a centre *at* the cap may have lost
    some, unless it has all ``num_candidates`` points as neighbours."""
    cap = first_cap if max_num_neighbors is None else max_num_neighbors + 1 + self_pairs
    while True:
        centres, result = search(cap)
        degree = torch.bincount(centres, minlength=num_centres) if centres.numel() else None
        most = 0 if degree is None else int(degree.max())
        if most < cap or (max_num_neighbors is None and cap >= num_candidates):
            return result
        if max_num_neighbors is not None:
            atom = int(degree.argmax())
            raise RuntimeError(
                f"atom {atom} has more than max_num_neighbors={max_num_neighbors} neighbours "
                "within the cutoff; raise max_num_neighbors (no pair is dropped silently)"
            )
        cap *= 4


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
        if not bool(torch.isfinite(cell[pbc]).all()):
            raise ValueError("cell contains NaN or inf")
        # Non-periodic lattice vectors are replaced by unit vectors orthogonal to the
        # periodic ones (a unit cell for free graphs): they are never shifted along, so
        # any independent completion gives the same pairs, and a zero one is allowed.
        safe_cell = complete_cells(cell, pbc)
        _check_cells(safe_cell, pbc.any(dim=1))

        # Wrap periodic coordinates into [0, 1) and remember the integer offsets.
        frac = torch.linalg.solve(safe_cell[batch].transpose(1, 2), pos64.unsqueeze(-1))
        frac = frac.squeeze(-1)
        offsets = torch.where(pbc[batch], torch.floor(frac), torch.zeros_like(frac))
        wrapped = pos64 - torch.einsum("nk,nkd->nd", offsets, safe_cell[batch])

        # Images needed per direction: cutoff over the spacing of lattice planes.
        plane_spacing = 1.0 / torch.linalg.inv(safe_cell).norm(dim=1)
        reach = torch.ceil(cutoff / plane_spacing).long() * pbc.long()
        _check_reach(reach, plane_spacing, cutoff)
        atoms = _Atoms(batch, frac - offsets, wrapped, safe_cell, plane_spacing, pbc, reach)
        # Graphs that need the same images are searched together: a small cell (many
        # images) in a batch does not replicate the atoms of the other graphs.
        centres, neighbours, shifts = [], [], []
        for group in torch.unique(reach[batch], dim=0).tolist():
            members = (reach[batch] == torch.tensor(group, device=device)).all(dim=1)
            index = members.nonzero().view(-1)
            centre, neighbour, shift = _image_pairs(atoms, index, group, cutoff,
                                                    max_num_neighbors)
            centres.append(index[centre])
            neighbours.append(index[neighbour])
            shifts.append(shift)
        centre, neighbour, shift = (torch.cat(parts) for parts in (centres, neighbours, shifts))
        del centres, neighbours, shifts
        order = torch.argsort(centre * num_atoms + neighbour, stable=True)
        centre, neighbour, shift = centre[order], neighbour[order], shift[order]
        del order
        # Shifts for the unwrapped positions: undo the wrap of both atoms.
        atom_offsets = offsets.long()
        shift += atom_offsets[centre]
        shift -= atom_offsets[neighbour]
        edge_index = torch.stack([neighbour, centre])
    return edge_index, shift


class _Atoms(NamedTuple):
    r"""Per-atom (and per-graph) inputs of the image search."""

    batch: Tensor  # graph of each atom
    frac: Tensor  # fractional coordinates, in [0, 1) along periodic directions
    wrapped: Tensor  # positions wrapped into the cell (float64)
    cell: Tensor  # completed cells [G, 3, 3]
    plane_spacing: Tensor  # [G, 3]
    pbc: Tensor  # [G, 3]
    reach: Tensor  # images needed per direction [G, 3]


#: Most cell images per atom the search builds; a cell this thin for its cutoff is an
#: error (a nearly singular cell), not a silent allocation of terabytes.
MAX_IMAGES = 100_000


def _check_reach(reach: Tensor, plane_spacing: Tensor, cutoff: float) -> None:
    images = (2 * reach + 1).prod(dim=1)
    if bool((images > MAX_IMAGES).any()):
        graph = int(images.argmax())
        raise ValueError(
            f"the cell of graph {graph} is too thin for cutoff {cutoff} Å: its lattice "
            f"planes are {plane_spacing[graph].min().item():.3g} Å apart, so "
            f"{int(images[graph])} images would be needed (most {MAX_IMAGES}); is the cell "
            "nearly singular?"
        )


def _image_pairs(atoms: _Atoms, index: Tensor, reach: list[int], cutoff: float,
                 max_num_neighbors: int | None) -> tuple[Tensor, Tensor, Tensor]:
    r"""Pairs among the atoms ``index`` (whose graphs all need ``reach`` images per
    direction), in that subset's numbering: ``(centre, neighbour, image shift)``."""
    device = index.device
    num_atoms = index.numel()
    batch, frac, wrapped = atoms.batch[index], atoms.frac[index], atoms.wrapped[index]
    shifts = torch.cartesian_prod(
        *[torch.arange(-m, m + 1, device=device) for m in reach]
    ).view(-1, 3)
    num_shifts = shifts.size(0)
    # Image k of atom a lies at k = a * num_shifts + s; keeping atom-major order
    # keeps the image batch vector sorted, as torch_cluster requires.
    image_shift = shifts.repeat(num_atoms, 1)
    image_atom = torch.arange(num_atoms, device=device).repeat_interleave(num_shifts)
    image_batch = batch[image_atom]
    # An image lying a fractional gap g_d outside the home cell along a periodic
    # direction d is at least g_d * plane_spacing_d from every atom of the graph
    # (all of which lie in [0, 1) along d): only images within the cutoff of the
    # cell take part (a few percent of the atoms in a large cell, not 26 copies).
    # Along non-periodic directions atoms may lie anywhere: no gap there.
    image_frac = frac[image_atom] + image_shift
    gap = torch.clamp(torch.maximum(-image_frac, image_frac - 1.0), min=0.0)
    gap = gap * atoms.pbc[image_batch]
    allowed = (gap * atoms.plane_spacing[image_batch] <= cutoff).all(dim=1)
    image_shift, image_atom, image_batch = (
        image_shift[allowed], image_atom[allowed], image_batch[allowed]
    )
    image_pos = wrapped[image_atom] + torch.einsum(
        "nk,nkd->nd", image_shift.to(wrapped.dtype), atoms.cell[image_batch]
    )

    def search(cap: int) -> tuple[Tensor, Tensor]:
        centre, image = torch_cluster.radius(
            image_pos, wrapped, r=_search_radius(cutoff), batch_x=image_batch,
            batch_y=batch, max_num_neighbors=cap,
        )
        return centre, torch.stack([centre, image])

    # The search finds each atom itself (its zero-shift image): one slot more.
    density = _bulk_density(batch, atoms.cell, atoms.pbc)
    centre, image = _capped_search(
        search, num_atoms, max_num_neighbors,
        _first_cap(image_pos.size(0), density, cutoff), image_pos.size(0), self_pairs=1,
    )
    # Per-edge tensors are the memory of a large cell (5e6 pairs at 1e5 atoms of
    # water): keep [E] indices until the end, build the [E, 3] shifts once.
    neighbour = image_atom[image]
    keep = (neighbour != centre) | (image_shift != 0).any(dim=1)[image]  # not self
    centre, image, neighbour = centre[keep], image[keep], neighbour[keep]
    return centre, neighbour, image_shift[image]


def _search_radius(cutoff: float) -> float:
    # A hair above the cutoff: the search sees wrapped positions, the pair list unwrapped
    # ones, which differ by rounding; radius_graph keeps exactly the pairs below it.
    return cutoff * (1 + 1e-9) + 1e-9


def complete_cells(cell: Tensor, pbc: Tensor) -> Tensor:
    r"""Cells ``[num_graphs, 3, 3]`` whose non-periodic rows are replaced by unit vectors
    orthogonal to the periodic rows (and to each other): the normal of a slab's two
    lattice vectors, two normals of a wire's one, the unit cell of a free graph."""
    cell = torch.where(pbc[..., None], cell, torch.zeros_like(cell))
    count = pbc.sum(dim=1)
    # Two periodic rows: row k's normal is cross(row k+1, row k+2).
    normals = torch.linalg.cross(cell.roll(-1, dims=1), cell.roll(-2, dims=1))
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    out = torch.where(((count == 2)[:, None] & ~pbc)[..., None], normals, cell)
    # One periodic row p: rows p+1 and p+2 span the plane orthogonal to it.
    axis = cell.sum(dim=1)  # the periodic row
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    least = axis.abs().argmin(dim=-1)  # the coordinate axis least parallel to it
    first = torch.linalg.cross(axis, torch.eye(3, dtype=cell.dtype, device=cell.device)[least])
    first = first / first.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    second = torch.linalg.cross(axis, first)
    p = pbc.long().argmax(dim=1)
    wire = torch.zeros_like(cell)
    rows = torch.arange(cell.size(0), device=cell.device)
    wire[rows, (p + 1) % 3] = first
    wire[rows, (p + 2) % 3] = second
    out = torch.where(((count == 1)[:, None] & ~pbc)[..., None], wire, out)
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    return torch.where((count == 0)[:, None, None], eye, out)


def _bulk_density(batch: Tensor, cell: Tensor, pbc: Tensor) -> float | None:
    r"""The highest atom density (atoms/Å³) of the fully periodic graphs, or :obj:`None`
    when there are none (slabs and wires have vacuum: their cell says nothing)."""
    bulk = pbc.all(dim=1)
    if not bool(bulk.any()):
        return None
    counts = torch.bincount(batch, minlength=cell.size(0))[: cell.size(0)]
    density = counts / torch.linalg.det(cell).abs().clamp_min(1e-12)
    return float(density[bulk].max())


def _check_cells(cell: Tensor, periodic: Tensor) -> None:
    volumes = torch.linalg.det(cell).abs()
    lengths = cell.norm(dim=-1).prod(dim=-1).clamp_min(1e-300)
    singular = periodic & ~(volumes / lengths >= 1e-8)  # NaN counts as singular
    if bool(singular.any()):
        graph = int(singular.nonzero()[0])
        raise ValueError(
            f"singular cell in graph {graph}: its periodic lattice vectors are zero or "
            "linearly dependent (a periodic direction needs a lattice vector of its own)"
        )


def cell_volume(cell: Tensor) -> Tensor:
    r"""Volumes ``[num_graphs]`` of cells ``[num_graphs, 3, 3]``."""
    return torch.linalg.det(cell).abs()


__all__ = ["Graph", "radius_graph", "pair_vectors", "cell_volume", "complete_cells"]
