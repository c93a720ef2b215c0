r"""The HIP-NN interaction and on-site layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from hipnn_pyg.nn.envsum import NeighbourLayout, environment_sum, neighbour_layout
from hipnn_pyg.nn.frozen import frozen_environment_sum
from hipnn_pyg.nn.pairsum import factorised_environment_sum
from hipnn_pyg.nn.paths import layer_path
from hipnn_pyg.nn.tensor_sensitivity import (
    CHANNELS,
    NUM_PRODUCTS,
    check_tensor_order,
    check_tensor_products,
    product_invariants,
    shared_angular_channels,
    tensor_invariants,
    tensor_sensitivities,
)

METHODS = ("envsum", "padded", "message_passing", "scatter")
#: Initial spread of the per-feature tensor scales λ_l (hippynn draws them from N(0, 1)).
TENSOR_SCALE_STD = 1.0


class ResidualLayer(nn.Module):
    r"""The ResNet form shared by every HIP-NN layer: given the pre-activation
    :math:`a_i`,

    .. math::
        z_i' = \tilde{W} f(a_i) + \tilde{M} z_i + \tilde{B},

    where :math:`\tilde{M}` is the identity when the widths agree.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.output = Linear(out_channels, out_channels, weight_initializer="kaiming_uniform")
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else Linear(in_channels, out_channels, bias=False,
                        weight_initializer="kaiming_uniform")
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

    in the residual form of :class:`ResidualLayer`. With ``tensor_order`` :math:`L > 0`
    it is the HIP-NN-TS layer (`Chigaev et al. 2023 <https://arxiv.org/abs/2212.03195>`_):
    the sensitivities gain angular channels (:mod:`~hipnn_pyg.nn.tensor_sensitivity`),
    the same :math:`V_\nu` contract every channel into :math:`t^{(l)}_{i}`, and the
    pre-activation becomes

    .. math::
        t^{(0)}_i + \sum_{l=1}^{L} \lambda_l \odot \sqrt{\textstyle\sum_m
        (t^{(l)}_{im})^2 + \epsilon} + W z_i + B,

    with learnable per-feature scales :math:`\lambda_l` (``tensor_scales``). With
    ``tensor_products`` (order 2 only) three more invariants of each feature's vector
    and quadrupole, :func:`~hipnn_pyg.nn.tensor_sensitivity.product_invariants` (the
    many-body terms of hippynn's HIP-HOP-NN), enter the same sum with scales of their
    own (``product_scales``).

    The sum over neighbours forms an
    environment tensor :math:`\sum_j s(r_{ij}) \otimes z_j` of shape
    ``[num_atoms, num_sensitivities, in_channels]`` that meets all :math:`V_\nu` in a
    single matrix product (hippynn's "envsum").

    Four equivalent ways compute the environment (``method``):

    * ``"envsum"``: :func:`~hipnn_pyg.nn.envsum.environment_sum`, custom kernels for
      the sum and its derivatives of every order that keep only the edge
      sensitivities and the atom features, never a per-edge feature tensor
      (a compiled CPU kernel when a C++ compiler is available, Triton kernels on CUDA
      when triton is installed, else pure torch).
    * ``"padded"``: each atom's neighbours gathered into a block padded to the
      largest neighbour count, contracted by one batched matrix product; autograd
      keeps the ``[num_atoms, max_neighbours, in_channels]`` gather.
    * ``"message_passing"``: PyG messages :math:`s(r_{ij}) \otimes z_j`, a
      ``[num_edges, num_sensitivities, in_channels]`` tensor (and more of them in
      the double backward of force training).
    * ``"scatter"``: one scatter-add per sensitivity channel, in plain tensor
      operations that :func:`torch.export` traces with symbolic sizes, holding at
      most ``[num_edges, in_channels]`` per-edge values at a time; what exported
      models run (:mod:`hipnn_pyg.export`).

    ``scripts/bench_speed.py`` compares them. Which kernels a call runs is decided by
    :func:`~hipnn_pyg.nn.paths.layer_path` alone: the same in training and evaluation;
    the memory-lean path for frozen sensitivities only after ``lean = True``
    (:meth:`~hipnn_pyg.nn.HIPNNRepresentation.set_lean`).

    Args:
        in_channels (int): Input feature width.
        out_channels (int): Output feature width.
        sensitivity (nn.Module): Maps distances ``[num_edges]`` to sensitivities
            ``[num_edges, num_sensitivities]``, e.g.
            :class:`~hipnn_pyg.nn.InverseGaussianSensitivity`.
        method (str): ``"envsum"``, ``"padded"``, ``"message_passing"`` or
            ``"scatter"``. (default: :obj:`"envsum"`)
        envsum_backend (str, optional): Kernel of ``method="envsum"``, ``"torch"``,
            ``"cpp"`` or ``"triton"``. (default: :obj:`None`, see
            :func:`~hipnn_pyg.nn.envsum.environment_sum`)
        tensor_order (int): Highest angular order of the sensitivities, 0 (plain
            HIP-NN), 1 or 2 (HIP-NN-TS). (default: :obj:`0`)
        tensor_epsilon (float): :math:`\epsilon` under the square root of the tensor
            invariants. (default: :obj:`1e-6`)
        tensor_products (bool): Add the product invariants of the vector and
            quadrupole channels; needs ``tensor_order=2``. (default: :obj:`False`)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        sensitivity: nn.Module,
        method: str = "envsum",
        envsum_backend: str | None = None,
        tensor_order: int = 0,
        tensor_epsilon: float = 1e-6,
        tensor_products: bool = False,
    ) -> None:
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.sensitivity = sensitivity
        if method not in METHODS:
            raise ValueError(f"unknown environment method {method!r}; choose from {METHODS}")
        self.method = method
        self.envsum_backend = envsum_backend
        #: Memory-lean inference (:mod:`~hipnn_pyg.nn.frozen`); off unless asked for.
        self.lean = False
        self.tensor_order = check_tensor_order(tensor_order)
        self.tensor_epsilon = float(tensor_epsilon)
        check_tensor_products(tensor_products, self.tensor_order)
        num_sensitivities: int = sensitivity.num_sensitivities
        self.interaction_weight = nn.Parameter(
            torch.empty(num_sensitivities * in_channels, out_channels)
        )
        self.self_linear = Linear(in_channels, out_channels, weight_initializer="glorot")
        self.residual = ResidualLayer(in_channels, out_channels)
        self.tensor_scales = (
            nn.Parameter(torch.empty(self.tensor_order, out_channels))
            if self.tensor_order else None
        )
        self.product_scales = (
            nn.Parameter(torch.empty(NUM_PRODUCTS, out_channels)) if tensor_products else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self.sensitivity, "reset_parameters"):
            self.sensitivity.reset_parameters()
        num_sensitivities = self.interaction_weight.size(0) // self.in_channels
        fans = self.in_channels * (self.out_channels + num_sensitivities)
        nn.init.normal_(self.interaction_weight, std=(2.0 / fans) ** 0.5)
        self.self_linear.reset_parameters()
        self.residual.reset_parameters()
        if self.tensor_scales is not None:
            nn.init.normal_(self.tensor_scales, std=TENSOR_SCALE_STD)
        if self.product_scales is not None:
            nn.init.normal_(self.product_scales, std=TENSOR_SCALE_STD)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        distances: Tensor,
        layout: NeighbourLayout | None = None,
        vectors: Tensor | None = None,
    ) -> Tensor:
        r"""Args:
        x (torch.Tensor): Atom features ``[num_atoms, in_channels]``.
        edge_index (torch.Tensor): Pairs ``[2, num_edges]`` (neighbour, centre).
        distances (torch.Tensor): Pair distances ``[num_edges]``.
        layout (NeighbourLayout, optional): :func:`~hipnn_pyg.nn.envsum.neighbour_layout`
            of ``edge_index``, shared by the layers of one forward.
            (default: :obj:`None`, built here when ``method="envsum"``)
        vectors (torch.Tensor, optional): Pair vectors ``[num_edges, 3]``, needed when
            ``tensor_order > 0``. (default: :obj:`None`)
        """
        if self.tensor_order and vectors is None:
            raise ValueError(f"tensor_order={self.tensor_order} needs the pair vectors")
        if self.method == "envsum" and layout is None:
            layout = neighbour_layout(edge_index, x.size(0))
        contracted = self._contracted_environment(x, edge_index, distances, layout, vectors)
        if self.tensor_scales is None:
            return self.residual(contracted[:, 0] + self.self_linear(x), x)
        radial, invariants = tensor_invariants(contracted, self.tensor_order,
                                               self.tensor_epsilon)
        # Σ_l λ_l ‖t_l‖ as one product over the orders.
        scaled = (self.tensor_scales.unsqueeze(0) * invariants).sum(1)
        if self.product_scales is not None:
            products = product_invariants(contracted, self.tensor_epsilon)
            scaled = scaled + (self.product_scales.unsqueeze(0) * products).sum(1)
        return self.residual(radial + scaled + self.self_linear(x), x)

    def _contracted_environment(
        self,
        x: Tensor,
        edge_index: Tensor,
        distances: Tensor,
        layout: NeighbourLayout | None,
        vectors: Tensor | None,
    ) -> Tensor:
        r"""The environment of every channel contracted with the interaction weights,
        ``[num_atoms, channels, out_channels]``, by the layer's method."""
        channels = CHANNELS[self.tensor_order]
        path = layer_path(self, x)
        if path.name == "pairsum":
            angular = shared_angular_channels(vectors, distances, self.tensor_order, layout)
            return factorised_environment_sum(
                x, self.sensitivity(distances), angular, self.interaction_weight, layout,
                path.backend,
            )
        if path.name == "lean":  # frozen sensitivities: none of [edges, S] is kept
            environment = frozen_environment_sum(
                x, distances, self.sensitivity, layout, path.backend
            )
        else:
            sensitivities = self.sensitivity(distances)
            if self.tensor_order:
                sensitivities = tensor_sensitivities(
                    sensitivities, vectors, distances, self.tensor_order
                )
            if path.name == "envsum":
                environment = environment_sum(x, sensitivities, layout, path.backend)
            elif path.name == "padded":
                environment = padded_environment(x, edge_index, sensitivities)
            elif path.name == "scatter":
                environment = scatter_environment(x, edge_index, sensitivities)
            else:
                environment = self.propagate(edge_index, x=x, sensitivities=sensitivities)
        # Channel-major rows: [atoms, C * S * in] -> [atoms * C, S * in], one product.
        width = self.interaction_weight.size(0)  # S * in: explicit, so 0 atoms reshape too
        contracted = environment.reshape(x.size(0) * channels, width) @ self.interaction_weight
        return contracted.reshape(x.size(0), channels, self.out_channels)

    def message(self, x_j: Tensor, sensitivities: Tensor) -> Tensor:
        return (sensitivities.unsqueeze(-1) * x_j.unsqueeze(-2)).flatten(1)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"sensitivity={self.sensitivity}, method={self.method!r}, "
            f"tensor_order={self.tensor_order}"
            + (", tensor_products=True)" if self.product_scales is not None else ")")
        )


