r"""One entry point from a PyG batch to every predicted property."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hipnn_pyg.nn.forces import energy_forces_stress
from hipnn_pyg.nn.potential import Potential


def predict(
    model: Potential,
    data: Any,
    compute_forces: bool = True,
    compute_stress: bool = False,
    create_graph: bool = False,
    validate: bool = True,
) -> dict[str, Tensor]:
    r"""Runs ``model`` on a PyG :class:`~torch_geometric.data.Batch` (or ``Data``) with
    fields ``z``, ``pos`` and optionally ``batch``, ``cell``, ``pbc``.

    Returns every output of the potential's heads (:meth:`Potential.outputs`):
    ``energy`` ``[num_graphs]``, ``atom_energy``, ``layer_energy`` and, with a
    :class:`~hipnn_pyg.nn.ChargeHead`, ``charges`` ``[num_atoms]`` (e), ``dipole``
    ``[num_graphs, 3]`` (e·Å), ``dipole_magnitude`` ``[num_graphs]`` and ``quadrupole``
    ``[num_graphs, 3, 3]`` (e·Å²), for which the total charge of each structure is read
    from ``data.charge`` (0 where absent); and, as asked, ``forces`` ``[num_atoms, 3]``
    and ``stress`` ``[num_graphs, 3, 3]``. Units follow the data: eV, Å.

    ``validate=False`` skips the checks of the inputs' values (see
    :meth:`~hipnn_pyg.nn.Potential.forward`): for a training loop on checked data, it
    leaves no read-back to the host but the pair search's own and, for batches with a
    ``cell``, whether any structure is periodic.

    Raises:
        ValueError: ``compute_stress`` for a batch without a periodic structure.
    """
    batch = getattr(data, "batch", None)
    cell = getattr(data, "cell", None)
    pbc = getattr(data, "pbc", None)
    num_graphs = getattr(data, "num_graphs", None)  # counts trailing empty graphs too
    if cell is not None:
        cell = cell.view(-1, 3, 3).to(data.pos.dtype)
        pbc = pbc.view(-1, 3).bool() if pbc is not None else None
        if pbc is None or not bool(pbc.any()):
            cell, pbc = None, None  # molecules: no images, no stress
    if compute_stress and cell is None:
        raise ValueError(
            "stress was asked for (a 'stress' loss weight or target) but no structure in "
            "the batch is periodic (no cell with pbc): stress exists only for periodic "
            "cells. Drop the stress loss for molecular data, or give the structures "
            "their cell and pbc"
        )
    return energy_forces_stress(
        model,
        data.z,
        data.pos,
        batch,
        cell,
        pbc,
        compute_forces=compute_forces,
        compute_stress=compute_stress,
        create_graph=create_graph,
        validate=validate,
        total_charge=getattr(data, "charge", None),
        num_graphs=num_graphs,
        level=getattr(data, "level", None) if getattr(model, "levels", None) else None,
    )
