r"""Atomic charges, dipoles and quadrupoles from HIP-NN features.

The charge model of Sifain et al. (`"Discovering a transferable charge assignment
model using machine learning" <https://doi.org/10.1021/acs.jpclett.8b01939>`_):
a hierarchical linear readout of HIP-NN features gives raw charges
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

from typing import Any

import torch
from ase.data import atomic_masses
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hipnn_pyg.io import build_model
from hipnn_pyg.nn.heads import HierarchicalReadout
from hipnn_pyg.nn.model import HIPNN, HIPNNOutput

#: Reference points for the multipoles of charged structures.
ORIGINS = ("center_of_mass", "center_of_geometry")


class HierarchicalCharges(HierarchicalReadout):
    r"""Raw charges :math:`\tilde{q}_i = \sum_\ell w^\ell \cdot z_i^\ell`, the same
    hierarchical readout as :class:`~hipnn_pyg.nn.HierarchicalEnergy`.

    The layer-0 readout of the one-hot species vector is a per-species charge offset
    (an electronegativity), starting at zero (neutral atoms); higher layers add the
    environment dependence.

    Args:
        channels (list[int]): Feature width of each layer, layer 0 first.
    """


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


def _module_spec(model: nn.Module) -> dict[str, Any]:
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "hyperparameters": model.hyperparameters()}


class HIPNNPotential(nn.Module):
    r"""A HIP-NN energy model with a hierarchical charge head (Sifain et al. 2018):
    energies, forces and stress as :class:`~hipnn_pyg.HIPNN`, plus atomic charges that
    sum exactly to each structure's total charge, dipoles and traceless quadrupoles.

    The charges read either the energy model's features (``charge_model=None``: one
    network, the dipole loss shapes the shared features) or those of a separate
    HIP-NN (``charge_model``: the energy is untouched by the charge training). Charges
    are never needed as labels: train on ``dipole``, ``dipole_magnitude`` or
    ``quadrupole`` through :func:`hipnn_pyg.nn.predict`.

    Hydra example::

        _target_: hipnn_pyg.nn.HIPNNPotential
        energy_model: {_target_: hipnn_pyg.HIPNN, species: [1, 6, 8]}
        charge_model: null   # or {_target_: hipnn_pyg.HIPNN, ...}

    Args:
        energy_model (HIPNN): The energy model.
        charge_model (HIPNN, optional): A separate network for the charges.
            (default: :obj:`None`, share the energy model's features)
        origin (str): Reference point of the multipoles, ``"center_of_mass"`` or
            ``"center_of_geometry"``; it matters only for charged structures
            (dipole) or charged/dipolar ones (quadrupole).
            (default: :obj:`"center_of_mass"`)
    """

    def __init__(
        self,
        energy_model: HIPNN,
        charge_model: HIPNN | None = None,
        origin: str = "center_of_mass",
    ) -> None:
        super().__init__()
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got '{origin}'")
        self.energy_model = energy_model
        self.charge_model = charge_model
        self.origin = origin
        source = charge_model if charge_model is not None else energy_model
        reference = next(source.parameters())  # match the wrapped model's dtype/device
        self.charge_head = HierarchicalCharges(_channels(source)).to(
            dtype=reference.dtype, device=reference.device
        )

    # --- the attributes the trainer, self-energy fit and I/O look up on a HIPNN ---
    @property
    def species(self) -> list[int]:
        return self.energy_model.species

    @property
    def cutoff(self) -> float:
        return self.energy_model.cutoff

    @property
    def energy_head(self) -> nn.Module:
        return self.energy_model.energy_head

    @property
    def self_energies(self) -> Tensor:
        return self.energy_model.self_energies

    def set_self_energies(self, energies: Tensor) -> None:
        self.energy_model.set_self_energies(energies)

    @property
    def share_features(self) -> bool:
        r"""Whether the charges read the energy model's features."""
        return self.charge_model is None

    def hyperparameters(self) -> dict[str, Any]:
        r"""Nested constructor arguments (see :func:`hipnn_pyg.io.save_model`)."""
        return {
            "energy_model": _module_spec(self.energy_model),
            "charge_model": None if self.charge_model is None else _module_spec(
                self.charge_model
            ),
            "origin": self.origin,
        }

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> HIPNNPotential:
        r"""Rebuilds the model from :meth:`hyperparameters` (weights not included)."""
        charge = hyperparameters.get("charge_model")
        return cls(
            energy_model=build_model(hyperparameters["energy_model"]),  # type: ignore[arg-type]
            charge_model=None if charge is None else build_model(charge),  # type: ignore[arg-type]
            origin=hyperparameters.get("origin", "center_of_mass"),
        )

    def reset_parameters(self) -> None:
        self.energy_model.reset_parameters()
        if self.charge_model is not None:
            self.charge_model.reset_parameters()
        self.charge_head.reset_parameters()

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        return_details: bool = False,
        num_graphs: int | None = None,
    ) -> Tensor | HIPNNOutput:
        r"""Energies, exactly as :meth:`HIPNN.forward` of the energy model (so
        :func:`~hipnn_pyg.energy_forces_stress` works unchanged); charges and
        multipoles come from :meth:`electrostatics`."""
        return self.energy_model(z, pos, batch, cell, pbc, return_details=return_details,
                                 num_graphs=num_graphs)

    def electrostatics(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        total_charge: Tensor | None = None,
        features: list[Tensor] | None = None,
        num_graphs: int | None = None,
    ) -> dict[str, Tensor]:
        r"""Charges and multipoles.

        Args:
            z, pos, batch, cell, pbc: As in :meth:`forward`.
            total_charge (torch.Tensor, optional): Total charge of each structure
                ``[num_graphs]`` in e. (default: :obj:`None`, neutral)
            features (list[torch.Tensor], optional): The energy model's features from
                a forward pass of the same structures, reused when the features are
                shared. (default: :obj:`None`, computed here)
            num_graphs (int, optional): Number of structures. (default: :obj:`None`,
                from ``cell`` or ``batch``)

        Returns:
            dict with ``charges`` ``[num_atoms]`` (e), ``layer_charges``
            ``[num_atoms, num_layers]`` (raw, before the total-charge correction),
            ``dipole`` ``[num_graphs, 3]`` (e·Å), ``dipole_magnitude``
            ``[num_graphs]`` (e·Å) and ``quadrupole`` ``[num_graphs, 3, 3]`` (e·Å²).
        """
        if batch is None:
            batch = torch.zeros_like(z)
        if num_graphs is None:
            num_graphs = (
                cell.size(0) if cell is not None
                else (int(batch.max()) + 1 if z.numel() else 1)
            )
        if self.charge_model is not None or features is None:
            network = self.charge_model if self.charge_model is not None else self.energy_model
            features = network(z, pos, batch, cell, pbc, return_details=True).features
        layer_charges = self.charge_head(features)
        charges = neutralize(layer_charges.sum(-1), batch, num_graphs, total_charge)
        origin = multipole_origin(z, pos, batch, num_graphs, self.origin)
        dipole = dipole_moment(charges, pos, batch, num_graphs, origin)
        return {
            "charges": charges,
            "layer_charges": layer_charges,
            "dipole": dipole,
            "dipole_magnitude": safe_norm(dipole),
            "quadrupole": quadrupole_moment(charges, pos, batch, num_graphs, origin),
        }

    def __repr__(self) -> str:
        charge = "shared features" if self.charge_model is None else repr(self.charge_model)
        return (f"{self.__class__.__name__}(energy_model={self.energy_model!r}, "
                f"charges={charge}, origin={self.origin})")


def _channels(model: nn.Module) -> list[int]:
    r"""Feature widths of a HIP-NN's layers, layer 0 (one-hot species) first."""
    head = getattr(model, "energy_head", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} is not a HIP-NN (no energy_head)")
    return [readout.in_channels for readout in head.readouts]
