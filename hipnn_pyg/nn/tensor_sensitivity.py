r"""Tensor sensitivities of HIP-NN-TS: angular channels of the environment sum.

From `"Lightweight and effective tensor sensitivity for atomistic neural networks"
<https://arxiv.org/abs/2212.03195>`_ (Chigaev et al., J. Chem. Phys. 158, 184108, 2023).
Each pair's radial sensitivities :math:`s_\nu(r_{ij})` are multiplied by the
components of :math:`\hat{r}_{ij}` (order 1, three channels) and of the traceless
:math:`\hat{r}\hat{r}^\top - I/3` (order 2, five channels). All channels go through one
environment sum and meet the same interaction weights; what comes out of the
order-:math:`l` channels is a set of :math:`2l + 1` components per feature, which
rotate among themselves, so their norm is an invariant.

The five order-2 components are written in an orthonormal basis of the traceless
symmetric matrices (Frobenius inner product), so rotations act on them by an
orthogonal matrix and the plain sum of squares is the matrix's Frobenius norm
(hippynn keeps five raw entries and corrects the sum of squares instead).

:func:`product_invariants` adds the many-body invariants of hippynn's HIP-HOP-NN
(`lanl/hippynn#139 <https://github.com/lanl/hippynn/pull/139>`_) for order 2: products
of the vector :math:`v` and quadrupole :math:`Q` of one feature, which couple the
angles of three or four neighbours where the norms see two.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Channels per tensor order: 1 (radial), + 3 (vector), + 5 (traceless quadrupole).
CHANNELS = {0: 1, 1: 4, 2: 9}
#: Channels of each order ``l >= 1`` (3 and 5), in order after the radial one.
ORDER_WIDTHS = (3, 5)

_SQRT2 = math.sqrt(2.0)
_SQRT6 = math.sqrt(6.0)
#: Invariants of :func:`product_invariants`: v^T Q v, tr Q^3 and |Q v|^2.
NUM_PRODUCTS = 3


def check_tensor_order(tensor_order: int) -> int:
    r"""Validates ``tensor_order`` (0, 1 or 2) and returns it as an :obj:`int`."""
    if isinstance(tensor_order, bool) or int(tensor_order) != tensor_order \
            or int(tensor_order) not in CHANNELS:
        raise ValueError(f"tensor_order must be 0, 1 or 2, got {tensor_order!r}")
    return int(tensor_order)


def check_tensor_products(tensor_products: bool, tensor_order: int) -> bool:
    r"""Validates ``tensor_products``: a :obj:`bool` (a string such as ``"false"`` from a
    command line would read as true), and true only with ``tensor_order=2``."""
    if not isinstance(tensor_products, bool):
        raise ValueError(f"tensor_products must be true or false, got {tensor_products!r}")
    if tensor_products and tensor_order != 2:
        raise ValueError("tensor_products needs tensor_order=2 (the vector and quadrupole "
                         f"channels), got tensor_order={tensor_order}")
    return tensor_products


def angular_channels(unit_vectors: Tensor, tensor_order: int) -> Tensor:
    r"""The angular factors of every channel, ``[num_edges, CHANNELS[tensor_order]]``:
    ``1``; ``x, y, z``; and the orthonormal traceless components
    :math:`\sqrt{2}\,xy, \sqrt{2}\,xz, \sqrt{2}\,yz, (x^2 - y^2)/\sqrt{2},
    (3z^2 - 1)/\sqrt{6}` of :math:`\hat{r}\hat{r}^\top - I/3` (for unit vectors)."""
    ones = unit_vectors.new_ones(unit_vectors.size(0), 1)
    if tensor_order == 0:
        return ones
    parts = [ones, unit_vectors]
    if tensor_order == 2:
        x, y, z = unit_vectors.unbind(-1)
        parts.append(torch.stack([
            _SQRT2 * x * y, _SQRT2 * x * z, _SQRT2 * y * z,
            (x * x - y * y) / _SQRT2, (3.0 * z * z - 1.0) / _SQRT6,
        ], dim=-1))
    return torch.cat(parts, dim=-1)


def shared_angular_channels(
    vectors: Tensor, distances: Tensor, tensor_order: int, layout: object | None = None
) -> Tensor:
    r""":func:`angular_channels` of the pairs, computed once for all the layers of one
    forward: kept on ``layout`` (the :class:`~hipnn_pyg.nn.envsum.NeighbourLayout`
    those layers share, :meth:`~hipnn_pyg.nn.envsum.NeighbourLayout.memo`) and reused
    while the same ``vectors`` and ``distances`` come (one set of angular terms, and of
    their derivatives, per forward instead of one per layer)."""

    def build() -> tuple[Tensor, Tensor, Tensor]:
        return vectors, distances, angular_channels(vectors / distances.unsqueeze(-1),
                                                    tensor_order)

    if layout is None:
        return build()[2]
    kept_vectors, kept_distances, angular = layout.memo(f"angular_{tensor_order}", build)
    if kept_vectors is vectors and kept_distances is distances:
        return angular
    return build()[2]


def tensor_sensitivities(
    sensitivities: Tensor, vectors: Tensor, distances: Tensor, tensor_order: int
) -> Tensor:
    r"""Stacks the radial sensitivities ``[num_edges, S]`` with their angular channels:
    ``[num_edges, C * S]``, channel-major (the ``S`` radial values first).

    Args:
        sensitivities (torch.Tensor): ``[num_edges, S]``.
        vectors (torch.Tensor): Pair vectors ``[num_edges, 3]`` (Å).
        distances (torch.Tensor): Their lengths ``[num_edges]`` (nonzero: pairs below
            the model's ``min_distance`` are refused before this point).
        tensor_order (int): 0, 1 or 2.
    """
    if tensor_order == 0:
        return sensitivities
    angular = angular_channels(vectors / distances.unsqueeze(-1), tensor_order)
    return (angular.unsqueeze(-1) * sensitivities.unsqueeze(1)).flatten(1)


def tensor_invariants(
    components: Tensor, tensor_order: int, epsilon: float
) -> tuple[Tensor, Tensor]:
    r"""Splits the contracted channels ``[num_atoms, C, out_channels]`` into the radial
    part ``[num_atoms, out_channels]`` and the norms :math:`y_l = \sqrt{\sum_m t_m^2 +
    \epsilon}` of the order-1 and order-2 parts, ``[num_atoms, tensor_order,
    out_channels]``; :math:`\epsilon` keeps the gradient finite where a part vanishes
    (an atom alone, or in a perfectly symmetric site)."""
    radial, angular = components.split([1, components.size(1) - 1], dim=1)
    return radial.squeeze(1), _TensorNorms.apply(angular, tensor_order, epsilon)


def product_invariants(components: Tensor, epsilon: float) -> Tensor:
    r"""The product invariants ``[num_atoms, 3, out_channels]`` of the contracted
    channels ``[num_atoms, 9, out_channels]`` of order 2: for every
    feature, with :math:`v` its three order-1 components and :math:`Q` the traceless
    symmetric matrix of its five order-2 ones,

    .. math::
        \frac{v^\top Q v}{s^2}, \quad \frac{\operatorname{tr} Q^3}{s^2}, \quad
        \frac{|Q v|^2}{s^3}, \qquad s^2 = |v|^2 + |Q|_F^2 + \epsilon.

    The divisions make each homogeneous of degree one in the features, as the norms
    of :func:`tensor_invariants` are, so neither grows faster than the other with the
    features' scale; :math:`\epsilon` keeps them smooth where both parts vanish.
    """
    # Elementwise on [A, O] slices: fewer and cheaper operations than batched 3 x 3
    # matrix products or pairwise outer products (force training differentiates this
    # twice, and every operation adds to each pass).
    vx, vy, vz, q1, q2, q3, q4, q5 = components[:, 1:].unbind(1)
    # Q in the basis of angular_channels: off-diagonals q1..q3 / sqrt 2, diagonal from
    # q4 (x^2 - y^2) / sqrt 2 and q5 (3 z^2 - 1) / sqrt 6.
    xy, xz, yz = q1 / _SQRT2, q2 / _SQRT2, q3 / _SQRT2
    xx = q4 / _SQRT2 - q5 / _SQRT6
    yy = -q4 / _SQRT2 - q5 / _SQRT6
    zz = 2.0 * q5 / _SQRT6
    qv_x = xx * vx + xy * vy + xz * vz
    qv_y = xy * vx + yy * vy + yz * vz
    qv_z = xz * vx + yz * vy + zz * vz
    vqv = vx * qv_x + vy * qv_y + vz * qv_z
    # tr Q^3 = 3 det Q for a traceless Q (Cayley-Hamilton).
    trace_cubed = 3.0 * (xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz)
                         + xz * (xy * yz - yy * xz))
    qv_squared = qv_x * qv_x + qv_y * qv_y + qv_z * qv_z
    scale_squared = components[:, 1:].square().sum(1) + epsilon
    return torch.stack([vqv, trace_cubed, qv_squared / scale_squared.sqrt()],
                       dim=1) / scale_squared.unsqueeze(1)


def _order_sums(values: Tensor, tensor_order: int) -> Tensor:
    r"""``[A, C - 1, O]`` -> ``[A, tensor_order, O]``: sums over each order's channels."""
    if tensor_order == 1:
        return values.sum(1, keepdim=True)
    return torch.stack([part.sum(1) for part in values.split(ORDER_WIDTHS, dim=1)], dim=1)


def _per_channel(values: Tensor, tensor_order: int) -> Tensor:
    r"""``[A, tensor_order, O]`` -> ``[A, C - 1, O]``: each order's value on its channels."""
    if tensor_order == 1:
        return values.expand(-1, 3, -1)
    # Expanded views, one copy: no index tensor to build (or send to a GPU) per call.
    return torch.cat([values[:, order : order + 1].expand(-1, width, -1)
                      for order, width in enumerate(ORDER_WIDTHS)], dim=1)


class _TensorNorms(torch.autograd.Function):
    r""":math:`y_l = \sqrt{\sum_{m \in l} t_m^2 + \epsilon}`; its derivatives are
    written out (:class:`_TensorNormsBackward`) because force training differentiates
    it twice, where autograd's chain of generic steps costs several times more."""

    @staticmethod
    def forward(ctx, t: Tensor, tensor_order: int, epsilon: float) -> Tensor:
        y = torch.sqrt(_order_sums(t * t, tensor_order) + epsilon)
        ctx.save_for_backward(t, y)
        ctx.tensor_order = tensor_order
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        t, y = ctx.saved_tensors
        return _TensorNormsBackward.apply(grad, t, y, ctx.tensor_order), None, None


class _TensorNormsBackward(torch.autograd.Function):
    r""":math:`\partial L / \partial t_m = g_l\, t_m / y_l`, with ``y`` passed in (saved
    by the forward). Its backward returns the total derivative in ``t`` (through
    ``y(t)`` as well) and none for ``y``; being torch operations, it is itself
    differentiable, so higher orders follow by autograd."""

    @staticmethod
    def forward(ctx, grad: Tensor, t: Tensor, y: Tensor, tensor_order: int) -> Tensor:
        # Saves inputs only: what the backward computes from them stays differentiable.
        ctx.save_for_backward(grad, t, y)
        ctx.tensor_order = tensor_order
        return _per_channel(grad / y, tensor_order) * t

    @staticmethod
    def backward(ctx, h: Tensor):
        grad, t, y = ctx.saved_tensors
        order = ctx.tensor_order
        # p_l = Σ_m h_m t_m / y_l: d/dg of Σ h·(g t / y), and the y(t) part of d/dt.
        projection = _order_sums(h * t, order) / y
        grad_grad = projection if ctx.needs_input_grad[0] else None
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = _per_channel(grad / y, order) * (h - t * _per_channel(projection / y, order))
        return grad_grad, grad_t, None, None
