r"""Heads: hierarchical readouts of the representation's features into named outputs.

A head is a :class:`HierarchicalReadout` (one linear readout per feature layer, sized
when a :class:`~hipnn_pyg.nn.Potential` attaches it to a representation) whose
``forward(representation_output, total_charge)`` returns the dict of outputs named by
its ``output_names``. A new head (another property, another level of theory) is one
more subclass here, listed under ``heads`` in ``conf/model/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import scatter

from hipnn_pyg.nn.charges import (
    ORIGINS,
    dipole_moment,
    multipole_origin,
    neutralize,
    quadrupole_moment,
    safe_norm,
)
from hipnn_pyg.nn.representation import RepresentationOutput
from hipnn_pyg.nn.spec import Configurable


class HierarchicalReadout(Configurable, nn.Module):
    r"""One linear readout per layer, :math:`y_i^\ell = w^\ell \cdot z_i^\ell`, returned
    per atom and layer by :meth:`layer_values`; the sum over layers is the hierarchical
    prediction.

    Layer 0 reads the one-hot species vector, so its readout is a per-species table;
    it starts at zero (set it from data), the other layers at random.

    Args:
        channels (Sequence[int], optional): Feature width of each layer, layer 0 first.
            (default: :obj:`None`, sized by :meth:`build` when a potential attaches
            the head to its representation)
    """

    def __init__(self, channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.channels: list[int] = []
        self.readouts = nn.ModuleList()
        if channels is not None:
            self.build(channels)

    def build(self, channels: Sequence[int], like: Tensor | None = None) -> None:
        r"""Creates the readouts for features of widths ``channels`` (in the dtype and on
        the device of ``like``); a head already built must match."""
        channels = [int(width) for width in channels]
        if self.channels:
            if channels != self.channels:
                raise ValueError(
                    f"{type(self).__name__} was built for feature widths {self.channels}, "
                    f"the representation gives {channels}"
                )
            return
        self.channels = channels
        self.readouts.extend(
            Linear(width, 1, bias=False, weight_initializer="kaiming_uniform") for width in channels
        )
        self.reset_parameters()
        if like is not None:
            self.to(dtype=like.dtype, device=like.device)

    def reset_parameters(self) -> None:
        r"""Resets the readouts; layer 0 to zero."""
        for readout in self.readouts:
            readout.reset_parameters()
        if len(self.readouts):
            nn.init.zeros_(self.readouts[0].weight)

    def layer_values(self, features: list[Tensor]) -> Tensor:
        r"""Returns per-atom, per-layer values ``[num_atoms, num_layers]``."""
        if len(features) != len(self.readouts):
            raise ValueError(
                f"{type(self).__name__} expects {len(self.readouts)} feature layers, "
                f"got {len(features)}"
            )
        return torch.cat(
            [readout(x) for readout, x in zip(self.readouts, features, strict=True)], dim=-1
        )


class EnergyHead(HierarchicalReadout):
    r"""The hierarchical energy :math:`\hat{E} = \sum_i \sum_\ell \hat{E}_i^\ell`,
    :math:`\hat{E}_i^\ell = w^\ell \cdot z_i^\ell` (Lubbers et al. 2018).

    Layer 0's readout is the table of per-species self-energies. Layers and atoms are
    summed in float64: totals reach 10^4 eV, where float32 rounds at ~1 meV.

    Args:
        self_energies (Sequence[float], optional): Per-species energies (eV) of layer 0,
            ordered as the representation's ``species``, usually fitted with
            :func:`hipnn_pyg.train.fit_self_energies`. (default: :obj:`None`, zeros)
        output (str): Name of the energy output; per-atom and per-layer values are
            ``atom_<output>`` and ``layer_<output>``. A second level of theory is a
            second head with another name. (default: :obj:`"energy"`)
        channels (Sequence[int], optional): As in :class:`HierarchicalReadout`.
            (default: :obj:`None`)
    """

    def __init__(
        self,
        self_energies: Sequence[float] | Tensor | None = None,
        output: str = "energy",
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.output = output
        self._initial_self_energies = (
            None if self_energies is None else torch.as_tensor(self_energies).flatten()
        )
        if channels is not None:
            self.build(channels)

    @property
    def output_names(self) -> tuple[str, ...]:
        r"""The outputs :meth:`forward` returns."""
        return (self.output, f"atom_{self.output}", f"layer_{self.output}")

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self._initial_self_energies is not None and len(self.readouts):
            self.set_self_energies(self._initial_self_energies)

    @property
    def self_energies(self) -> Tensor:
        r"""Per-species self-energies ``[num_species]`` (layer-0 weights)."""
        return self.readouts[0].weight.detach().view(-1)

    def self_energy_weights(self) -> list[Tensor]:
        r"""The parameters holding the self-energies (no L2 penalty on them)."""
        return [self.readouts[0].weight] if len(self.readouts) else []

    def set_self_energies(self, energies: Tensor | Sequence[float]) -> None:
        r"""Sets the layer-0 (per-species) energies, ``[num_species]`` in eV."""
        weight = self.readouts[0].weight
        energies = torch.as_tensor(energies)
        if energies.numel() != weight.numel():
            raise ValueError(
                f"need one self-energy per species ({weight.numel()}), got {energies.numel()}"
            )
        with torch.no_grad():
            weight.copy_(energies.to(weight.dtype).view_as(weight))

    def forward(
        self, representation: RepresentationOutput, total_charge: Tensor | None = None
    ) -> dict[str, Tensor]:
        r"""Returns ``<output>`` ``[num_graphs]`` and ``atom_<output>`` ``[num_atoms]`` in
        float64, and ``layer_<output>`` ``[num_atoms, num_layers]``."""
        layer_energy = self.layer_values(representation.features)
        atom_energy = layer_energy.to(torch.float64).sum(dim=-1)
        energy = scatter(atom_energy, representation.batch, dim=0,
                         dim_size=representation.num_graphs, reduce="sum")
        return {self.output: energy, f"atom_{self.output}": atom_energy,
                f"layer_{self.output}": layer_energy}


class ChargeHead(HierarchicalReadout):
    r"""Atomic charges, dipoles and quadrupoles, the charge model of Sifain et al.
    (`"Discovering a transferable charge assignment model using machine learning"
    <https://doi.org/10.1021/acs.jpclett.8b01939>`_): a hierarchical readout gives raw
    charges, shifted uniformly so that each structure carries its total charge exactly
    (:func:`~hipnn_pyg.nn.charges.neutralize`); multipoles follow from them.

    Layer 0 is a per-species charge offset (an electronegativity), starting at zero.
    Charges are never needed as labels: train on ``dipole``, ``dipole_magnitude`` or
    ``quadrupole``.

    Args:
        origin (str): Reference point of the multipoles, ``"center_of_mass"`` or
            ``"center_of_geometry"``; it matters only for charged structures (dipole)
            or charged/dipolar ones (quadrupole). (default: :obj:`"center_of_mass"`)
        representation (nn.Module, optional): A separate network whose features the
            charges read, so the charge training leaves the energy untouched.
            (default: :obj:`None`, the potential's shared features)
        channels (Sequence[int], optional): As in :class:`HierarchicalReadout`.
            (default: :obj:`None`)
    """

    #: The outputs :meth:`forward` returns.
    output_names = ("charges", "layer_charges", "dipole", "dipole_magnitude", "quadrupole")

    def __init__(
        self,
        origin: str = "center_of_mass",
        representation: nn.Module | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got '{origin}'")
        super().__init__()
        self.origin = origin
        self.representation = representation
        if representation is not None:
            self.build(representation.channels, next(representation.parameters(), None))
        elif channels is not None:
            self.build(channels)

    def forward(
        self, representation: RepresentationOutput, total_charge: Tensor | None = None
    ) -> dict[str, Tensor]:
        r"""Returns ``charges`` ``[num_atoms]`` (e), ``layer_charges``
        ``[num_atoms, num_layers]`` (raw, before the total-charge correction), ``dipole``
        ``[num_graphs, 3]`` (e·Å), ``dipole_magnitude`` ``[num_graphs]`` (e·Å) and
        ``quadrupole`` ``[num_graphs, 3, 3]`` (e·Å²).

        Args:
            representation (RepresentationOutput): The potential's representation.
            total_charge (torch.Tensor, optional): Total charge of each structure
                ``[num_graphs]`` in e. (default: :obj:`None`, neutral)
        """
        r = representation
        if self.representation is not None:
            r = self.representation(r.z, r.pos, r.batch, r.cell, r.pbc, r.num_graphs,
                                    validate=r.validate)
        layer_charges = self.layer_values(r.features)
        charges = neutralize(layer_charges.sum(-1), r.batch, r.num_graphs, total_charge)
        origin = multipole_origin(r.z, r.pos, r.batch, r.num_graphs, self.origin)
        dipole = dipole_moment(charges, r.pos, r.batch, r.num_graphs, origin)
        return {
            "charges": charges,
            "layer_charges": layer_charges,
            "dipole": dipole,
            "dipole_magnitude": safe_norm(dipole),
            "quadrupole": quadrupole_moment(charges, r.pos, r.batch, r.num_graphs, origin),
        }
