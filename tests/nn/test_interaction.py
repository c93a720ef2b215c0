"""The interaction layer: fused and message-passing paths agree; sensitivities behave."""

from __future__ import annotations

import torch

from hipnn_pyg import radius_graph
from hipnn_pyg.nn import CosineCutoff, HIPNNInteraction, InverseGaussianSensitivity
from hipnn_pyg.nn.interaction import neighbour_slots


def test_fused_and_message_passing_agree_with_gradients() -> None:
    pos = (4.0 * torch.rand(40, 3, dtype=torch.float64)).requires_grad_(True)
    batch = torch.arange(4).repeat_interleave(10)
    graph = radius_graph(pos, 2.5, batch)
    layer = HIPNNInteraction(5, 7, InverseGaussianSensitivity(6, 0.7, 2.0, 2.5)).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    outputs = []
    for fused in (True, False):
        layer.fused = fused
        out = layer(x, graph.edge_index, graph.distances)
        (grad,) = torch.autograd.grad(out.square().sum(), pos, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), layer.interaction_weight)
        outputs.append((out, grad, second))
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b)


def test_atom_without_neighbours_gets_zero_environment() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    graph = radius_graph(pos, 2.0)
    layer = HIPNNInteraction(3, 3, InverseGaussianSensitivity(4, 0.7, 1.8, 2.0))
    x = torch.eye(3)
    alone = layer(x[2:], graph.edge_index[:, :0], graph.distances[:0])
    torch.testing.assert_close(layer(x, graph.edge_index, graph.distances)[2:], alone)


def test_neighbour_slots_enumerate_each_centre() -> None:
    centres = torch.tensor([2, 0, 2, 2, 0, 1])
    slots, width = neighbour_slots(centres, 4)
    assert width == 3
    assert slots.tolist() == [0, 0, 1, 2, 1, 0]


def test_sensitivities_vanish_at_the_cutoff_and_peak_at_centres() -> None:
    sensitivity = InverseGaussianSensitivity(5, 1.0, 4.0, CosineCutoff(5.0))
    r = torch.tensor([5.0, 6.0])
    assert torch.all(sensitivity(r) == 0)
    centres = 1.0 / sensitivity.inverse_mu.detach()
    values = sensitivity(centres)
    torch.testing.assert_close(values.diagonal(), CosineCutoff(5.0)(centres))
    torch.testing.assert_close(centres.min(), torch.tensor(1.0))
    torch.testing.assert_close(centres.max(), torch.tensor(4.0))
