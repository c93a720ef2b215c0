r"""Hierarchical readouts of HIP-NN features: one linear readout per layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear


class HierarchicalReadout(nn.Module):
    r"""One linear readout per layer, :math:`y_i^\ell = w^\ell \cdot z_i^\ell`, returned
    per atom and layer; the sum over layers is the hierarchical prediction.

    Layer 0 reads the one-hot species vector, so its readout is a per-species table;
    it starts at zero (set it from data), the other layers at random.

    Args:
        channels (list[int]): Feature width of each layer, layer 0 first.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.channels = list(channels)
        self.readouts = nn.ModuleList(
            Linear(width, 1, bias=False, weight_initializer="glorot") for width in channels
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for readout in self.readouts:
            readout.reset_parameters()
        nn.init.zeros_(self.readouts[0].weight)

    def forward(self, features: list[Tensor]) -> Tensor:
        r"""Returns per-atom, per-layer values ``[num_atoms, num_layers]``."""
        if len(features) != len(self.readouts):
            raise ValueError(
                f"{type(self).__name__} expects {len(self.readouts)} feature layers, "
                f"got {len(features)}"
            )
        return torch.cat(
            [readout(x) for readout, x in zip(self.readouts, features, strict=True)], dim=-1
        )


class HierarchicalEnergy(HierarchicalReadout):
    r"""The hierarchical energy :math:`\hat{E}_i^\ell = w^\ell \cdot z_i^\ell`, with
    :math:`\hat{E} = \sum_i \sum_\ell \hat{E}_i^\ell`.

    Layer 0's readout is the table of per-species self-energies
    (see :meth:`set_self_energies`), fitted to data rather than drawn at random.

    Args:
        channels (list[int]): Feature width of each layer, layer 0 first.
    """

    @property
    def self_energies(self) -> Tensor:
        r"""Per-species self-energies ``[num_species]`` (layer 0 weights)."""
        return self.readouts[0].weight.detach().view(-1)

    def set_self_energies(self, energies: Tensor) -> None:
        weight = self.readouts[0].weight
        with torch.no_grad():
            weight.copy_(torch.as_tensor(energies, dtype=weight.dtype).view_as(weight))
