"""Small structures and models for the model tests."""

from __future__ import annotations

import torch
from torch import nn

from hipnn_pyg import HIPNN


def small_model(dtype: torch.dtype = torch.float64, **kwargs: object) -> HIPNN:
    options: dict[str, object] = dict(
        species=(1, 6, 8), hidden_channels=16, num_interactions=2, num_atom_layers=1,
        num_sensitivities=8, soft_min_distance=0.8, soft_max_distance=3.5, cutoff=4.0,
        self_energies=[-13.6, -1029.0, -2041.0],
    )
    options.update(kwargs)
    return HIPNN(**options).to(dtype)


def trained_looking(model: nn.Module, scale: float = 1e-3, seed: int = 0) -> nn.Module:
    r"""``model`` in eval mode with every weight moved by ``scale`` times a seeded normal
    draw: away from its initial values (zero readouts, unit scales), as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator,
                                               dtype=parameter.dtype))
    return model.eval()


def ethanol(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
    pos = torch.tensor(
        [
            [-0.0047, 0.5526, 0.0000],
            [-1.2161, -0.3653, 0.0000],
            [1.1836, -0.2293, 0.0000],
            [-0.0364, 1.1918, 0.8897],
            [-0.0364, 1.1918, -0.8897],
            [-2.1468, 0.2090, 0.0000],
            [-1.1930, -1.0097, 0.8838],
            [-1.1930, -1.0097, -0.8838],
            [1.9578, 0.3491, 0.0000],
        ],
        dtype=dtype,
    )
    return z, pos


def random_crystal(
    num_atoms: int,
    cell_scale: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random triclinic cell with atoms on a jittered 2x2x2 fractional grid, so no two
    atoms (or images) come closer than about a third of ``cell_scale``."""
    assert num_atoms <= 8
    shear = 0.3 * torch.rand(3, 3, generator=generator, dtype=dtype)
    cell = cell_scale * (torch.eye(3, dtype=dtype) + shear)
    grid = torch.cartesian_prod(*[torch.tensor([0.0, 0.5], dtype=dtype)] * 3)
    sites = torch.randperm(8, generator=generator)[:num_atoms]
    jitter = 0.08 * (torch.rand(num_atoms, 3, generator=generator, dtype=dtype) - 0.5)
    frac = grid[sites] + jitter
    species = torch.tensor([1, 6, 8])
    z = species[torch.randint(0, 3, (num_atoms,), generator=generator)]
    return z, frac @ cell, cell
