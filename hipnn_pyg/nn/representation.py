r"""HIP-NN's representation: atoms and positions to the features of every layer."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hipnn_pyg.graph import Graph, radius_graph
from hipnn_pyg.nn.checks import (
    check_min_distance,
    check_shapes,
    check_values,
    species_index,
    species_lookup,
)
from hipnn_pyg.nn.envsum import NeighbourLayout, neighbour_layout
from hipnn_pyg.nn.interaction import AtomLayer, HIPNNInteraction
from hipnn_pyg.nn.spec import Configurable
from hipnn_pyg.nn.tensor_sensitivity import check_tensor_order, check_tensor_products


class RepresentationOutput(NamedTuple):
    r"""What a representation hands to the heads.

    Attributes:
        features: Atom features of every layer ``[num_atoms, channels[l]]``, layer 0
            (one-hot species) first.
        graph: The pair list used.
        z: Atomic numbers ``[num_atoms]``.
        pos: Positions ``[num_atoms, 3]`` (Å), as given (with their autograd history).
        batch: Graph index of each atom ``[num_atoms]``.
        num_graphs: Number of graphs.
        cell: Cells ``[num_graphs, 3, 3]`` or :obj:`None`.
        pbc: Periodic directions ``[num_graphs, 3]`` or :obj:`None`.
        validate: Whether the inputs' values were checked (a head that runs a
            representation of its own checks them as this one did).
    """

    features: list[Tensor]
    graph: Graph
    z: Tensor
    pos: Tensor
    batch: Tensor
    num_graphs: int
    cell: Tensor | None
    pbc: Tensor | None
    validate: bool = True


class HIPNNRepresentation(Configurable, nn.Module):
    r"""The HIP-NN representation from `"Hierarchical modeling of molecular energies
    using a deep neural network" <https://arxiv.org/abs/1710.00017>`_: atoms start as
    one-hot species vectors (layer 0); each of ``num_interactions`` blocks is a
    :class:`~hipnn_pyg.nn.HIPNNInteraction` followed by ``num_atom_layers`` on-site
    :class:`~hipnn_pyg.nn.AtomLayer`\ s, and yields the features of one more layer.

    The ``sensitivity`` is a template: every interaction learns its own deep copy. Its
    ``cutoff`` (Å) is the radius of the pair list, so the two can never disagree.

    Args:
        species (Sequence[int]): Atomic numbers the model knows; any other element is an
            error.
        sensitivity (nn.Module): Maps distances ``[num_edges]`` to
            ``[num_edges, num_sensitivities]`` and has ``num_sensitivities`` and
            ``cutoff`` attributes, e.g. :class:`~hipnn_pyg.nn.InverseGaussianSensitivity`.
        hidden_channels (int): Feature width of the hidden layers. (default: :obj:`64`)
        num_interactions (int): Number of interaction blocks. (default: :obj:`2`)
        num_atom_layers (int): On-site layers after each interaction. (default: :obj:`3`)
        min_distance (float): Pairs closer than this (Å) are a broken geometry and raise
            :obj:`ValueError`. (default: :obj:`0.3`)
        max_num_neighbors (int, optional): Cap on neighbours per atom; exceeding it
            raises rather than dropping pairs. (default: :obj:`None`, no cap)
        method (str): How the interactions compute the environment sum, ``"envsum"``,
            ``"padded"``, ``"message_passing"`` or ``"scatter"`` (same results,
            different speed and memory; see :class:`~hipnn_pyg.nn.HIPNNInteraction`).
            (default: :obj:`"envsum"`)
        tensor_order (int): Angular order of the sensitivities: 0 is HIP-NN, 1 and 2 are
            HIP-NN-TS with vector and quadrupole channels (see
            :class:`~hipnn_pyg.nn.HIPNNInteraction`). (default: :obj:`0`)
        tensor_products (bool): With ``tensor_order=2``, add the many-body product
            invariants of the vector and quadrupole channels (hippynn's HIP-HOP-NN, see
            :class:`~hipnn_pyg.nn.HIPNNInteraction`). (default: :obj:`False`)
    """

    def __init__(
        self,
        species: Sequence[int],
        sensitivity: nn.Module,
        hidden_channels: int = 64,
        num_interactions: int = 2,
        num_atom_layers: int = 3,
        min_distance: float = 0.3,
        max_num_neighbors: int | None = None,
        method: str = "envsum",
        tensor_order: int = 0,
        tensor_products: bool = False,
    ) -> None:
        super().__init__()
        species = [int(z) for z in species]
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be a non-empty list of distinct Z, got {species}")
        self.species = species
        self.hidden_channels = hidden_channels
        self.num_interactions = num_interactions
        self.num_atom_layers = num_atom_layers
        self.cutoff = float(sensitivity.cutoff)
        self.min_distance = float(min_distance)
        self.max_num_neighbors = max_num_neighbors
        self.tensor_order = check_tensor_order(tensor_order)
        self.tensor_products = check_tensor_products(tensor_products, self.tensor_order)

        self.register_buffer("species_lookup", species_lookup(species), persistent=False)

        self.channels = [len(species)] + [hidden_channels] * num_interactions
        self.interactions = nn.ModuleList()
        self.atom_layers = nn.ModuleList()
        for width_in, width_out in zip(self.channels[:-1], self.channels[1:], strict=True):
            layer_sensitivity = copy.deepcopy(sensitivity)
            self.interactions.append(
                HIPNNInteraction(width_in, width_out, layer_sensitivity, method,
                                 tensor_order=self.tensor_order,
                                 tensor_products=self.tensor_products)
            )
            self.atom_layers.append(
                nn.Sequential(*[AtomLayer(width_out, width_out) for _ in range(num_atom_layers)])
            )

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for interaction in self.interactions:
            interaction.reset_parameters()
        for block in self.atom_layers:
            for layer in block:
                layer.reset_parameters()

    def set_lean(self, enabled: bool = True) -> None:
        r"""Memory-lean inference for every interaction (:mod:`~hipnn_pyg.nn.frozen`):
        the ``[edges, sensitivities]`` values are recomputed in the backward instead of
        kept, for MD and large systems; exact to every order, but it gives the
        sensitivities' parameters no gradient, so a forward that could train them
        raises. Where it cannot serve (HIP-NN-TS, the torch and Triton backends) the layers
        take their usual path (:func:`~hipnn_pyg.nn.paths.layer_path`)."""
        for interaction in self.interactions:
            interaction.lean = bool(enabled)

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        num_graphs: int | None = None,
        validate: bool = True,
    ) -> RepresentationOutput:
        r"""Computes the features of every layer.

        Args:
            z (torch.Tensor): Atomic numbers ``[num_atoms]``.
            pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å.
            batch (torch.Tensor, optional): Graph index of each atom ``[num_atoms]``.
                (default: :obj:`None`, one graph)
            cell (torch.Tensor, optional): Cells ``[num_graphs, 3, 3]`` in Å.
                (default: :obj:`None`)
            pbc (torch.Tensor, optional): Periodic directions ``[num_graphs, 3]``.
                (default: :obj:`None`)
            num_graphs (int, optional): Number of graphs, for batches whose last graphs
                have no atoms. (default: :obj:`None`, from ``cell`` or ``batch``)
            validate (bool): Check the inputs' values: finite positions, a sorted batch,
                a cell per graph, known elements (one host synchronisation before the
                pair search) and no overlapping atoms (one after it). With
                :obj:`False` nothing is read back but the pair search's own and, without
                ``num_graphs`` or ``cell``, the graph count; inputs that would fail a
                check then give wrong results or device-side errors instead of a
                message. Shapes and types are checked either way (free).
                (default: :obj:`True`)
        """
        check_shapes(z, pos, batch, cell, pbc)
        like = next(self.parameters(), None)
        if like is not None and pos.dtype != like.dtype:
            raise ValueError(f"pos is {pos.dtype} but the model is {like.dtype}: convert one "
                             f"(pos.to({like.dtype}) or model.to({pos.dtype}))")
        # the rows of the one-hot table, -1 for unknown elements: checked with the rest
        index = species_index(z, self.species_lookup, self.species, validate=False)
        counted = (check_values(z, pos, batch, cell, self.species_lookup, self.species,
                                rows=index) if validate else None)
        if batch is None:
            batch = torch.zeros_like(z)
        if num_graphs is None:
            if cell is not None:
                num_graphs = cell.size(0)
            elif counted is not None:  # read with the checks' flags
                num_graphs = counted
            else:  # a host sync, intrinsic (an output size): pass num_graphs to avoid it
                num_graphs = int(batch.max()) + 1 if z.numel() else 1
        graph = radius_graph(pos, self.cutoff, batch, cell, pbc, self.max_num_neighbors,
                             validate=False)
        if validate:
            check_min_distance(graph.distances, graph.edge_index, self.min_distance)
        features = self.layer_features(index, graph)
        return RepresentationOutput(features, graph, z, pos, batch, num_graphs, cell, pbc,
                                    validate)

    def layer_features(self, species: Tensor, graph: Graph,
                       layer_graphs: list[Graph] | None = None,
                       layer_atoms: list[Tensor] | None = None) -> list[Tensor]:
        r"""The features of every layer from species indices and a pair list, with no
        checks and no neighbour search (the part an exported model runs, see
        :mod:`hipnn_pyg.export`).

        Args:
            species (torch.Tensor): Index of each atom's element in ``species``
                ``[num_atoms]``.
            graph (Graph): Pairs within the cutoff, with vectors and distances that
                carry the positions' autograd history.
            layer_graphs (list[Graph], optional): A pair list per interaction layer, to
                compute each layer only where it is needed (an MD engine's ghost atoms).
                (default: :obj:`None`, ``graph`` for every layer)
            layer_atoms (list[Tensor], optional): Per layer, the indices of the atoms
                whose features are needed: the on-site layers run on those only (the
                others' features are left zero). (default: :obj:`None`, all atoms)
        """
        graphs = layer_graphs if layer_graphs is not None else [graph] * len(self.interactions)
        # Edges grouped by centre once per pair list, for every interaction layer that
        # uses it (a pair list of radius_graph or an exported program's caller: not
        # checked again here).
        uses_envsum = any(layer.method == "envsum" for layer in self.interactions)
        layouts: dict[int, NeighbourLayout] = {}
        x = F.one_hot(species, len(self.species)).to(graph.vectors.dtype)
        features = [x]
        for interaction, atom_layers, pairs in zip(self.interactions, self.atom_layers,
                                                   graphs, strict=True):
            layout = None
            if uses_envsum:
                if id(pairs) not in layouts:
                    layouts[id(pairs)] = neighbour_layout(pairs.edge_index, species.numel(),
                                                          validate=False)
                layout = layouts[id(pairs)]
            x = interaction(x, pairs.edge_index, pairs.distances, layout, pairs.vectors)
            if layer_atoms is None:
                x = atom_layers(x)
            else:
                rows = layer_atoms[len(features) - 1]
                x = torch.zeros_like(x).index_copy(0, rows, atom_layers(x[rows]))
            features.append(x)
        return features

    def extra_repr(self) -> str:
        order = f", tensor_order={self.tensor_order}" if self.tensor_order else ""
        order += ", tensor_products=True" if self.tensor_products else ""
        return f"species={self.species}, cutoff={self.cutoff}{order}"
