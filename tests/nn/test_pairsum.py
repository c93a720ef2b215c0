"""The factorised HIP-NN-TS environment: equal to summing the stacked channels, with
exact derivatives to second order on either backend."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg.nn.envsum import environment_sum, neighbour_layout
from hipnn_pyg.nn.pairsum import factorised_environment_sum
from tests.nn.test_envsum import BACKENDS, random_pairs


def operands(generator: torch.Generator, num_atoms: int, num_edges: int):
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True)

    # features [atoms, 3], radial [edges, 4], angular [edges, 5], weight [4 * 3, 2]
    return draw(num_atoms, 3), draw(num_edges, 4), draw(num_edges, 5), draw(12, 2)


def stacked(features, radial, angular, weight, layout) -> torch.Tensor:
    channels = (angular.unsqueeze(-1) * radial.unsqueeze(1)).flatten(1)
    environment = environment_sum(features, channels, layout, "torch")
    contracted = environment.reshape(features.size(0) * angular.size(1), -1) @ weight
    return contracted.view(features.size(0), angular.size(1), -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_the_stacked_channels(backend: str) -> None:
    generator = torch.Generator().manual_seed(1)
    edge_index, num_atoms = random_pairs(generator)
    args = operands(generator, num_atoms, edge_index.size(1))
    layout = neighbour_layout(edge_index, num_atoms)
    ours = factorised_environment_sum(*args, layout, backend)
    assert ours.shape == (num_atoms, 5, 2)
    torch.testing.assert_close(ours, stacked(*args, layout), rtol=1e-12, atol=1e-12)
    assert ours[-2:].abs().max() == 0  # the two isolated atoms


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_and_second_derivatives_are_exact(backend: str) -> None:
    generator = torch.Generator().manual_seed(2)
    edge_index, num_atoms = random_pairs(generator)
    args = operands(generator, num_atoms, edge_index.size(1))
    layout = neighbour_layout(edge_index, num_atoms)

    def function(*tensors: torch.Tensor) -> torch.Tensor:
        return factorised_environment_sum(*tensors, layout, backend)

    assert torch.autograd.gradcheck(function, args)
    assert torch.autograd.gradgradcheck(function, args)
