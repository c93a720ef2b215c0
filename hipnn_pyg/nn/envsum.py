r"""The HIP-NN environment sum without per-edge feature tensors.

.. math::
    \mathrm{env}_{i\nu f} = \sum_{e = (j \to i)} s_{e\nu}\, x_{jf}

It is the ``envsum`` contraction of :mod:`~hipnn_pyg.nn.contraction` over the pairs
(each edge reads its neighbour's features and sums into its centre); its derivatives
are that module's ``sensesum`` and ``featsum`` (as in hippynn's
``envsum``/``sensesum``/``featsum``), so derivatives of any order (forces, then force
training) never build a ``[num_edges, num_sensitivities, num_features]`` tensor. Only
the edge inputs (sensitivities) and the atom features are kept for the backward.

The layout (:func:`neighbour_layout`) is built once per forward from the pair list and
shared by every layer and derivative: the groupings of the edges (by centre and by
neighbour for the plain sum, by either endpoint alone for the factorised HIP-NN-TS sum,
:mod:`~hipnn_pyg.nn.pairsum`) and any other per-forward value a layer keeps on it
(:meth:`NeighbourLayout.memo`).

Backends: ``"cpp"`` (compiled CPU operators; the default for CPU tensors when a
compiler is available), ``"triton"`` (Triton kernels; the default for CUDA tensors when
triton is installed) and ``"torch"`` (any device); see
:func:`~hipnn_pyg.nn.contraction.resolve_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from hipnn_pyg.nn.contraction import (
    EdgeGrouping,
    available_backends,
    contract,
    resolve_backend,
)

T = TypeVar("T")


class NeighbourLayout:
    r"""The pairs of one forward, grouped for the contractions.

    Attributes:
        edge_index (torch.Tensor): The pairs ``[2, E]`` (neighbour, centre), int64,
            contiguous.
        num_atoms (int): Number of atoms.
        num_edges (int): Number of edges.
        atoms (EdgeGrouping): Edges reading their neighbour and summing into their
            centre: the plain environment sum.
    """

    def __init__(self, edge_index: Tensor, num_atoms: int) -> None:
        # The kernels read raw int64 rows: a transposed or int32 pair list is copied once.
        self.edge_index = edge_index.to(torch.long).contiguous()
        self.num_atoms = num_atoms
        self.num_edges = self.edge_index.size(1)
        neighbours, centres = self.edge_index
        self.atoms = EdgeGrouping(neighbours, centres, num_atoms, num_atoms)
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, build: Callable[[], T]) -> T:
        r"""The value kept under ``key`` for this forward, built by ``build()`` on first
        use (the groupings below, the shared angular channels of HIP-NN-TS)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def edges(self, side: int) -> EdgeGrouping:
        r"""Edges as rows of their own, each reading itself and summing into its endpoint
        ``side`` (0: the neighbour, 1: the centre): the factorised HIP-NN-TS sums."""

        def build() -> EdgeGrouping:
            identity = torch.arange(self.num_edges, device=self.edge_index.device)
            return EdgeGrouping(identity, self.edge_index[side], self.num_atoms,
                                self.num_edges, gather_is_identity=True)

        return self.memo(f"edges_{side}", build)


def neighbour_layout(edge_index: Tensor, num_atoms: int, validate: bool = True
                     ) -> NeighbourLayout:
    r"""Groups the pairs, once per forward, for :func:`environment_sum`.

    Args:
        edge_index (torch.Tensor): Pairs ``[2, num_edges]`` (neighbour, centre).
        num_atoms (int): Number of atoms.
        validate (bool): Check that every index is an atom (one host synchronisation);
            pair lists of :func:`~hipnn_pyg.graph.radius_graph` need not be.
            (default: :obj:`True`)
    """
    if validate:
        _check_pairs(edge_index, num_atoms)
    return NeighbourLayout(edge_index, num_atoms)


def _check_pairs(edge_index: Tensor, num_atoms: int) -> None:
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integer atom indices, got {edge_index.dtype}")
    bad = (edge_index < 0) | (edge_index >= num_atoms)
    if edge_index.numel() and bool(bad.any()):
        index = int(edge_index[bad][0])
        raise ValueError(f"edge_index holds atom index {index} outside [0, {num_atoms})")


def environment_sum(
    features: Tensor,
    sensitivities: Tensor,
    layout: NeighbourLayout,
    backend: str | None = None,
) -> Tensor:
    r"""The environment :math:`\sum_{j \in \mathcal{N}(i)} s(r_{ij}) \otimes x_j`,
    differentiable to any order in both inputs.

    Args:
        features (torch.Tensor): Atom features ``[num_atoms, in_channels]``.
        sensitivities (torch.Tensor): Edge sensitivities ``[num_edges, num_sensitivities]``.
        layout (NeighbourLayout): From :func:`neighbour_layout` on the same pairs.
        backend (str, optional): ``"torch"``, ``"cpp"`` or ``"triton"``. (default:
            :obj:`None`, the compiled CPU kernel for CPU tensors when it is available,
            the Triton kernels for CUDA tensors when triton is, else ``"torch"``)

    Returns:
        torch.Tensor: ``[num_atoms, num_sensitivities, in_channels]``.
    """
    backend = check_operands(features, sensitivities, layout, backend)
    return contract("envsum", sensitivities, features, layout.atoms, backend)


def check_operands(
    features: Tensor, sensitivities: Tensor, layout: NeighbourLayout, backend: str | None
) -> str:
    r"""Checks that the inputs fit the layout; returns the resolved backend."""
    if sensitivities.size(0) != layout.num_edges or features.size(0) != layout.num_atoms:
        raise ValueError(
            f"layout is for {layout.num_atoms} atoms and {layout.num_edges} edges, got "
            f"features for {features.size(0)} atoms and sensitivities for "
            f"{sensitivities.size(0)} edges"
        )
    return resolve_backend(features, backend)


__all__ = [
    "NeighbourLayout",
    "neighbour_layout",
    "environment_sum",
    "check_operands",
    "available_backends",
    "resolve_backend",
]
