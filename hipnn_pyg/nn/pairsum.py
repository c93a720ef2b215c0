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

Both steps are contractions of :mod:`~hipnn_pyg.nn.contraction` over edges taken as
rows of their own (:meth:`~hipnn_pyg.nn.envsum.NeighbourLayout.edges`): the message
:math:`m` is a ``featsum`` with one edge per group, reading :math:`q` at the neighbour,
and :math:`t` an ``envsum`` of the angular factors and :math:`m` into the centre. Their
derivatives are the other contractions of the same groupings, on every backend.
"""

from __future__ import annotations

from torch import Tensor

from hipnn_pyg.nn.contraction import contract
from hipnn_pyg.nn.envsum import NeighbourLayout, check_operands


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
        backend (str, optional): ``"torch"``, ``"cpp"`` or ``"triton"``, as for
            :func:`~hipnn_pyg.nn.envsum.environment_sum`.

    Returns:
        torch.Tensor: ``[num_atoms, C, out_channels]``.
    """
    num_atoms, in_channels = features.shape
    num_sensitivities = sensitivities.size(1)
    backend = check_operands(features, sensitivities, layout, backend)
    projection = weight.view(num_sensitivities, in_channels, -1).transpose(0, 1)
    out_channels = weight.size(1)  # explicit: -1 cannot be inferred for 0 atoms
    projected = (features @ projection.reshape(in_channels, -1)).view(
        num_atoms, num_sensitivities, out_channels
    )
    # m[e] = Σ_ν s[e, ν] q[j(e), ν]: featsum with one edge per group, read at the neighbour
    messages = contract("featsum", projected, sensitivities, layout.edges(0), backend)
    # t[i] = Σ_{e at i} Y[e] ⊗ m[e]: envsum of the edges' own rows into their centre
    return contract("envsum", angular, messages, layout.edges(1), backend)
