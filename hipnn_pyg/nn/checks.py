r"""Input checks with messages that name the problem: of the model's tensors
(:func:`check_inputs`, :func:`species_index`, :func:`check_min_distance`) and, with
the same messages, of an ASE structure before MD, labelling or active learning
(:func:`check_atoms`).

Shapes and types are host-side facts (:func:`check_shapes`, free). Values live on the
device: :func:`check_values` computes every flag there and reads them back in one
synchronisation, before the pair search (which must not see bad inputs); the closest
pair (:func:`check_min_distance`) is a second one, after it. A model forward with
``validate=False`` skips both (:meth:`~hipnn_pyg.nn.HIPNNRepresentation.forward`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from ase.data import chemical_symbols
from torch import Tensor, nn

from hipnn_pyg.errors import GeometryError

if TYPE_CHECKING:
    from ase import Atoms

#: Closest approach (Å) accepted by :func:`check_atoms` without a model: HIPNN's default.
DEFAULT_MIN_DISTANCE = 0.3


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def check_shapes(
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None,
    cell: Tensor | None,
    pbc: Tensor | None,
) -> None:
    r"""Raises :obj:`ValueError` for inputs of the wrong shape or type: host-side facts
    only, no value is read (nothing to skip; :func:`check_values` reads the values)."""
    if z.dim() != 1 or z.dtype.is_floating_point or z.dtype == torch.bool:
        raise ValueError(
            f"z must hold integer atomic numbers of shape [num_atoms], got {z.dtype} "
            f"of shape {list(z.shape)}"
        )
    if pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) != z.size(0):
        raise ValueError(
            f"pos must have shape [num_atoms, 3] = [{z.size(0)}, 3], got {list(pos.shape)}"
        )
    if not pos.dtype.is_floating_point:
        raise ValueError(f"pos must be a floating-point tensor (Å), got {pos.dtype}")
    if batch is not None and batch.shape != z.shape:
        raise ValueError(
            f"batch must have shape [num_atoms] = [{z.size(0)}], got {list(batch.shape)}"
        )
    if (cell is None) != (pbc is None):
        raise ValueError("cell and pbc must be given together")
    if cell is not None and pbc is not None:
        if cell.dim() == 2:
            raise ValueError("cell must have shape [num_graphs, 3, 3]; add a batch dim")
        if cell.dim() != 3 or cell.shape[1:] != (3, 3):
            _wrong_cell(cell, _graph_count(batch))  # (reads the batch: an error already)
        if pbc.shape != (cell.size(0), 3):
            raise ValueError(
                f"pbc must have shape [num_graphs, 3] = [{cell.size(0)}, 3], "
                f"got {list(pbc.shape)}"
            )


def _graph_count(batch: Tensor | None) -> int:
    # Graphs that batch names (one read-back), for messages.
    return 1 if batch is None or batch.numel() == 0 else int(batch.max()) + 1


def _wrong_cell(cell: Tensor, num_graphs: int) -> None:
    raise ValueError(
        f"cell must have shape [num_graphs, 3, 3] = [{num_graphs}, 3, 3], "
        f"got {list(cell.shape)}"
    )


@torch.compiler.disable  # value checks run eagerly, outside compiled graphs
def check_values(
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None,
    cell: Tensor | None,
    lookup: Tensor | None = None,
    species: list[int] | None = None,
    rows: Tensor | None = None,
) -> int:
    r"""Raises for inputs of a wrong value: positions that are not finite, an unsorted
    ``batch``, fewer cells than graphs and, given ``lookup`` and ``species``, elements
    the model does not know (:func:`species_index`'s message; ``rows``, its unchecked
    result, saves looking them up again). Every flag is computed on the device and read
    back to the host in one go (one synchronisation); the messages read more, only once
    a check failed. Takes inputs that passed :func:`check_shapes`.

    Returns:
        int: The number of graphs ``batch`` names, its largest index + 1 (1 without
        atoms or without ``batch``), from that same read-back.
    """
    bad = ~torch.isfinite(pos).all(dim=1)
    no = torch.zeros((), dtype=torch.long, device=pos.device)
    unsorted = last = no
    if batch is not None and batch.numel():
        last = batch.max()
        if batch.numel() > 1:
            unsorted = (batch[1:] < batch[:-1]).any()
    if lookup is not None and rows is None:
        rows = _rows(z, lookup)
    unknown = no if rows is None else (rows < 0).any()
    flags = [bad.any(), unsorted, unknown, last]
    any_bad, any_unsorted, any_unknown, last_graph = torch.stack(
        [flag.to(device=pos.device, dtype=torch.long) for flag in flags]).tolist()
    if any_bad:
        atoms = bad.nonzero().view(-1)[:10].tolist()
        raise GeometryError(f"positions contain NaN or inf (atoms {atoms})")
    if any_unsorted:
        raise ValueError("batch must be sorted (atoms of each graph contiguous)")
    num_graphs = last_graph + 1 if batch is not None and batch.numel() else 1
    if cell is not None and cell.size(0) < num_graphs:
        _wrong_cell(cell, num_graphs)
    if any_unknown:
        assert lookup is not None and species is not None, "species names the known elements"
        _unknown_species(z, lookup, species)
    return num_graphs


def check_inputs(
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None,
    cell: Tensor | None,
    pbc: Tensor | None,
    lookup: Tensor | None = None,
    species: list[int] | None = None,
) -> int:
    r"""Raises :obj:`ValueError` for inputs of the wrong shape, type or value:
    :func:`check_shapes`, then :func:`check_values` (one read-back; it also checks the
    elements when ``lookup`` and ``species`` are given, as :func:`species_index` does).

    Returns:
        int: The number of graphs ``batch`` names (see :func:`check_values`).
    """
    check_shapes(z, pos, batch, cell, pbc)
    return check_values(z, pos, batch, cell, lookup, species)


@torch.compiler.disable
def species_lookup(species: list[int]) -> Tensor:
    r"""The table from atomic number to row of the one-hot species table (-1 for
    elements not in ``species``), which :func:`species_index` reads."""
    lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(species)] = torch.arange(len(species))
    return lookup


def _rows(z: Tensor, lookup: Tensor) -> Tensor:
    # The one-hot row of each atom, -1 for an element not in the table (on the device).
    rows = lookup[z.clamp(0, lookup.numel() - 1)]
    return rows.masked_fill((z < 0) | (z >= lookup.numel()), -1)


def _unknown(z: Tensor, lookup: Tensor) -> Tensor:
    return _rows(z, lookup) < 0


def _unknown_species(z: Tensor, lookup: Tensor, species: list[int]) -> None:
    elements = sorted(set(z[_unknown(z, lookup)].tolist()))
    names = ", ".join(f"{_symbol(e)} (Z={e})" for e in elements)
    known = ", ".join(_symbol(e) for e in species)
    raise ValueError(
        f"element(s) {names} not among the species this model was built for: {known}"
    )


def species_index(z: Tensor, lookup: Tensor, species: list[int], validate: bool = True
                  ) -> Tensor:
    r"""Maps atomic numbers to rows of the one-hot table; unknown elements raise.

    Args:
        z (torch.Tensor): Atomic numbers ``[num_atoms]``.
        lookup (torch.Tensor): :func:`species_lookup` of ``species``.
        species (list[int]): The known atomic numbers.
        validate (bool): Check for unknown elements (one host synchronisation); callers
            that checked them already (:func:`check_values`) skip it. Unchecked, an
            unknown element maps to -1, which the one-hot encoding refuses (on a GPU,
            by a device-side assertion). (default: :obj:`True`)
    """
    index = _rows(z, lookup)
    if validate and bool((index < 0).any()):
        _unknown_species(z, lookup, species)
    return index


@torch.compiler.disable
def check_min_distance(
    distances: Tensor, edge_index: Tensor, min_distance: float,
    limit: str = "the model's lower limit",
) -> None:
    r"""Raises if two atoms are closer than ``min_distance`` (a broken geometry);
    ``limit`` names where the bound comes from in the message. One host
    synchronisation (the closest distance), after the pair search that it needs."""
    if distances.numel() == 0:
        return
    shortest = distances.detach().min()
    if float(shortest) < min_distance:
        edge = int(distances.detach().argmin())
        i, j = sorted(edge_index[:, edge].tolist())
        raise GeometryError(
            f"atoms {i} and {j} are {float(shortest):.4f} Å apart, closer than "
            f"{limit} min_distance={min_distance} Å (overlapping atoms)"
        )


def model_limits(model: nn.Module) -> tuple[list[int] | None, float | None]:
    r"""The species and ``min_distance`` of a potential's representation (or of a
    representation); :obj:`None` where the model has none."""
    representation = getattr(model, "representation", model)
    species = getattr(representation, "species", None)
    min_distance = getattr(representation, "min_distance", None)
    return (None if species is None else [int(z) for z in species],
            None if min_distance is None else float(min_distance))


def check_atoms(
    atoms: Atoms,
    models: nn.Module | list[nn.Module] | tuple[nn.Module, ...] = (),
    min_distance: float | None = None,
    name: str = "structure",
) -> None:
    r"""Checks an ASE structure once, before MD, labelling or active learning, with the
    messages the model itself gives: finite positions, a sane cell, known elements and
    no overlapping atoms. An atom without neighbours is fine.

    Args:
        atoms (Atoms): The structure.
        models (nn.Module or list, optional): Models that will see the structure; each
            one's ``species`` and ``min_distance`` are checked. (default: none)
        min_distance (float, optional): Closest approach allowed, in Å.
            (default: :obj:`None`, the largest of the models' ``min_distance``, else
            :data:`DEFAULT_MIN_DISTANCE`)
        name (str): How the message names the structure, e.g. ``"frame 3 of in.xyz"``.
            (default: :obj:`"structure"`)

    Raises:
        ValueError: ``"<name>: <problem>"``, e.g. ``"start.xyz: positions contain NaN or
            inf (atoms [3])"`` (a :class:`GeometryError` for positions and overlaps).
    """
    from hipnn_pyg.graph import radius_graph  # (torch_cluster, only when used)

    models = [models] if isinstance(models, nn.Module) else list(models)
    limits = [model_limits(model) for model in models]
    if min_distance is None:
        given = [limit for _, limit in limits if limit is not None]
        min_distance = max(given) if given else DEFAULT_MIN_DISTANCE
    try:
        if len(atoms) == 0:
            raise ValueError("the structure has no atoms")
        z = torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long)
        pos = torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64))
        pbc = torch.as_tensor(np.asarray(atoms.pbc, dtype=bool)).view(1, 3)
        cell = torch.as_tensor(np.asarray(atoms.cell, dtype=np.float64)).view(1, 3, 3)
        check_inputs(z, pos, None, cell, pbc)
        for species, _ in limits:
            if species is not None:
                species_index(z, species_lookup(species), species)
        if min_distance > 0:
            graph = radius_graph(pos, min_distance, None, cell, pbc)  # also checks the cell
            limit = "the model's lower limit" if models else "the lower limit"
            check_min_distance(graph.distances, graph.edge_index, min_distance, limit)
    except ValueError as error:  # the same type (GeometryError or ValueError), named
        raise type(error)(f"{name}: {error}") from None
