r"""HIP-NN, the model-zoo face: ``HIPNN(...)(z, pos, batch)`` returns energies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hipnn_pyg.graph import Graph, cell_volume, radius_graph
from hipnn_pyg.nn.envsum import neighbour_layout
from hipnn_pyg.nn.heads import HierarchicalEnergy
from hipnn_pyg.nn.interaction import AtomLayer, HIPNNInteraction
from hipnn_pyg.nn.sensitivity import CosineCutoff, InverseGaussianSensitivity
from hipnn_pyg.nn.validation import check_inputs, check_min_distance, species_index


class HIPNNOutput(NamedTuple):
    r"""Everything one forward pass computes, for analysis and for other heads.

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


class HIPNN(nn.Module):
    r"""The Hierarchical Interacting Particle Neural Network from `"Hierarchical modeling
    of molecular energies using a deep neural network"
    <https://arxiv.org/abs/1710.00017>`_ (Lubbers, Smith and Barros, 2018).

    Atoms start as one-hot species vectors; each interaction layer
    (:class:`~hipnn_pyg.nn.HIPNNInteraction`) mixes in neighbours through
    inverse-distance sensitivities, followed by ``num_atom_layers`` on-site layers.
    Every layer :math:`\ell` has its own linear energy readout, and the energy is
    :math:`\hat{E} = \sum_i \sum_\ell \hat{E}_i^\ell`. Geometry enters only through
    pair distances, so energies are invariant to rotation, translation and permutation.

    Args:
        species (Sequence[int]): Atomic numbers the model knows; any other element is an
            error. (default: :obj:`(1, 6, 7, 8)`)
        hidden_channels (int): Feature width of the hidden layers. (default: :obj:`64`)
        num_interactions (int): Number of interaction layers. (default: :obj:`2`)
        num_atom_layers (int): On-site layers after each interaction.
            (default: :obj:`3`)
        num_sensitivities (int): Sensitivity functions per interaction.
            (default: :obj:`20`)
        soft_min_distance (float): Smallest sensitivity centre in Å.
            (default: :obj:`0.75`)
        soft_max_distance (float): Largest sensitivity centre in Å.
            (default: :obj:`5.5`)
        cutoff (float): Hard cutoff of the pair list and of the cosine cutoff in Å.
            (default: :obj:`6.5`)
        min_distance (float): Pairs closer than this (Å) are a broken geometry and
            raise :obj:`ValueError`. (default: :obj:`0.3`)
        max_num_neighbors (int, optional): Cap on neighbours per atom; exceeding it
            raises rather than dropping pairs. (default: :obj:`None`, no cap)
        self_energies (Sequence[float], optional): Per-species energies (eV) of layer 0,
            usually fitted with :func:`hipnn_pyg.train.fit_self_energies`.
            (default: :obj:`None`, zeros)
    """

    def __init__(
        self,
        species: Sequence[int] = (1, 6, 7, 8),
        hidden_channels: int = 64,
        num_interactions: int = 2,
        num_atom_layers: int = 3,
        num_sensitivities: int = 20,
        soft_min_distance: float = 0.75,
        soft_max_distance: float = 5.5,
        cutoff: float = 6.5,
        min_distance: float = 0.3,
        max_num_neighbors: int | None = None,
        self_energies: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        species = [int(z) for z in species]
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be a non-empty list of distinct Z, got {species}")
        if soft_max_distance > cutoff:
            raise ValueError(
                f"soft_max_distance={soft_max_distance} Å lies beyond cutoff={cutoff} Å"
            )
        self.species = species
        self.hidden_channels = hidden_channels
        self.num_interactions = num_interactions
        self.num_atom_layers = num_atom_layers
        self.num_sensitivities = num_sensitivities
        self.soft_min_distance = soft_min_distance
        self.soft_max_distance = soft_max_distance
        self.cutoff = float(cutoff)
        self.min_distance = float(min_distance)
        self.max_num_neighbors = max_num_neighbors

        lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_lookup", lookup, persistent=False)

        channels = [len(species)] + [hidden_channels] * num_interactions
        self.interactions = nn.ModuleList()
        self.atom_layers = nn.ModuleList()
        for width_in, width_out in zip(channels[:-1], channels[1:], strict=True):
            sensitivity = InverseGaussianSensitivity(
                num_sensitivities, soft_min_distance, soft_max_distance, CosineCutoff(cutoff)
            )
            self.interactions.append(HIPNNInteraction(width_in, width_out, sensitivity))
            self.atom_layers.append(
                nn.Sequential(*[AtomLayer(width_out, width_out) for _ in range(num_atom_layers)])
            )
        self.energy_head = HierarchicalEnergy(channels)
        self.reset_parameters()
        if self_energies is not None:
            self.set_self_energies(torch.as_tensor(self_energies))

    def hyperparameters(self) -> dict[str, object]:
        r"""The constructor arguments, enough to rebuild the model (see
        :func:`hipnn_pyg.io.save_model`)."""
        return {
            "species": list(self.species),
            "hidden_channels": self.hidden_channels,
            "num_interactions": self.num_interactions,
            "num_atom_layers": self.num_atom_layers,
            "num_sensitivities": self.num_sensitivities,
            "soft_min_distance": self.soft_min_distance,
            "soft_max_distance": self.soft_max_distance,
            "cutoff": self.cutoff,
            "min_distance": self.min_distance,
            "max_num_neighbors": self.max_num_neighbors,
        }

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for interaction in self.interactions:
            interaction.reset_parameters()
        for block in self.atom_layers:
            for layer in block:
                layer.reset_parameters()
        self.energy_head.reset_parameters()

    @property
    def self_energies(self) -> Tensor:
        r"""Per-species self-energies ``[num_species]`` in eV, ordered as ``species``."""
        return self.energy_head.self_energies

    def set_self_energies(self, energies: Tensor) -> None:
        r"""Sets the layer-0 (per-species) energies, ``[num_species]`` in eV."""
        if energies.numel() != len(self.species):
            raise ValueError(
                f"need one self-energy per species ({len(self.species)}), "
                f"got {energies.numel()}"
            )
        self.energy_head.set_self_energies(energies)

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
        r"""Computes energies.

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
            num_graphs (int, optional): Number of graphs, counting graphs without atoms
                (e.g. ``data.num_graphs`` of a PyG batch). (default: :obj:`None`, from
                ``cell`` or ``batch.max() + 1``)

        Energies come back in float64 whatever the model's precision: total energies
        of 10^4 eV lose meV resolution in float32. Gradients (forces) keep the
        precision of ``pos``.
        """
        check_inputs(z, pos, batch, cell, pbc)
        if batch is None:
            batch = torch.zeros_like(z)
        if num_graphs is None:
            num_graphs = (
                cell.size(0) if cell is not None else (int(batch.max()) + 1 if z.numel() else 1)
            )
        index = species_index(z, self.species_lookup, self.species)
        graph = radius_graph(pos, self.cutoff, batch, cell, pbc, self.max_num_neighbors)
        check_min_distance(graph.distances, graph.edge_index, self.min_distance)

        # Edges grouped by centre once, for every interaction layer.
        uses_envsum = any(layer.method == "envsum" for layer in self.interactions)
        layout = neighbour_layout(graph.edge_index, z.numel()) if uses_envsum else None
        x = F.one_hot(index, len(self.species)).to(pos.dtype)
        features = [x]
        for interaction, atom_layers in zip(self.interactions, self.atom_layers, strict=True):
            x = atom_layers(interaction(x, graph.edge_index, graph.distances, layout))
            features.append(x)

        layer_energy = self.energy_head(features)
        # Totals reach 10^4 eV, where float32 rounds at ~1 meV: sum layers and atoms in
        # float64 (the self-energies are exact in either precision).
        atom_energy = layer_energy.to(torch.float64).sum(dim=-1)
        energy = scatter(atom_energy, batch, dim=0, dim_size=num_graphs, reduce="sum")
        if not return_details:
            return energy
        return HIPNNOutput(energy, atom_energy, layer_energy, features, graph, batch)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(species={self.species}, "
            f"hidden_channels={self.hidden_channels}, "
            f"num_interactions={self.num_interactions}, "
            f"num_atom_layers={self.num_atom_layers}, "
            f"num_sensitivities={self.num_sensitivities}, cutoff={self.cutoff})"
        )


def energy_forces_stress(
    model: nn.Module,
    z: Tensor,
    pos: Tensor,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    compute_forces: bool = True,
    compute_stress: bool = False,
    create_graph: bool = False,
    num_graphs: int | None = None,
) -> dict[str, Tensor]:
    r"""Energy, forces :math:`-\partial E/\partial x` and stress
    :math:`V^{-1}\,\partial E/\partial \varepsilon` by autograd.

    The stress comes from a symmetric strain :math:`\varepsilon` applied to both
    positions and cell, so it is the exact derivative of the energy, in eV/Å³, with
    ASE's sign convention.

    Args:
        model (nn.Module): A model whose ``forward(z, pos, batch, cell, pbc,
            return_details=True)`` returns a :class:`HIPNNOutput`.
        compute_forces (bool): Also return ``forces``. (default: :obj:`True`)
        compute_stress (bool): Also return ``stress`` ``[num_graphs, 3, 3]``; needs a
            periodic ``cell``. (default: :obj:`False`)
        create_graph (bool): Keep the graph of the derivatives, for training on
            forces. (default: :obj:`False`)
        num_graphs (int, optional): Number of graphs, passed to the model when given.
            (default: :obj:`None`, the model counts them)

    Returns:
        dict with ``energy``, ``atom_energy``, ``layer_energy``, ``output``
        (the :class:`HIPNNOutput`) and, as asked, ``forces`` and ``stress``.
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
        extra = {} if num_graphs is None else {"num_graphs": num_graphs}
        output = model(z, pos, batch, cell, pbc, return_details=True, **extra)
        result: dict[str, Tensor] = {
            "energy": output.energy,
            "atom_energy": output.atom_energy,
            "layer_energy": output.layer_energy,
        }
        inputs = ([pos] if compute_forces else []) + ([strain] if strain is not None else [])
        if inputs:
            grads = torch.autograd.grad(
                output.energy.sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            grads = [
                torch.zeros_like(t) if g is None else g
                for g, t in zip(grads, inputs, strict=True)
            ]
            if compute_forces:
                result["forces"] = -grads[0]
            if strain is not None:
                assert cell is not None
                # Free graphs in a mixed batch have no volume and get zero stress.
                volume = cell_volume(cell.detach())[:, None, None]
                result["stress"] = torch.where(
                    volume > 0, grads[-1] / volume.clamp_min(1e-12), torch.zeros_like(grads[-1])
                )
    result["output"] = output  # type: ignore[assignment]
    return result
