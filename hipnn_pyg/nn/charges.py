r"""Charges that sum to each structure's total charge, dipoles and quadrupoles.

The physics of :class:`~hipnn_pyg.nn.ChargeHead`, the charge model of Sifain et al.
(`"Discovering a transferable charge assignment model using machine learning"
<https://doi.org/10.1021/acs.jpclett.8b01939>`_): a hierarchical linear readout of
HIP-NN features gives raw charges
:math:`\tilde{q}_i`, which are shifted uniformly so that every structure carries its
total charge :math:`Q` exactly,

.. math::
    q_i = \tilde{q}_i - \frac{1}{N_g} \Big( \sum_{j \in g} \tilde{q}_j - Q_g \Big).

Multipoles follow from these charges. Conventions (e, Å):

* dipole :math:`\mu = \sum_i q_i (r_i - r_0)` in e·Å,
* traceless quadrupole (Buckingham)
  :math:`\Theta = \tfrac{1}{2} \sum_i q_i \big(3 (r_i - r_0)(r_i - r_0)^T
  - |r_i - r_0|^2 I\big)` in e·Å²,

with :math:`r_0` the centre of mass (default) or of geometry of each structure. For a
neutral structure the dipole does not depend on :math:`r_0`; for a charged one the
origin makes it translation invariant (it moves with the molecule). Positions of
periodic structures are used as given (unwrapped), as a trajectory stores them.
"""

from __future__ import annotations

import torch
from ase.data import atomic_masses
from torch import Tensor
from torch_geometric.utils import scatter

#: Reference points for the multipoles of charged structures.
ORIGINS = ("center_of_mass", "center_of_geometry")


def neutralize(
    raw_charges: Tensor, batch: Tensor, num_graphs: int, total_charge: Tensor | None = None
) -> Tensor:
    r"""Shifts charges uniformly within each structure so that they sum to its total
    charge: :math:`q_i = \tilde{q}_i - (\sum_{j\in g}\tilde{q}_j - Q_g) / N_g`.

    Args:
        raw_charges (torch.Tensor): Raw charges ``[num_atoms]``.
        batch (torch.Tensor): Structure index of each atom ``[num_atoms]``.
        num_graphs (int): Number of structures.
        total_charge (torch.Tensor, optional): Total charge per structure
            ``[num_graphs]`` in e. (default: :obj:`None`, neutral)
    """
    excess = scatter(raw_charges, batch, dim=0, dim_size=num_graphs, reduce="sum")
    if total_charge is not None:
        total_charge = total_charge.to(raw_charges.dtype).reshape(-1)
        if total_charge.numel() != num_graphs:
            raise ValueError(
                f"need one total charge per structure ({num_graphs}), "
                f"got {total_charge.numel()}"
            )
        excess = excess - total_charge
    counts = scatter(torch.ones_like(raw_charges), batch, dim=0, dim_size=num_graphs)
    return raw_charges - (excess / counts.clamp_min(1))[batch]


def multipole_origin(
    z: Tensor, pos: Tensor, batch: Tensor, num_graphs: int, origin: str = "center_of_mass"
) -> Tensor:
    r"""Reference point of each structure ``[num_graphs, 3]``: its centre of mass
    (standard atomic masses) or of geometry (the mean position)."""
    if origin == "center_of_mass":
        masses = torch.as_tensor(atomic_masses, dtype=pos.dtype, device=pos.device)[z]
    elif origin == "center_of_geometry":
        masses = torch.ones_like(pos[:, 0])
    else:
        raise ValueError(f"origin must be one of {ORIGINS}, got '{origin}'")
    weighted = scatter(masses[:, None] * pos, batch, dim=0, dim_size=num_graphs)
    total = scatter(masses, batch, dim=0, dim_size=num_graphs).clamp_min(1e-12)
    return weighted / total[:, None]


def dipole_moment(charges: Tensor, pos: Tensor, batch: Tensor, num_graphs: int,
                  origin: Tensor | None = None) -> Tensor:
    r"""Dipole :math:`\sum_i q_i (r_i - r_0)` per structure ``[num_graphs, 3]``, e·Å."""
    rel = pos if origin is None else pos - origin[batch]
    return scatter(charges[:, None] * rel, batch, dim=0, dim_size=num_graphs)


def quadrupole_moment(charges: Tensor, pos: Tensor, batch: Tensor, num_graphs: int,
                      origin: Tensor | None = None) -> Tensor:
    r"""Traceless quadrupole :math:`\frac{1}{2}\sum_i q_i (3 r r^T - r^2 I)` per structure
    ``[num_graphs, 3, 3]``, e·Å², with :math:`r = r_i - r_0`."""
    rel = pos if origin is None else pos - origin[batch]
    outer = 3.0 * rel[:, :, None] * rel[:, None, :]
    eye = torch.eye(3, dtype=pos.dtype, device=pos.device)
    outer = outer - rel.pow(2).sum(-1)[:, None, None] * eye
    return 0.5 * scatter(charges[:, None, None] * outer, batch, dim=0, dim_size=num_graphs)


def safe_norm(vector: Tensor) -> Tensor:
    r"""Euclidean norm over the last axis whose gradient is 0, not NaN, at the origin
    (symmetric molecules have exactly zero dipoles)."""
    squared = vector.pow(2).sum(-1)
    nonzero = squared > 0
    return torch.where(nonzero, squared, torch.ones_like(squared)).sqrt() * nonzero
