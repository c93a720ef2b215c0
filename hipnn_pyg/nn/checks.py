r"""Input checks with messages that name the problem: of the model's tensors
(:func:`check_inputs`, :func:`species_index`, :func:`check_min_distance`) and, with
the same messages, of an ASE structure before MD, labelling or active learning
(:func:`check_atoms`)."""

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


@torch.compiler.disable  # value checks run eagerly, outside compiled graphs
def check_inputs(
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None,
    cell: Tensor | None,
    pbc: Tensor | None,
) -> None:
    r"""Raises :obj:`ValueError` for inputs of the wrong shape, type or value."""
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
    bad = ~torch.isfinite(pos).all(dim=1)
    if bool(bad.any()):
        atoms = bad.nonzero().view(-1)[:10].tolist()
        raise GeometryError(f"positions contain NaN or inf (atoms {atoms})")
    if batch is not None:
        if batch.shape != z.shape:
            raise ValueError(
                f"batch must have shape [num_atoms] = [{z.size(0)}], got {list(batch.shape)}"
            )
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch must be sorted (atoms of each graph contiguous)")
    if (cell is None) != (pbc is None):
        raise ValueError("cell and pbc must be given together")
    if cell is not None and pbc is not None:
        num_graphs = 1 if batch is None or batch.numel() == 0 else int(batch.max()) + 1
        if cell.dim() == 2:
            raise ValueError("cell must have shape [num_graphs, 3, 3]; add a batch dim")
        if cell.dim() != 3 or cell.shape[1:] != (3, 3) or cell.size(0) < num_graphs:
            raise ValueError(
                f"cell must have shape [num_graphs, 3, 3] = [{num_graphs}, 3, 3], "
                f"got {list(cell.shape)}"
            )
        if pbc.shape != (cell.size(0), 3):
            raise ValueError(
                f"pbc must have shape [num_graphs, 3] = [{cell.size(0)}, 3], "
                f"got {list(pbc.shape)}"
            )


@torch.compiler.disable
def species_lookup(species: list[int]) -> Tensor:
    r"""The table from atomic number to row of the one-hot species table (-1 for
    elements not in ``species``), which :func:`species_index` reads."""
    lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(species)] = torch.arange(len(species))
    return lookup


def species_index(z: Tensor, lookup: Tensor, species: list[int]) -> Tensor:
    r"""Maps atomic numbers to rows of the one-hot table; unknown elements raise."""
    valid = (z >= 0) & (z < lookup.numel())
    index = lookup[z.clamp(0, lookup.numel() - 1)]
    unknown = (index < 0) | ~valid
    if bool(unknown.any()):
        elements = sorted(set(z[unknown].tolist()))
        names = ", ".join(f"{_symbol(e)} (Z={e})" for e in elements)
        known = ", ".join(_symbol(e) for e in species)
        raise ValueError(
            f"element(s) {names} not among the species this model was built for: {known}"
        )
    return index


@torch.compiler.disable
def check_min_distance(
    distances: Tensor, edge_index: Tensor, min_distance: float,
    limit: str = "the model's lower limit",
) -> None:
    r"""Raises if two atoms are closer than ``min_distance`` (a broken geometry);
    ``limit`` names where the bound comes from in the message."""
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
