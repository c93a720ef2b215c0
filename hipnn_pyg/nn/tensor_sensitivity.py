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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Channels per tensor order: 1 (radial), + 3 (vector), + 5 (traceless quadrupole).
CHANNELS = {0: 1, 1: 4, 2: 9}
#: Channel slices of each order ``l >= 1`` in the stacked channel axis.
ORDER_SLICES = {1: slice(1, 4), 2: slice(4, 9)}

_SQRT2 = math.sqrt(2.0)
_SQRT6 = math.sqrt(6.0)


def check_tensor_order(tensor_order: int) -> int:
    r"""Validates ``tensor_order`` (0, 1 or 2) and returns it as an :obj:`int`."""
    if isinstance(tensor_order, bool) or int(tensor_order) != tensor_order \
            or int(tensor_order) not in CHANNELS:
        raise ValueError(f"tensor_order must be 0, 1 or 2, got {tensor_order!r}")
    return int(tensor_order)


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


def tensor_invariants(components: Tensor, tensor_order: int, epsilon: float) -> list[Tensor]:
    r"""Norms :math:`\sqrt{\sum_m t_m^2 + \epsilon}` of the order-1 and order-2 parts of
    the contracted channels ``[num_atoms, C, out_channels]``, one ``[num_atoms,
    out_channels]`` tensor per order; :math:`\epsilon` keeps the gradient finite where
    a part vanishes (an atom alone, or in a perfectly symmetric site)."""
    return [
        torch.sqrt(components[:, ORDER_SLICES[order]].square().sum(1) + epsilon)
        for order in range(1, tensor_order + 1)
    ]
