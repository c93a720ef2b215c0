"""HIPNN: symmetries, periodicity, hierarchy, derivatives and the PyG call."""

from __future__ import annotations

import math

import pytest
import torch

from hipnn_pyg import HIPNN, energy_forces_stress
from tests.nn.helpers import ethanol, random_crystal, small_model


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_energy_shape_and_invariances() -> None:
    model, (z, pos) = small_model(), ethanol()
    generator = torch.Generator().manual_seed(3)
    energy = model(z, pos)
    assert energy.shape == (1,)
    rotated = pos @ random_rotation(generator).T + torch.tensor([3.0, -2.0, 7.5])
    torch.testing.assert_close(model(z, rotated), energy, rtol=1e-12, atol=1e-10)
    perm = torch.randperm(z.numel(), generator=generator)
    torch.testing.assert_close(model(z[perm], pos[perm]), energy, rtol=1e-12, atol=1e-10)


def test_far_molecule_in_batch_equals_alone() -> None:
    model, (z, pos) = small_model(), ethanol()
    alone = model(z, pos)
    other_z, other_pos = z[:5], pos[:5] + 0.2
    batch = torch.tensor([0] * 9 + [1] * 5)
    # Overlapping in space, but graphs never see each other across the batch.
    energies = model(torch.cat([z, other_z]), torch.cat([pos, other_pos]), batch)
    torch.testing.assert_close(energies[0], alone[0], rtol=1e-12, atol=1e-10)
    # And a far copy in the same graph adds its own energy exactly.
    both = model(torch.cat([z, z]), torch.cat([pos, pos + 100.0]))
    torch.testing.assert_close(both, 2 * alone, rtol=1e-12, atol=1e-9)


