r"""Readouts of HIP-NN features: the hierarchical energy head."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear


class HierarchicalEnergy(nn.Module):
    r"""One linear readout per layer, :math:`\hat{E}_i^\ell = w^\ell \cdot z_i^\ell`,
    with :math:`\hat{E} = \sum_i \sum_\ell \hat{E}_i^\ell`.

    Layer 0 reads the one-hot species embedding, so its readout is a table of
    per-species self-energies (see :meth:`set_self_energies`).

    Args:
        channels (list[int]): Feature width of each layer, layer 0 first.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.readouts = nn.ModuleList(
            Linear(width, 1, bias=False, weight_initializer="glorot") for width in channels
        )

    def reset_parameters(self) -> None:
        for readout in self.readouts:
            readout.reset_parameters()
        # Self-energies are fitted to data, not drawn at random.
        nn.init.zeros_(self.readouts[0].weight)

    @property
    def self_energies(self) -> Tensor:
        r"""Per-species self-energies ``[num_species]`` (layer 0 weights)."""
        return self.readouts[0].weight.detach().view(-1)

    def set_self_energies(self, energies: Tensor) -> None:
        weight = self.readouts[0].weight
        with torch.no_grad():
            weight.copy_(torch.as_tensor(energies, dtype=weight.dtype).view_as(weight))

    def forward(self, features: list[Tensor]) -> Tensor:
        r"""Returns per-atom, per-layer energies ``[num_atoms, num_layers]``."""
        return torch.cat(
            [readout(x) for readout, x in zip(self.readouts, features, strict=True)], dim=-1
        )
