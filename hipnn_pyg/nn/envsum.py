r"""The HIP-NN environment sum without per-edge feature tensors.

.. math::
    \mathrm{env}_{i\nu f} = \sum_{e = (j \to i)} s_{e\nu}\, x_{jf}

Its derivatives are two more contractions over the same edges, and the three close
under differentiation (as in hippynn's ``envsum``/``sensesum``/``featsum``):

* ``envsum(s, x)[i, ν, f] = Σ_e s[e, ν] x[j, f]`` (grouped by centre ``i``),
* ``sensesum(g, x)[e, ν] = Σ_f g[i, ν, f] x[j, f]`` (one value per edge),
* ``featsum(g, s)[j, f] = Σ_e Σ_ν s[e, ν] g[i, ν, f]`` (grouped by neighbour ``j``).

Each is an :class:`torch.autograd.Function` whose backward calls the others, so
derivatives of any order (forces, then force training) never build a
``[num_edges, num_sensitivities, num_features]`` tensor. Only the edge inputs
(sensitivities) and the atom features are kept for the backward.

The layout (:func:`neighbour_layout`) is built once per forward from the pair list and
shared by every layer: atoms are grouped by neighbour count into a few degree classes
(counts within 25% of each other), each class laid out as a ``[atoms, width]`` block
of edge slots, so one batched matrix product per class does the work. Padding stays
within 25% of the edge count whatever the batch mixes (a crystal beside molecules
pads only its own class), unlike a single block padded to the largest neighbour count.

Backends: ``"torch"`` (the class blocks above, any device) and ``"cpp"`` (a CPU
kernel over the same edges in CSR order, threaded by torch's ``at::parallel_for``,
compiled on first use by :func:`torch.utils.cpp_extension.load`;
:func:`environment_sum` falls back to ``"torch"`` when no compiler is available).
GPU kernels would plug in at :func:`_backend_ops`; on GPU the ``"torch"`` backend
runs but is neither tested nor benchmarked here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

# Bound on the edge slots one batched product touches, so transient gathers stay small
# (4096 * 64 features * 8 bytes = 2 MiB) whatever the system size.
CHUNK_SLOTS = 4096


class DegreeBlock(NamedTuple):
    r"""Atoms sharing one padded width.

    Attributes:
        atoms (torch.Tensor): Atom indices ``[n]``.
        edges (torch.Tensor): Edge index per slot ``[n, width]``; padding slots hold
            ``num_edges`` (a zero row appended to the sensitivities).
        neighbours (torch.Tensor): Neighbour atom per slot ``[n, width]``; padding
            slots hold 0 (their sensitivity is zero).
    """

    atoms: Tensor
    edges: Tensor
    neighbours: Tensor


class NeighbourLayout:
    r"""Edges grouped by centre atom, built by :func:`neighbour_layout`.

    Attributes:
        edge_index (torch.Tensor): The pairs ``[2, E]`` (neighbour, centre).
        num_atoms (int): Number of atoms.
        num_edges (int): Number of edges.
        atom_order (torch.Tensor): Atoms sorted by degree class ``[num_atoms]``
            (computed on first use, like ``row_start`` and ``edge_order``).
        row_start (torch.Tensor): CSR offsets ``[num_atoms + 1]`` of each atom of
            ``atom_order`` into ``edge_order``.
        edge_order (torch.Tensor): Edges sorted by centre in ``atom_order`` ``[E]``.
        centre_rows (tuple): The compiled kernels' CSR by centre (see the property).
        neighbour_start (torch.Tensor): CSR offsets ``[num_atoms + 1]`` of each atom
            (as neighbour) into ``by_neighbour``.
        by_neighbour (torch.Tensor): Edges sorted by neighbour ``[E]``.
        blocks (tuple[DegreeBlock, ...]): Degree classes, split into chunks of at most
            :data:`CHUNK_SLOTS` slots; built on first use (one host synchronisation),
            needed by the ``"torch"`` backend only.
    """

    def __init__(self, edge_index: Tensor, num_atoms: int) -> None:
        # The kernels read raw int64 rows: a transposed or int32 pair list is copied once.
        edge_index = edge_index.to(torch.long).contiguous()
        neighbours, centres = edge_index
        self.edge_index = edge_index
        self.num_atoms = num_atoms
        self.num_edges = centres.numel()
        self.degree = torch.bincount(centres, minlength=num_atoms)
        self.by_neighbour = torch.argsort(neighbours, stable=True)
        self.neighbour_start = _offsets(torch.bincount(neighbours, minlength=num_atoms))

    @functools.cached_property
    def atom_class(self) -> Tensor:
        widths = torch.tensor(_WIDTHS, device=self.degree.device)
        # Class k holds degrees in (widths[k-2], widths[k-1]]; class 0 is degree 0.
        return torch.where(self.degree > 0, torch.bucketize(self.degree, widths) + 1, 0)

    @functools.cached_property
    def atom_order(self) -> Tensor:
        return torch.argsort(self.atom_class, stable=True)

    @functools.cached_property
    def rank(self) -> Tensor:
        rank = torch.empty_like(self.atom_order)
        rank[self.atom_order] = torch.arange(self.num_atoms, device=rank.device)
        return rank

    @functools.cached_property
    def edge_order(self) -> Tensor:
        return torch.argsort(self.rank[self.edge_index[1]], stable=True)

    @functools.cached_property
    def row_start(self) -> Tensor:
        return _offsets(self.degree[self.atom_order])

    @functools.cached_property
    def centre_rows(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""A CSR of the edges by centre in any atom order, for the compiled kernels:
        ``(atom order, offsets, edges)``. Pair lists already sorted by centre (those of
        :func:`~hipnn_pyg.graph.radius_graph`) need no sort: the identity order."""
        centres = self.edge_index[1]
        if centres.device.type == "cpu" and bool((centres[1:] >= centres[:-1]).all()):
            device = centres.device
            return (torch.arange(self.num_atoms, device=device), _offsets(self.degree),
                    torch.arange(self.num_edges, device=device))
        return self.atom_order, self.row_start, self.edge_order

    @functools.cached_property
    def blocks(self) -> tuple[DegreeBlock, ...]:
        neighbours, centres = self.edge_index
        device = centres.device
        class_sizes = torch.bincount(self.atom_class, minlength=len(_WIDTHS) + 1)
        class_edges = torch.zeros_like(class_sizes).index_add_(0, self.atom_class, self.degree)
        sizes = torch.stack([class_sizes, class_edges]).tolist()  # the one host sync

        sorted_centres = centres[self.edge_order]
        row = self.rank[sorted_centres]
        slot = torch.arange(self.num_edges, device=device) - self.row_start[row]
        blocks: list[DegreeBlock] = []
        atom_start, edge_start = sizes[0][0], 0
        for k in range(1, len(_WIDTHS) + 1):
            count, edges = sizes[0][k], sizes[1][k]
            if count == 0:
                continue
            width = _WIDTHS[k - 1]
            edge_slice = slice(edge_start, edge_start + edges)
            rows, cols = row[edge_slice] - atom_start, slot[edge_slice]
            slot_edges = torch.full((count, width), self.num_edges, device=device)
            slot_edges[rows, cols] = self.edge_order[edge_slice]
            slot_neighbours = torch.zeros((count, width), dtype=torch.long, device=device)
            slot_neighbours[rows, cols] = neighbours[self.edge_order[edge_slice]]
            atoms = self.atom_order[atom_start : atom_start + count]
            step = max(1, CHUNK_SLOTS // width)
            for first in range(0, count, step):
                part = slice(first, first + step)
                blocks.append(
                    DegreeBlock(atoms[part], slot_edges[part], slot_neighbours[part])
                )
            atom_start += count
            edge_start += edges
        return tuple(blocks)


def _offsets(counts: Tensor) -> Tensor:
    start = counts.new_zeros(counts.numel() + 1)
    torch.cumsum(counts, 0, out=start[1:])
    return start


def _class_widths(limit: int) -> list[int]:
    # Widths 1..8, then growing by 25%: padding is below 25% of any atom's degree.
    widths = list(range(1, 9))
    while widths[-1] < limit:
        widths.append(int(math.ceil(widths[-1] * 1.25)))
    return widths


# Degrees up to 2^24 neighbours, a fixed table: class sizes need no host sync to define.
_WIDTHS = _class_widths(1 << 24)


def neighbour_layout(edge_index: Tensor, num_atoms: int, validate: bool = True
                     ) -> NeighbourLayout:
    r"""Groups the pairs by centre atom, once per forward, for :func:`environment_sum`.

    No host synchronisation without ``validate``: the ``"torch"`` backend's degree
    blocks are built (with one) when first used.

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


# --- "torch" backend: one batched matmul per degree block -----------------------------


def _pad_edges(values: Tensor) -> Tensor:
    # A zero row at index num_edges, where padding slots point.
    return torch.cat([values, values.new_zeros(1, values.size(1))])


def _envsum_torch(sensitivities: Tensor, features: Tensor, layout: NeighbourLayout) -> Tensor:
    padded = _pad_edges(sensitivities)
    out = features.new_zeros(layout.num_atoms, sensitivities.size(1), features.size(1))
    for block in layout.blocks:
        product = torch.bmm(padded[block.edges].transpose(1, 2), features[block.neighbours])
        out.index_copy_(0, block.atoms, product)
    return out


def _sensesum_torch(environment: Tensor, features: Tensor, layout: NeighbourLayout) -> Tensor:
    # Padding slots write into the extra row num_edges, dropped at the end.
    out = features.new_zeros(layout.num_edges + 1, environment.size(1))
    for block in layout.blocks:
        product = torch.bmm(features[block.neighbours], environment[block.atoms].transpose(1, 2))
        out.index_copy_(0, block.edges.flatten(), product.flatten(0, 1))
    return out[:-1]


def _featsum_torch(environment: Tensor, sensitivities: Tensor, layout: NeighbourLayout) -> Tensor:
    # Padding slots have zero sensitivity: they add zeros to atom 0.
    padded = _pad_edges(sensitivities)
    out = environment.new_zeros(layout.num_atoms, environment.size(2))
    for block in layout.blocks:
        product = torch.bmm(padded[block.edges], environment[block.atoms])
        out.index_add_(0, block.neighbours.flatten(), product.flatten(0, 1))
    return out


# --- "cpp" backend: OpenMP loops over the CSR order of the same layout ----------------


def _envsum_cpp(sensitivities: Tensor, features: Tensor, layout: NeighbourLayout) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    neighbours, centres = layout.edge_index
    return load_extension().envsum(
        sensitivities.contiguous(), features.contiguous(), *layout.centre_rows, neighbours,
        layout.num_atoms,
    )


def _sensesum_cpp(environment: Tensor, features: Tensor, layout: NeighbourLayout) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    neighbours, centres = layout.edge_index
    return load_extension().sensesum(
        environment.contiguous(), features.contiguous(), neighbours, centres,
    )


def _featsum_cpp(environment: Tensor, sensitivities: Tensor, layout: NeighbourLayout) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    neighbours, centres = layout.edge_index
    return load_extension().featsum(
        environment.contiguous(), sensitivities.contiguous(), layout.neighbour_start,
        layout.by_neighbour, centres, layout.num_atoms,
    )


_Op = Callable[[Tensor, Tensor, NeighbourLayout], Tensor]
_BACKENDS: dict[str, tuple[_Op, _Op, _Op]] = {
    "torch": (_envsum_torch, _sensesum_torch, _featsum_torch),
    "cpp": (_envsum_cpp, _sensesum_cpp, _featsum_cpp),
}


def _backend_ops(backend: str) -> tuple[_Op, _Op, _Op]:
    # The dispatch point for device kernels (e.g. Triton on CUDA): none is shipped.
    return _BACKENDS[backend]


# --- autograd: each op's derivatives are the other two ops ----------------------------


class EnvSum(torch.autograd.Function):
    r"""``env[i, ν, f] = Σ_{e=(j→i)} s[e, ν] x[j, f]``."""

    @staticmethod
    def forward(ctx, sensitivities: Tensor, features: Tensor, layout, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(sensitivities if ctx.needs_input_grad[1] else None,
                              features if ctx.needs_input_grad[0] else None)
        ctx.layout, ctx.backend = layout, backend
        return _backend_ops(backend)[0](sensitivities, features, layout)

    @staticmethod
    def backward(ctx, grad: Tensor):
        sensitivities, features = ctx.saved_tensors
        grad_s = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_s = SenseSum.apply(grad, features, ctx.layout, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_x = FeatSum.apply(grad, sensitivities, ctx.layout, ctx.backend)
        return grad_s, grad_x, None, None


class SenseSum(torch.autograd.Function):
    r"""``out[e, ν] = Σ_f env[i, ν, f] x[j, f]`` for each edge ``e = (j → i)``."""

    @staticmethod
    def forward(ctx, environment: Tensor, features: Tensor, layout, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(environment if ctx.needs_input_grad[1] else None,
                              features if ctx.needs_input_grad[0] else None)
        ctx.layout, ctx.backend = layout, backend
        return _backend_ops(backend)[1](environment, features, layout)

    @staticmethod
    def backward(ctx, grad: Tensor):
        environment, features = ctx.saved_tensors
        grad_env = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_env = EnvSum.apply(grad, features, ctx.layout, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_x = FeatSum.apply(environment, grad, ctx.layout, ctx.backend)
        return grad_env, grad_x, None, None


class FeatSum(torch.autograd.Function):
    r"""``out[j, f] = Σ_{e=(j→i)} Σ_ν s[e, ν] env[i, ν, f]`` (grouped by neighbour)."""

    @staticmethod
    def forward(ctx, environment: Tensor, sensitivities: Tensor, layout, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(environment if ctx.needs_input_grad[1] else None,
                              sensitivities if ctx.needs_input_grad[0] else None)
        ctx.layout, ctx.backend = layout, backend
        return _backend_ops(backend)[2](environment, sensitivities, layout)

    @staticmethod
    def backward(ctx, grad: Tensor):
        environment, sensitivities = ctx.saved_tensors
        grad_env = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_env = EnvSum.apply(sensitivities, grad, ctx.layout, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_s = SenseSum.apply(environment, grad, ctx.layout, ctx.backend)
        return grad_env, grad_s, None, None


def available_backends() -> list[str]:
    r"""Backends usable here: ``"torch"`` always, ``"cpp"`` once it compiles."""
    from hipnn_pyg.nn.csrc import extension_available

    return ["torch"] + (["cpp"] if extension_available() else [])


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
        backend (str, optional): ``"torch"`` or ``"cpp"``. (default: :obj:`None`, the
            compiled CPU kernel for CPU tensors when it is available, else ``"torch"``)

    Returns:
        torch.Tensor: ``[num_atoms, num_sensitivities, in_channels]``.
    """
    backend = _check(features, sensitivities, layout, backend)
    return EnvSum.apply(sensitivities, features, layout, backend)


def _check(
    features: Tensor, sensitivities: Tensor, layout: NeighbourLayout, backend: str | None
) -> str:
    # The inputs fit the layout; the backend, chosen when not given.
    if sensitivities.size(0) != layout.num_edges or features.size(0) != layout.num_atoms:
        raise ValueError(
            f"layout is for {layout.num_atoms} atoms and {layout.num_edges} edges, got "
            f"features for {features.size(0)} atoms and sensitivities for "
            f"{sensitivities.size(0)} edges"
        )
    return resolve_backend(features, backend)


def resolve_backend(features: Tensor, backend: str | None) -> str:
    r"""``backend``, checked; or, when :obj:`None`, the compiled CPU kernel for CPU
    tensors when it is available, else ``"torch"``.

    Raises:
        ValueError: an unknown backend, or ``"cpp"`` for tensors not on the CPU.
        KernelBuildError: ``"cpp"`` asked for where the kernels did not build (why).
    """
    if backend is None:
        return "cpp" if features.device.type == "cpu" and "cpp" in available_backends() \
            else "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"unknown envsum backend {backend!r}; choose from {list(_BACKENDS)}")
    if backend == "cpp":
        if features.device.type != "cpu":
            raise ValueError(f"envsum backend 'cpp' runs on the CPU only, but the tensors are "
                             f"on {features.device}; use backend='torch' (or None)")
        from hipnn_pyg.nn.csrc import load_extension

        load_extension()  # raises with the build's error when there is no kernel
    return backend


__all__ = [
    "DegreeBlock",
    "NeighbourLayout",
    "neighbour_layout",
    "environment_sum",
    "available_backends",
    "EnvSum",
    "SenseSum",
    "FeatSum",
]
