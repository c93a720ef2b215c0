r"""A memory-lean environment sum for frozen sensitivities (inference, MD).

With the sensitivity's parameters fixed, the per-edge sensitivities
``[num_edges, num_sensitivities]`` are a function of the distances alone, so nothing
of that size needs to live between the forward and the backward, nor exist at once:
the forward computes them for the edges of one block of centre atoms at a time and
sums those atoms' environments; the backward of the forces recomputes them, by blocks
of neighbour atoms for the features' gradient and by chunks of edges for the
distances' (``[num_edges]``). Autograd would keep them from the forward and add their
gradient of the same size (two ``[num_edges, S]`` tensors per layer, 0.8 GB at 10⁵
atoms of water).

Derivatives of higher order (a Hessian of a frozen model, or force training of
unfrozen layers behind frozen sensitivities) recompute the layer with differentiable
operations, so they stay exact. The sensitivity's own parameters get no gradient, so
the path refuses sensitivities that could have one (:func:`check_frozen`); a model takes
it only when asked (:meth:`~hipnn_pyg.nn.HIPNNRepresentation.set_lean`, as the ASE
calculator does), and only on the compiled CPU kernel (:mod:`~hipnn_pyg.nn.paths`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hipnn_pyg.nn.contraction import KERNELS, contract
from hipnn_pyg.nn.envsum import NeighbourLayout, check_operands

# Edges per chunk of the distances' gradient: [chunk, S] and [chunk, S, F] stay small.
_CHUNK_EDGES = 1 << 14
# Edges per block of atoms of the environment and the features' gradient: [block, S] is
# 20 MB at 20 sensitivities in float32, and the kernel calls stay few.
_BLOCK_EDGES = 1 << 18


def trains(sensitivity: nn.Module) -> bool:
    r"""Whether ``sensitivity`` could receive a gradient in the current mode."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in sensitivity.parameters())


def check_frozen(sensitivity: nn.Module) -> None:
    r"""Raises where the lean path would drop a gradient the sensitivity could get."""
    if trains(sensitivity):
        raise ValueError("the lean inference path gives the sensitivities' parameters no "
                         "gradient, but they require one here: freeze them "
                         "(requires_grad_(False)) or switch lean inference off "
                         "(representation.set_lean(False))")


class _FrozenEnvSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, distances: Tensor, features: Tensor, sensitivity: nn.Module,
                layout: NeighbourLayout, backend: str) -> Tensor:
        ctx.save_for_backward(distances, features)
        ctx.sensitivity, ctx.layout, ctx.backend = sensitivity, layout, backend
        with torch.no_grad():
            if _by_blocks(layout, backend):
                return _blocked_envsum(distances, features, sensitivity, layout)
            return KERNELS[backend]["envsum"](sensitivity(distances), features, layout.atoms)

    @staticmethod
    def backward(ctx, grad: Tensor):
        distances, features = ctx.saved_tensors
        sensitivity, layout, backend = ctx.sensitivity, ctx.layout, ctx.backend
        if torch.is_grad_enabled():  # a graph for higher derivatives: recompute the layer
            with torch.enable_grad():
                # Aliases: partial derivatives in each input (features depend on the
                # distances through earlier layers), still on the inputs' graphs.
                inputs = (distances.view_as(distances), features.view_as(features))
                environment = contract("envsum", sensitivity(inputs[0]), inputs[1],
                                       layout.atoms, backend)
            wanted = [t for t, need in zip(inputs, ctx.needs_input_grad[:2], strict=True)
                      if need]
            found = iter(torch.autograd.grad(environment, wanted, grad, create_graph=True))
            grads = [next(found) if need else None for need in ctx.needs_input_grad[:2]]
            return grads[0], grads[1], None, None, None
        grad_distances = grad_features = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                grad_features = (
                    _blocked_featsum(grad, distances, sensitivity, layout)
                    if _by_blocks(layout, backend)
                    else KERNELS[backend]["featsum"](grad, sensitivity(distances), layout.atoms)
                )
        if ctx.needs_input_grad[0]:
            grad_distances = _distance_gradient(grad, distances, features, ctx)
        return grad_distances, grad_features, None, None, None


def _by_blocks(layout: NeighbourLayout, backend: str) -> bool:
    # Large pair lists on the compiled kernel: sensitivities by blocks of atoms.
    return backend == "cpp" and layout.num_edges > _BLOCK_EDGES