def periodic_energy(model: HIPNN, z, pos, cell) -> torch.Tensor:
    return model(z, pos, cell=cell[None], pbc=torch.ones(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("cell_scale", [2.4, 5.0])
def test_supercell_has_eight_times_the_energy(cell_scale: float) -> None:
    model = small_model()
    z, pos, cell = random_crystal(5, cell_scale, torch.Generator().manual_seed(1))
    unit = periodic_energy(model, z, pos, cell)
    shifts = torch.cartesian_prod(*[torch.arange(2.0, dtype=torch.float64)] * 3)
    super_pos = (pos[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    supercell = periodic_energy(model, z.repeat(8), super_pos, 2 * cell)
    torch.testing.assert_close(supercell, 8 * unit, rtol=1e-10, atol=1e-8)


def test_wrapping_across_the_boundary_changes_nothing() -> None:
    model = small_model()
    z, pos, cell = random_crystal(6, 3.0, torch.Generator().manual_seed(2))
    shift = torch.tensor([[1, 0, -2], [0, 0, 0], [-1, 1, 0], [0, 3, 0], [2, 2, 2], [0, 0, 1]])
    moved = pos + shift.to(pos.dtype) @ cell
    torch.testing.assert_close(
        periodic_energy(model, z, moved, cell), periodic_energy(model, z, pos, cell),
        rtol=1e-12, atol=1e-10,
    )


def test_layer_energies_sum_to_total_and_layer_zero_is_per_species() -> None:
    model, (z, pos) = small_model(), ethanol()
    out = model(z, pos, return_details=True)
    assert out.layer_energy.shape == (9, 3)
    torch.testing.assert_close(out.layer_energy.sum(), out.energy.sum())
    torch.testing.assert_close(out.atom_energy, out.layer_energy.sum(-1))
    expected = model.self_energies[torch.tensor([model.species.index(int(e)) for e in z])]
    torch.testing.assert_close(out.layer_energy[:, 0], expected)
    moved = model(z, pos * 1.1, return_details=True)
    torch.testing.assert_close(moved.layer_energy[:, 0], out.layer_energy[:, 0])


def test_isolated_atom_is_valid_and_gets_a_constant_energy() -> None:
    model = small_model()
    z = torch.tensor([8])
    first = model(z, torch.zeros(1, 3, dtype=torch.float64))
    second = model(z, torch.tensor([[5.0, -3.0, 1.0]], dtype=torch.float64))
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second)


def finite_difference(fn, x: torch.Tensor, step: float = 1e-5) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for k in range(x.numel()):
        plus, minus = x.clone(), x.clone()
        plus.view(-1)[k] += step
        minus.view(-1)[k] -= step
        flat[k] = (fn(plus) - fn(minus)) / (2 * step)
    return grad


def test_forces_match_finite_differences() -> None:
    model, (z, pos) = small_model(), ethanol()
    forces = energy_forces_stress(model, z, pos)["forces"]
    reference = -finite_difference(lambda p: model(z, p).sum(), pos)
    relative = (forces - reference).norm() / reference.norm()
    assert relative < 1e-6, relative


def check_periodic_forces_and_stress(model: HIPNN) -> None:
    r"""Forces and stress of a random triclinic crystal equal central differences."""
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(4))
    pbc = torch.ones(1, 3, dtype=torch.bool)
    result = energy_forces_stress(model, z, pos, cell=cell[None], pbc=pbc, compute_stress=True)
    reference = -finite_difference(lambda p: periodic_energy(model, z, p, cell).sum(), pos)
    assert (result["forces"] - reference).norm() / reference.norm() < 1e-6

    def strained_energy(strain: torch.Tensor) -> torch.Tensor:
        deformation = torch.eye(3, dtype=cell.dtype) + strain
        return periodic_energy(model, z, pos @ deformation, cell @ deformation).sum()

    volume = torch.det(cell).abs()
    reference_stress = finite_difference(strained_energy, torch.zeros(3, 3, dtype=cell.dtype))
    reference_stress = 0.5 * (reference_stress + reference_stress.T) / volume
    stress = result["stress"][0]
    assert (stress - reference_stress).norm() / reference_stress.norm() < 1e-6
    torch.testing.assert_close(stress, stress.T)


def test_periodic_forces_and_stress_match_finite_differences() -> None:
    check_periodic_forces_and_stress(small_model())


def test_float32_forces_are_exact_gradients() -> None:
    model, (z, pos) = small_model(torch.float32), ethanol(torch.float32)
    forces = energy_forces_stress(model, z, pos)["forces"]
    double = small_model(torch.float64)
    double.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    reference = energy_forces_stress(double, z, pos.double())["forces"]
    assert forces.dtype == torch.float32
    torch.testing.assert_close(forces.double(), reference, rtol=1e-4, atol=1e-4)


def test_reset_parameters_and_repr() -> None:
    model = small_model()
    before = [p.clone() for p in model.parameters()]
    model.reset_parameters()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert any(changed)
    assert "HIPNN(species=[1, 6, 8]" in repr(model)
    assert math.isclose(model.cutoff, 4.0)


def test_mixed_batch_stress_is_zero_for_free_graphs() -> None:
    model = small_model()
    z_mol, pos_mol = ethanol()
    z_xtal, pos_xtal, cell = random_crystal(5, 3.0, torch.Generator().manual_seed(8))
    z = torch.cat([z_mol, z_xtal])
    pos = torch.cat([pos_mol, pos_xtal])
    batch = torch.tensor([0] * 9 + [1] * 5)
    cells = torch.stack([torch.zeros(3, 3, dtype=cell.dtype), cell])
    pbc = torch.tensor([[False] * 3, [True] * 3])
    mixed = energy_forces_stress(model, z, pos, batch, cells, pbc, compute_stress=True)
    alone = energy_forces_stress(model, z_xtal, pos_xtal, None, cell[None], pbc[1:],
                                 compute_stress=True)
    assert torch.all(mixed["stress"][0] == 0)
    torch.testing.assert_close(mixed["stress"][1], alone["stress"][0])
    torch.testing.assert_close(mixed["forces"][9:], alone["forces"])


def test_float32_model_keeps_sub_meV_energy_resolution() -> None:
    model = small_model(torch.float32, self_energies=[-13.6e2, -1029.0e1, -2041.0e1])
    z, pos = ethanol(torch.float32)
    out = model(z, pos, return_details=True)
    assert out.energy.dtype == torch.float64
    exact = out.layer_energy.double().sum()
    assert abs(float(out.energy.sum() - exact)) < 1e-9
