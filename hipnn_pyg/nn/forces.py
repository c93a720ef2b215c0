r"""Forces and stress of a potential, by autograd, in one place."""

from __future__ import annotations

import torch
from torch import Tensor

from hipnn_pyg.graph import cell_volume
from hipnn_pyg.nn.potential import Potential


def energy_forces_stress(
    model: Potential,
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    compute_forces: bool = True,
    compute_stress: bool = False,
    create_graph: bool = False,
    total_charge: Tensor | None = None,
    num_graphs: int | None = None,
    level: Tensor | None = None,
    validate: bool = True,
) -> dict[str, Tensor]:
    r"""Every output of ``model`` plus forces :math:`-\partial E/\partial x` and stress
    :math:`V^{-1}\,\partial E/\partial \varepsilon` of its ``energy``, by autograd.

    The stress comes from a symmetric strain :math:`\varepsilon` applied to both
    positions and cell, so it is the exact derivative of the energy, in eV/Å³, with
    ASE's sign convention.

    Args:
        model (Potential): The potential (:class:`~hipnn_pyg.HIPNN` or any
            :class:`~hipnn_pyg.nn.Potential`).
        z, pos, batch, cell, pbc, total_charge, num_graphs, level: As in
            :meth:`Potential.outputs` (each structure's forces are those of the energy
            of its own level).
        compute_forces (bool): Also return ``forces``. (default: :obj:`True`)
        compute_stress (bool): Also return ``stress`` ``[num_graphs, 3, 3]``; needs a
            periodic ``cell``. (default: :obj:`False`)
        create_graph (bool): Keep the graph of the derivatives, for training on
            forces. (default: :obj:`False`)
        validate (bool): Check the inputs' values (see
            :meth:`~hipnn_pyg.nn.Potential.forward`) and that periodic cells have a
            volume for the stress; :obj:`False` skips them, so that nothing is read back
            to the host outside the pair search (give ``num_graphs`` too).
            (default: :obj:`True`)

    Returns:
        dict with the model's outputs (``energy``, ``atom_energy``, ``layer_energy``,
        charges... as its heads give) and, as asked, ``forces`` and ``stress``.
    """
    if compute_stress and cell is None:
        raise ValueError("stress needs a periodic cell: pass cell and pbc")
    with torch.enable_grad():
        if compute_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        strain = None
        if compute_stress:
            assert cell is not None
            if batch is None:
                batch = torch.zeros_like(z)
            strain = torch.zeros(cell.size(0), 3, 3, dtype=pos.dtype, device=pos.device)
            strain.requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            pos = pos + torch.einsum("nd,nde->ne", pos, symmetric[batch])
            cell = cell + torch.bmm(cell, symmetric)
        extra: dict[str, object] = {} if level is None else {"level": level}
        if not validate:  # only when asked: other potentials' outputs may not take it
            extra["validate"] = False
        result = model.outputs(z, pos, batch, cell, pbc, total_charge, num_graphs, **extra)
        inputs = ([pos] if compute_forces else []) + ([strain] if strain is not None else [])
        if inputs:
            grads = torch.autograd.grad(
                result["energy"].sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            grads = [
                torch.zeros_like(t) if g is None else g
                for g, t in zip(grads, inputs, strict=True)
            ]
            if compute_forces:
                result["forces"] = -grads[0]
            if strain is not None:
                assert cell is not None
                result["stress"] = _stress(grads[-1], cell.detach(), pbc, validate)
    return result


def _stress(strain_gradient: Tensor, cell: Tensor, pbc: Tensor | None,
            validate: bool = True) -> Tensor:
    r"""``∂E/∂ε / V`` for graphs periodic in some direction (their cell's volume, as ASE
    does for slabs and wires); zero for free graphs, whatever cell they carry: a free
    molecule has no stress (its ``∂E/∂ε`` is its virial, not a stress)."""
    periodic = (torch.zeros(cell.size(0), dtype=torch.bool, device=cell.device)
                if pbc is None else pbc.to(torch.bool).any(dim=1))
    volume = cell_volume(cell)
    # As the pair search judges a cell singular: its volume against its edge lengths.
    lengths = cell.norm(dim=-1).prod(dim=-1)
    no_volume = periodic & ~(volume > 1e-8 * lengths)
    if validate and bool(no_volume.any()):  # (one host synchronisation)
        graph = int(no_volume.nonzero()[0])
        raise ValueError(f"graph {graph} is periodic but its cell has no volume: stress "
                         "needs three lattice vectors (give the vacuum direction one)")
    scale = torch.where(periodic, 1.0 / volume.clamp_min(1e-12), torch.zeros_like(volume))
    return strain_gradient * scale[:, None, None].to(strain_gradient.dtype)