def _row_blocks(start: Tensor) -> list[tuple[int, int, int, int]]:
    # (first row, end row, first edge, end edge) of consecutive CSR rows holding about
    # _BLOCK_EDGES edges each (a row with more edges is a block of its own).
    num_edges = int(start[-1])
    cuts = torch.searchsorted(start, torch.arange(0, num_edges, _BLOCK_EDGES,
                                                  device=start.device), right=True) - 1
    rows = sorted(set(cuts.tolist()) | {0, start.numel() - 1})  # all rows, edgeless too
    offsets = start[rows].tolist()
    return [(rows[k], rows[k + 1], offsets[k], offsets[k + 1]) for k in range(len(rows) - 1)]


def _local_rows(start: Tensor, first: int, end: int, first_edge: int) -> Tensor:
    return start[first : end + 1] - first_edge


def _blocked_envsum(distances: Tensor, features: Tensor, sensitivity: nn.Module,
                    layout: NeighbourLayout) -> Tensor:
    # The environment of one block of centre atoms at a time, from their edges only.
    from hipnn_pyg.nn.csrc import load_extension

    order, start, edges = layout.atoms.scatter_csr
    neighbours = layout.atoms.gather
    out: Tensor | None = None
    for first, end, first_edge, end_edge in _row_blocks(start):
        block = edges[first_edge:end_edge]
        local = torch.arange(end - first, device=order.device)
        part = load_extension().envsum(
            sensitivity(distances[block]), features, local,
            _local_rows(start, first, end, first_edge),
            torch.arange(block.numel(), device=block.device), neighbours[block], end - first,
        )
        if out is None:
            out = features.new_empty(layout.num_atoms, *part.shape[1:])
        out.index_copy_(0, order[first:end], part)
    return out


def _blocked_featsum(grad: Tensor, distances: Tensor, sensitivity: nn.Module,
                     layout: NeighbourLayout) -> Tensor:
    # featsum(grad, s) for one block of neighbour atoms at a time, from their edges only.
    from hipnn_pyg.nn.csrc import load_extension

    start, grouped = layout.atoms.gather_csr
    centres = layout.atoms.scatter
    out = grad.new_empty(layout.num_atoms, grad.size(2))
    for first, end, first_edge, end_edge in _row_blocks(start):
        block = grouped[first_edge:end_edge]
        out[first:end] = load_extension().featsum(
            grad, sensitivity(distances[block]), _local_rows(start, first, end, first_edge),
            torch.arange(block.numel(), device=block.device), centres[block], end - first,
        )
    return out


def _distance_gradient(grad: Tensor, distances: Tensor, features: Tensor, ctx) -> Tensor:
    # d env / d r_e, edge chunk by edge chunk: the sensitivities' vector-Jacobian product
    # with sensesum(grad, x) (one [chunk, S] block at a time), in closed form where the
    # sensitivity has one (distance_vjp), else by autograd through a recomputation.
    neighbours, centres = ctx.layout.edge_index
    sensitivity = ctx.sensitivity
    out = torch.empty_like(distances)
    for start in range(0, distances.numel(), _CHUNK_EDGES):
        part = slice(start, start + _CHUNK_EDGES)
        with torch.no_grad():
            grad_values = _edge_sensesum(grad, features, neighbours[part], centres[part],
                                         ctx.backend)
        if hasattr(sensitivity, "distance_vjp"):
            out[part] = sensitivity.distance_vjp(distances[part].detach(), grad_values)
            continue
        with torch.enable_grad():
            chunk = distances[part].detach().requires_grad_(True)
            values = sensitivity(chunk)
        (out[part],) = torch.autograd.grad(values, chunk, grad_values)
    return out


def _edge_sensesum(grad: Tensor, features: Tensor, neighbours: Tensor, centres: Tensor,
                   backend: str) -> Tensor:
    # out[e, ν] = Σ_f grad[i(e), ν, f] x[j(e), f] over the given edges only.
    if backend == "cpp":
        from hipnn_pyg.nn.csrc import load_extension

        return load_extension().sensesum(grad.contiguous(), features.contiguous(),
                                         neighbours, centres)
    return torch.einsum("evf,ef->ev", grad[centres], features[neighbours])  # tests only


def frozen_environment_sum(
    features: Tensor,
    distances: Tensor,
    sensitivity: nn.Module,
    layout: NeighbourLayout,
    backend: str | None = None,
) -> Tensor:
    r""":func:`~hipnn_pyg.nn.envsum.environment_sum` of ``sensitivity(distances)``,
    keeping only ``distances`` and ``features`` for the backward. ``sensitivity`` must
    not need gradients (see :func:`trains`).

    Returns:
        torch.Tensor: ``[num_atoms, num_sensitivities, in_channels]``.
    """
    check_frozen(sensitivity)
    backend = check_operands(features, distances.unsqueeze(-1), layout, backend)
    return _FrozenEnvSum.apply(distances, features, sensitivity, layout, backend)
