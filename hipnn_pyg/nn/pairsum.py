r"""The HIP-NN-TS environment, factorised over its angular channels.

Every channel's sensitivity is the radial one times an angular factor,
:math:`s_{ec\nu} = Y_{ec}\, s_{e\nu}`, so the contracted environment

.. math::
    t_{ico} = \sum_{e=(j \to i)} Y_{ec}\, m_{eo}, \qquad
    m_{eo} = \sum_\nu s_{e\nu}\, q_{j\nu o}, \qquad
    q_{j\nu o} = \sum_f V_{\nu f o}\, x_{jf},

costs per edge :math:`S \cdot out + C \cdot out` instead of the :math:`C \cdot S \cdot in`
of summing every channel (and per atom one product with :math:`V`, not :math:`C`): a
HIP-NN-TS training step costs 1.2-1.5x a HIP-NN one (``scripts/bench_speed.py``), where
the stacked channels cost 4x. The price is one ``[num_edges, out]`` message per layer,
kept for the backward; ``[num_edges, S, out]`` is never built.

The edge messages :math:`m` come from three contractions that close under
differentiation, like those of :mod:`~hipnn_pyg.nn.envsum`:

* ``message(s, q)[e, o] = Σ_ν s[e, ν] q[a, ν, o]``,
* ``gather(s, g)[a, ν, o] = Σ_{e at a} s[e, ν] g[e, o]`` (edges grouped by ``a``),
* ``sense(g, q)[e, ν] = Σ_o g[e, o] q[a, ν, o]``,

where ``a`` is one endpoint of edge ``e``: :math:`m` is a message from the neighbour,
and :math:`t` = gather at the centre of the angular factors and :math:`m`.

On CPU they run on the compiled kernels of :mod:`~hipnn_pyg.nn.envsum` (featsum,
envsum and sensesum with one edge per group or identity indices); the ``"torch"``
backend loops over chunks of edges, so its transients stay bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hipnn_pyg.nn.envsum import CHUNK_SLOTS, NeighbourLayout, _check

# --- index sets that make envsum's kernels compute the per-edge contractions ----------


class _EdgeIndices:
    r"""One endpoint of every edge (``side`` 0: the neighbour, 1: the centre) and the
    edges grouped by it (CSR over atoms in ``order``)."""

    def __init__(self, layout: NeighbourLayout, side: int) -> None:
        device = layout.edge_index.device
        self.endpoint = layout.edge_index[side]
        self.edges = torch.arange(layout.num_edges, device=device)
        self.edge_start = torch.arange(layout.num_edges + 1, device=device)
        if side == 0:
            self.order = torch.arange(layout.num_atoms, device=device)
            self.start, self.grouped = layout.neighbour_start, layout.by_neighbour
        else:
            self.order, self.start, self.grouped = layout.centre_rows
        self.num_atoms, self.num_edges = layout.num_atoms, layout.num_edges


def _indices(layout: NeighbourLayout, side: int) -> _EdgeIndices:
    # Kept on the layout: built once per forward, shared by every layer and derivative.
    key = f"_pair_indices_{side}"
    found = layout.__dict__.get(key)
    if found is None:
        found = layout.__dict__[key] = _EdgeIndices(layout, side)
    return found


def _message_cpp(s: Tensor, q: Tensor, ix: _EdgeIndices) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    # featsum with one edge per group: out[e] = Σ_ν s[e, ν] q[a(e), ν, :].
    return load_extension().featsum(q.contiguous(), s.contiguous(), ix.edge_start, ix.edges,
                                    ix.endpoint, ix.num_edges)


def _gather_cpp(s: Tensor, g: Tensor, ix: _EdgeIndices) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    # envsum over each atom's edges, the edge's own row of g as its "features".
    return load_extension().envsum(s.contiguous(), g.contiguous(), ix.order, ix.start,
                                   ix.grouped, ix.edges, ix.num_atoms)


def _sense_cpp(g: Tensor, q: Tensor, ix: _EdgeIndices) -> Tensor:
    from hipnn_pyg.nn.csrc import load_extension

    # sensesum with q read at the endpoint and g at the edge itself.
    return load_extension().sensesum(q.contiguous(), g.contiguous(), ix.edges, ix.endpoint)


def _chunks(ix: _EdgeIndices, width: int) -> list[slice]:
    step = max(1, CHUNK_SLOTS // max(width, 1))
    return [slice(start, start + step) for start in range(0, ix.num_edges, step)]


def _message_torch(s: Tensor, q: Tensor, ix: _EdgeIndices) -> Tensor:
    out = q.new_empty(ix.num_edges, q.size(2))
    for part in _chunks(ix, q.size(1)):
        out[part] = torch.bmm(s[part].unsqueeze(1), q[ix.endpoint[part]]).squeeze(1)
    return out


def _gather_torch(s: Tensor, g: Tensor, ix: _EdgeIndices) -> Tensor:
    out = g.new_zeros(ix.num_atoms, s.size(1), g.size(1))
    for part in _chunks(ix, s.size(1)):
        out.index_add_(0, ix.endpoint[part], s[part].unsqueeze(2) * g[part].unsqueeze(1))
    return out


def _sense_torch(g: Tensor, q: Tensor, ix: _EdgeIndices) -> Tensor:
    out = g.new_empty(ix.num_edges, q.size(1))
    for part in _chunks(ix, q.size(1)):
        out[part] = torch.bmm(q[ix.endpoint[part]], g[part].unsqueeze(2)).squeeze(2)
    return out


_BACKENDS = {
    "torch": (_message_torch, _gather_torch, _sense_torch),
    "cpp": (_message_cpp, _gather_cpp, _sense_cpp),
}


class PairMessage(torch.autograd.Function):
    r"""``m[e, o] = Σ_ν s[e, ν] q[a, ν, o]``."""

    @staticmethod
    def forward(ctx, s: Tensor, q: Tensor, ix: _EdgeIndices, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(s if ctx.needs_input_grad[1] else None,
                              q if ctx.needs_input_grad[0] else None)
        ctx.ix, ctx.backend = ix, backend
        return _BACKENDS[backend][0](s, q, ix)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, q = ctx.saved_tensors
        grad_s = grad_q = None
        if ctx.needs_input_grad[0]:
            grad_s = PairSense.apply(grad, q, ctx.ix, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_q = PairGather.apply(s, grad, ctx.ix, ctx.backend)
        return grad_s, grad_q, None, None


class PairGather(torch.autograd.Function):
    r"""``out[a, ν, o] = Σ_{e at a} s[e, ν] g[e, o]``."""

    @staticmethod
    def forward(ctx, s: Tensor, g: Tensor, ix: _EdgeIndices, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(s if ctx.needs_input_grad[1] else None,
                              g if ctx.needs_input_grad[0] else None)
        ctx.ix, ctx.backend = ix, backend
        return _BACKENDS[backend][1](s, g, ix)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, g = ctx.saved_tensors
        grad_s = grad_g = None
        if ctx.needs_input_grad[0]:
            grad_s = PairSense.apply(g, grad, ctx.ix, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_g = PairMessage.apply(s, grad, ctx.ix, ctx.backend)
        return grad_s, grad_g, None, None


class PairSense(torch.autograd.Function):
    r"""``out[e, ν] = Σ_o g[e, o] q[a, ν, o]``."""

    @staticmethod
    def forward(ctx, g: Tensor, q: Tensor, ix: _EdgeIndices, backend: str) -> Tensor:
        # Each gradient needs the other input: keep only those that will be asked for.
        ctx.save_for_backward(g if ctx.needs_input_grad[1] else None,
                              q if ctx.needs_input_grad[0] else None)
        ctx.ix, ctx.backend = ix, backend
        return _BACKENDS[backend][2](g, q, ix)

    @staticmethod
    def backward(ctx, grad: Tensor):
        g, q = ctx.saved_tensors
        grad_g = grad_q = None
        if ctx.needs_input_grad[0]:
            grad_g = PairMessage.apply(grad, q, ctx.ix, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_q = PairGather.apply(grad, g, ctx.ix, ctx.backend)
        return grad_g, grad_q, None, None


def factorised_environment_sum(
    features: Tensor,
    sensitivities: Tensor,
    angular: Tensor,
    weight: Tensor,
    layout: NeighbourLayout,
    backend: str | None = None,
) -> Tensor:
    r"""The contracted environment :math:`t_{ico}` of channels whose sensitivities are
    ``angular[e, c] * sensitivities[e, ν]``: the same as summing the stacked channels
    with :func:`~hipnn_pyg.nn.envsum.environment_sum` and contracting with ``weight``.

    Args:
        features (torch.Tensor): Atom features ``[num_atoms, in_channels]``.
        sensitivities (torch.Tensor): Radial sensitivities ``[num_edges, S]``.
        angular (torch.Tensor): Angular factors ``[num_edges, C]``.
        weight (torch.Tensor): Interaction weights ``[S * in_channels, out_channels]``.
        layout (NeighbourLayout): From :func:`~hipnn_pyg.nn.envsum.neighbour_layout`.
        backend (str, optional): ``"torch"`` or ``"cpp"``, as for
            :func:`~hipnn_pyg.nn.envsum.environment_sum`.

    Returns:
        torch.Tensor: ``[num_atoms, C, out_channels]``.
    """
    num_atoms, in_channels = features.shape
    num_sensitivities = sensitivities.size(1)
    backend = _check(features, sensitivities, layout, backend)
    projection = weight.view(num_sensitivities, in_channels, -1).transpose(0, 1)
    projected = (features @ projection.reshape(in_channels, -1)).view(
        num_atoms, num_sensitivities, -1
    )
    messages = PairMessage.apply(sensitivities, projected, _indices(layout, 0), backend)
    return PairGather.apply(angular, messages, _indices(layout, 1), backend)
