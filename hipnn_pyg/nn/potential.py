r"""A potential: one representation and named heads. ``model(z, pos, batch)`` returns
energies for every potential; :meth:`Potential.outputs` returns every head's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor, nn

from hipnn_pyg.graph import Graph
from hipnn_pyg.nn.heads import EnergyHead
from hipnn_pyg.nn.representation import HIPNNRepresentation
from hipnn_pyg.nn.spec import Configurable


class HIPNNOutput(NamedTuple):
    r"""The energy of one forward pass with what it was computed from, for analysis.

    Attributes:
        energy: Energy per graph ``[num_graphs]`` (eV), accumulated in float64.
        atom_energy: Energy per atom ``[num_atoms]`` (float64).
        layer_energy: Energy per atom and layer ``[num_atoms, num_interactions + 1]``;
            column 0 is the species self-energy.
        features: Atom features of every layer, layer 0 (one-hot species) first.
        graph: The pair list used.
        batch: Graph index of each atom.
    """

    energy: Tensor
    atom_energy: Tensor
    layer_energy: Tensor
    features: list[Tensor]
    graph: Graph
    batch: Tensor


class Potential(Configurable, nn.Module):
    r"""A representation and the heads that read it (SchNetPack's and torchmd-net's
    composition). Calling it is the model-zoo call (energies, :meth:`forward`);
    :meth:`outputs` runs the representation once and returns every head's outputs in
    one dict. Forces and stress come from :func:`~hipnn_pyg.nn.energy_forces_stress`.

    Every head is sized to the representation's feature widths here. Parameter names
    are stable and say where they live, e.g. ``representation.interactions.1...``,
    ``heads.energy.readouts.2.weight``, so parts can be frozen by name.

    Hydra example (``conf/model/hipnn_charges.yaml``)::

        _target_: hipnn_pyg.nn.Potential
        representation: {_target_: hipnn_pyg.nn.HIPNNRepresentation, ...}
        heads:
          energy: {_target_: hipnn_pyg.nn.EnergyHead}
          charges: {_target_: hipnn_pyg.nn.ChargeHead, origin: center_of_mass}

    Args:
        representation (HIPNNRepresentation): Atoms and positions to per-layer features.
        heads (Mapping[str, nn.Module], optional): Heads by name; ``"energy"`` (an
            :class:`~hipnn_pyg.nn.EnergyHead`) is the one forces, self-energies and
            the model-zoo call use. (default: :obj:`None`, one energy head)
    """

    def __init__(
        self,
        representation: HIPNNRepresentation,
        heads: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.heads = nn.ModuleDict(dict(heads.items()) if heads is not None
                                   else {"energy": EnergyHead()})
        names: dict[str, str] = {}
        for name, head in self.heads.items():
            for output in head.output_names:
                if output in names:
                    raise ValueError(f"heads '{names[output]}' and '{name}' both return "
                                     f"'{output}'; give one another output name")
                names[output] = name
        like = next(representation.parameters(), None)
        for head in self.heads.values():
            if getattr(head, "representation", None) is None:
                head.build(representation.channels, like)

    @property
    def species(self) -> list[int]:
        r"""Atomic numbers the model knows."""
        return self.representation.species

    @property
    def cutoff(self) -> float:
        r"""Radius of the pair list (Å)."""
        return self.representation.cutoff

    @property
    def output_names(self) -> tuple[str, ...]:
        r"""Every output of :meth:`outputs` (before forces and stress)."""
        return tuple(name for head in self.heads.values() for name in head.output_names)

    @property
    def energy_head(self) -> EnergyHead:
        r"""The head named ``"energy"``."""
        if "energy" not in self.heads:
            raise AttributeError(f"{type(self).__name__} has no 'energy' head")
        return self.heads["energy"]  # type: ignore[return-value]

    @property
    def self_energies(self) -> Tensor:
        r"""Per-species self-energies ``[num_species]`` in eV, ordered as ``species``."""
        return self.energy_head.self_energies

    def set_self_energies(self, energies: Tensor) -> None:
        r"""Sets the energy head's layer-0 (per-species) energies, ``[num_species]``."""
        self.energy_head.set_self_energies(energies)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.representation.reset_parameters()
        for head in self.heads.values():
            head.reset_parameters()

    def outputs(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        total_charge: Tensor | None = None,
        num_graphs: int | None = None,
        level: Tensor | None = None,
        validate: bool = True,
    ) -> dict[str, Tensor]:
        r"""Every head's outputs, e.g. ``energy``, ``atom_energy``, ``layer_energy``
        and, with a :class:`~hipnn_pyg.nn.ChargeHead`, ``charges``, ``dipole``...

        Args:
            z, pos, batch, cell, pbc, num_graphs: As in
                :meth:`HIPNNRepresentation.forward`.
            total_charge (torch.Tensor, optional): Total charge of each structure
                ``[num_graphs]`` in e, for charge heads. (default: :obj:`None`, neutral)
            level (torch.Tensor, optional): Each structure's level of theory
                ``[num_graphs]``, for a :class:`~hipnn_pyg.nn.fidelity.MultiFidelityHead`.
                (default: :obj:`None`, its default level)
            validate (bool): As in :meth:`HIPNNRepresentation.forward`: :obj:`False`
                skips the value checks. (default: :obj:`True`)
        """
        representation = self.representation(z, pos, batch, cell, pbc, num_graphs,
                                             validate=validate)
        result: dict[str, Tensor] = {}
        for head in self.heads.values():
            if getattr(head, "takes_level", False):
                result.update(head(representation, total_charge, level))
            else:
                result.update(head(representation, total_charge))
        return result

    @property
    def levels(self) -> list[str] | None:
        r"""The levels of theory of a multi-fidelity energy head, else :obj:`None`."""
        return getattr(self.heads["energy"], "levels", None) if "energy" in self.heads \
            else None

    def select_level(self, level: str) -> None:
        r"""Answers at ``level`` (a :class:`~hipnn_pyg.nn.fidelity.MultiFidelityHead`'s)
        wherever structures carry no level: the model-zoo call, MD, export."""
        if self.levels is None:
            raise ValueError(f"this model has one level of theory, no head '{level}' to "
                             "select (train one with the multi-fidelity data module)")
        self.heads["energy"].select(level)

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        return_details: bool = False,
        num_graphs: int | None = None,
        validate: bool = True,
    ) -> Tensor | HIPNNOutput:
        r"""The model-zoo call ``model(z, pos, batch)``, the same for every potential (a
        :class:`~hipnn_pyg.HIPNN`, one with charges, one composed from a config, any file
        :func:`~hipnn_pyg.load_model` reads): energies ``[num_graphs]``, as
        :meth:`energy`. Every head's outputs come from :meth:`outputs`; forces and stress
        from :func:`~hipnn_pyg.nn.energy_forces_stress`.

        Args:
            z (torch.Tensor): Atomic numbers ``[num_atoms]``.
            pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å.
            batch (torch.Tensor, optional): Graph index of each atom ``[num_atoms]``.
                (default: :obj:`None`, one graph)
            cell (torch.Tensor, optional): Cells ``[num_graphs, 3, 3]`` in Å.
                (default: :obj:`None`)
            pbc (torch.Tensor, optional): Periodic directions ``[num_graphs, 3]``.
                (default: :obj:`None`)
            return_details (bool): Return a :class:`HIPNNOutput` with per-atom and
                per-layer energies and features instead of the energies alone.
                (default: :obj:`False`)
            num_graphs (int, optional): Number of graphs, for batches whose last graphs
                have no atoms. (default: :obj:`None`, from ``cell`` or ``batch``)
            validate (bool): Check the inputs' values (finite positions, a sorted
                batch, known elements, no overlapping atoms...; see
                :meth:`HIPNNRepresentation.forward`). :obj:`False` skips them, so that
                nothing is read back to the host outside the pair search (give
                ``num_graphs`` too): for a training loop on checked data.
                (default: :obj:`True`)

        Energies come back in float64 whatever the model's precision: total energies
        of 10^4 eV lose meV resolution in float32. Gradients (forces) keep the
        precision of ``pos``.
        """
        return self.energy(z, pos, batch, cell, pbc, return_details, num_graphs, validate)

    def energy(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        return_details: bool = False,
        num_graphs: int | None = None,
        validate: bool = True,
    ) -> Tensor | HIPNNOutput:
        r"""The energy head alone, the model-zoo call ``model(z, pos, batch)``: energies
        ``[num_graphs]`` in float64 (whatever the model's precision), or with
        ``return_details`` a :class:`HIPNNOutput`. Gradients keep ``pos``'s precision;
        ``validate`` as in :meth:`forward`.
        """
        representation = self.representation(z, pos, batch, cell, pbc, num_graphs,
                                             validate=validate)
        head = self.energy_head
        values = head(representation)
        if not return_details:
            return values[head.output]
        return HIPNNOutput(values[head.output], values[f"atom_{head.output}"],
                           values[f"layer_{head.output}"], representation.features,
                           representation.graph, representation.batch)

