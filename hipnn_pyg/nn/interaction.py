r"""The HIP-NN interaction and on-site layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear


class ResidualLayer(nn.Module):
    r"""The ResNet form shared by every HIP-NN layer: given the pre-activation
    :math:`a_i`,

    .. math::
        z_i' = \tilde{W} f(a_i) + \tilde{M} z_i + \tilde{B},

    where :math:`\tilde{M}` is the identity when the widths agree.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.output = Linear(out_channels, out_channels, weight_initializer="glorot")
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        )

    def reset_parameters(self) -> None:
        self.output.reset_parameters()
        if isinstance(self.skip, Linear):
            self.skip.reset_parameters()

    def forward(self, pre_activation: Tensor, x: Tensor) -> Tensor:
        return self.output(F.softplus(pre_activation)) + self.skip(x)


class AtomLayer(nn.Module):
    r"""An on-site layer :math:`z_i' = \tilde{W} f(W z_i + B) + \tilde{M} z_i + \tilde{B}`.

    Args:
        in_channels (int): Input feature width.
        out_channels (int): Output feature width.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = Linear(in_channels, out_channels, weight_initializer="glorot")
        self.residual = ResidualLayer(in_channels, out_channels)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        self.residual.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(self.linear(x), x)


class HIPNNInteraction(MessagePassing):
    r"""The HIP-NN interaction layer from `"Hierarchical modeling of molecular energies
    using a deep neural network" <https://arxiv.org/abs/1710.00017>`_

    .. math::
        \tilde{z}_i = f\Big(\sum_{j \in \mathcal{N}(i)} \sum_\nu s_\nu(r_{ij})\,
        V_\nu z_j + W z_i + B\Big),

    in the residual form of :class:`ResidualLayer`. Messages are the outer products
    :math:`s(r_{ij}) \otimes z_j`; summed per atom they form an environment tensor
    ``[num_atoms, num_sensitivities, in_channels]`` that meets all :math:`V_\nu` in a
    single matrix product (hippynn's "envsum"), which is cheaper than applying each
    :math:`V_\nu` per edge.

    Args:
        in_channels (int): Input feature width.
        out_channels (int): Output feature width.
        sensitivity (nn.Module): Maps distances ``[num_edges]`` to sensitivities
            ``[num_edges, num_sensitivities]``, e.g.
            :class:`~hipnn_pyg.nn.InverseGaussianSensitivity`.
    """

    def __init__(self, in_channels: int, out_channels: int, sensitivity: nn.Module) -> None:
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.sensitivity = sensitivity
        num_sensitivities: int = sensitivity.num_sensitivities
        self.interaction_weight = nn.Parameter(
            torch.empty(num_sensitivities * in_channels, out_channels)
        )
        self.self_linear = Linear(in_channels, out_channels, weight_initializer="glorot")
        self.residual = ResidualLayer(in_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self.sensitivity, "reset_parameters"):
            self.sensitivity.reset_parameters()
        nn.init.xavier_normal_(self.interaction_weight)
        self.self_linear.reset_parameters()
        self.residual.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, distances: Tensor) -> Tensor:
        r"""Args:
        x (torch.Tensor): Atom features ``[num_atoms, in_channels]``.
        edge_index (torch.Tensor): Pairs ``[2, num_edges]`` (neighbour, centre).
        distances (torch.Tensor): Pair distances ``[num_edges]``.
        """
        sensitivities = self.sensitivity(distances)
        environment = self.propagate(edge_index, x=x, sensitivities=sensitivities)
        pre_activation = environment @ self.interaction_weight + self.self_linear(x)
        return self.residual(pre_activation, x)

    def message(self, x_j: Tensor, sensitivities: Tensor) -> Tensor:
        return (sensitivities.unsqueeze(-1) * x_j.unsqueeze(-2)).flatten(1)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"sensitivity={self.sensitivity})"
        )