def neighbour_slots(centres: Tensor, num_atoms: int) -> tuple[Tensor, int]:
    r"""The rank of each edge among the edges of its centre atom, and the largest
    neighbour count: the coordinates of each edge in a padded neighbour block."""
    counts = torch.bincount(centres, minlength=num_atoms)
    order = torch.argsort(centres, stable=True)
    first_edge = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(centres)
    slots[order] = torch.arange(centres.numel(), device=centres.device) - first_edge[
        centres[order]
    ]
    return slots, int(counts.max()) if centres.numel() else 0


def scatter_environment(x: Tensor, edge_index: Tensor, sensitivities: Tensor) -> Tensor:
    r"""The environment sum :math:`\sum_j s(r_{ij}) \otimes z_j`
    ``[num_atoms, channels, in_channels]``, one scatter-add over the edges per channel
    of ``sensitivities [num_edges, channels]``: the per-edge values never exceed the
    ``[num_edges, in_channels]`` neighbour gather (autograd keeps only it and the
    sensitivities), and no size depends on the data."""
    neighbours, centres = edge_index
    gathered = x[neighbours]
    empty = x.new_zeros(x.size(0), x.size(1))
    return torch.stack([empty.index_add(0, centres, gathered * sensitivities[:, k, None])
                        for k in range(sensitivities.size(1))], dim=1)


def padded_environment(x: Tensor, edge_index: Tensor, sensitivities: Tensor) -> Tensor:
    r"""The environment sum :math:`\sum_j s(r_{ij}) \otimes z_j`, flattened to
    ``[num_atoms, num_sensitivities * in_channels]``, by one batched matmul."""
    neighbours, centres = edge_index
    num_atoms = x.size(0)
    slots, width = neighbour_slots(centres, num_atoms)
    neighbour_features = x.new_zeros(num_atoms, width, x.size(1))
    neighbour_features = neighbour_features.index_put((centres, slots), x[neighbours])
    padded_sensitivities = sensitivities.new_zeros(num_atoms, width, sensitivities.size(1))
    padded_sensitivities = padded_sensitivities.index_put((centres, slots), sensitivities)
    environment = torch.bmm(padded_sensitivities.transpose(1, 2), neighbour_features)
    return environment.flatten(1)
