"""HIP-NN-TS: tensor sensitivities keep energies invariant and forces exact, reduce to
HIP-NN when their scales are zero, and work wherever a HIP-NN does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import Tensor

from hipnn_pyg import HIPNN, HIPNNPotential, energy_forces_stress, radius_graph
from hipnn_pyg.calculator import HIPNNCalculator
from hipnn_pyg.md import run_md
from hipnn_pyg.nn import HIPNNInteraction, InverseGaussianSensitivity
from hipnn_pyg.nn.tensor_sensitivity import (
    angular_channels,
    shared_angular_channels,
    tensor_invariants,
)
from hipnn_pyg.serialization import load_model, save_model
from tests.conftest import REPO
from tests.nn.helpers import ethanol, random_crystal, small_model
from tests.nn.test_interaction import (
    assert_all_agree,
    molecule_crystal_and_mixed,
    results_by_method,
)
from tests.nn.test_model import (
    check_periodic_forces_and_stress,
    finite_difference,
    periodic_energy,
    random_rotation,
)

ORDERS = [1, 2]


def ts_model(tensor_order: int, **kwargs: object) -> HIPNN:
    torch.manual_seed(tensor_order)
    return small_model(tensor_order=tensor_order, **kwargs)


def test_angular_channels_are_orthonormal_tensors() -> None:
    # The order-2 channels are an orthonormal basis of traceless symmetric matrices:
    # sum_m Y_m(u) Y_m(v) = <uu^T - I/3, vv^T - I/3> = (u.v)^2 - 1/3, a function of the
    # angle alone, hence the norm of any sum of them is rotation invariant.
    generator = torch.Generator().manual_seed(0)
    u, v = torch.nn.functional.normalize(
        torch.randn(2, 50, 3, generator=generator, dtype=torch.float64), dim=-1)
    channels_u, channels_v = angular_channels(u, 2), angular_channels(v, 2)
    assert channels_u.shape == (50, 9)
    torch.testing.assert_close(channels_u[:, 0], torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(channels_u[:, 1:4], u)
    cosine = (u * v).sum(-1)
    torch.testing.assert_close((channels_u[:, 4:] * channels_v[:, 4:]).sum(-1),
                               cosine.square() - 1.0 / 3.0)


def _reference_norms(angular: Tensor, tensor_order: int) -> Tensor:
    # The definition, through autograd's generic steps.
    parts = [angular[:, :3], angular[:, 3:]][:tensor_order]
    return torch.stack([torch.sqrt(part.square().sum(1) + 1e-6) for part in parts], dim=1)


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_tensor_norms_match_autograd_to_third_order(tensor_order: int) -> None:
    # The norms' derivatives are written out; force training needs the second, and the
    # third checks that the written backward is itself differentiated correctly.
    generator = torch.Generator().manual_seed(tensor_order)
    channels = {1: 4, 2: 9}[tensor_order]
    contracted = torch.randn(6, channels, 5, generator=generator, dtype=torch.float64,
                             requires_grad=True)
    contracted.data[0, 1:] = 0.0  # a vanished tensor part, where epsilon guards sqrt
    weights = torch.randn(6, tensor_order, 5, generator=generator, dtype=torch.float64)
    probe = torch.randn(6, channels, 5, generator=generator, dtype=torch.float64)

    def derivatives(norms_of) -> list[Tensor]:
        norms = norms_of(contracted)
        (first,) = torch.autograd.grad((weights * norms).sum(), contracted, create_graph=True)
        (second,) = torch.autograd.grad((probe * first).square().sum(), contracted,
                                        create_graph=True)
        (third,) = torch.autograd.grad((probe * second).square().sum(), contracted)
        return [norms, first, second, third]

    def ours(values: Tensor) -> Tensor:
        radial, norms = tensor_invariants(values, tensor_order, 1e-6)
        assert torch.equal(radial, values[:, 0])
        return norms

    for got, expected in zip(derivatives(ours),
                             derivatives(lambda v: _reference_norms(v[:, 1:], tensor_order)),
                             strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_angular_channels_are_computed_once_per_forward() -> None:
    # Every layer of one forward shares the layout; new vectors mean new channels.
    from hipnn_pyg.nn.envsum import neighbour_layout

    holder = neighbour_layout(torch.zeros(2, 7, dtype=torch.long), 1)
    vectors = torch.randn(7, 3, dtype=torch.float64)
    distances = vectors.norm(dim=-1)
    first = shared_angular_channels(vectors, distances, 2, holder)
    assert shared_angular_channels(vectors, distances, 2, holder) is first
    torch.testing.assert_close(first, angular_channels(vectors / distances[:, None], 2))
    moved = vectors + 0.1
    again = shared_angular_channels(moved, moved.norm(dim=-1), 2, holder)
    torch.testing.assert_close(again, angular_channels(moved / moved.norm(dim=-1)[:, None], 2))
    assert shared_angular_channels(vectors, distances, 1, holder).shape == (7, 4)


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_energy_is_invariant_and_angles_matter(tensor_order: int) -> None:
    model, (z, pos) = ts_model(tensor_order), ethanol()
    energy = model(z, pos)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        rotation = random_rotation(generator)
        shift = torch.randn(3, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(model(z, pos @ rotation.T + shift), energy,
                                   rtol=0, atol=1e-10)
    torch.testing.assert_close(model(z, -pos), energy, rtol=0, atol=1e-10)  # reflection
    permutation = torch.randperm(9, generator=generator)
    torch.testing.assert_close(model(z[permutation], pos[permutation]), energy,
                               rtol=0, atol=1e-10)
    # Angles matter: with a 1.5 Å cutoff the two H of a bent (120°) and a straight
    # O-H 1 Å triatomic never see each other, so plain HIP-NN gets the same graph
    # distances in both and cannot tell them apart; HIP-NN-TS can.
    options = dict(cutoff=1.5, soft_min_distance=0.8, soft_max_distance=1.4)
    angle = torch.tensor(2.0 * torch.pi / 3.0, dtype=torch.float64)
    bent = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0],
                         [float(torch.cos(angle)), float(torch.sin(angle)), 0.0]],
                        dtype=torch.float64)
    straight = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
                            dtype=torch.float64)
    water = torch.tensor([8, 1, 1])
    with torch.no_grad():
        plain, tensor = small_model(**options), ts_model(tensor_order, **options)
        assert plain(water, bent) == plain(water, straight)
        assert abs(float(tensor(water, bent) - tensor(water, straight))) > 1e-3


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_periodic_wrapping_and_supercell(tensor_order: int) -> None:
    model = ts_model(tensor_order)
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(5))
    energy = periodic_energy(model, z, pos, cell)
    wrapped = pos + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) @ cell
    torch.testing.assert_close(periodic_energy(model, z, wrapped, cell), energy)
    offsets = torch.cartesian_prod(*[torch.arange(2, dtype=torch.float64)] * 3) @ cell
    super_pos = (pos[None] + offsets[:, None]).reshape(-1, 3)
    supercell = periodic_energy(model, z.repeat(8), super_pos, 2 * cell)
    torch.testing.assert_close(supercell, 8 * energy)


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_forces_and_stress_match_finite_differences(tensor_order: int) -> None:
    model, (z, pos) = ts_model(tensor_order), ethanol()
    forces = energy_forces_stress(model, z, pos)["forces"]
    reference = -finite_difference(lambda p: model(z, p).sum(), pos)
    assert (forces - reference).norm() / reference.norm() < 1e-6

    check_periodic_forces_and_stress(model)


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_zero_scales_give_plain_hipnn(tensor_order: int) -> None:
    model, plain = ts_model(tensor_order), small_model()
    with torch.no_grad():
        for interaction in model.representation.interactions:
            interaction.tensor_scales.zero_()
    state = {key: value for key, value in model.state_dict().items()
             if not key.endswith("tensor_scales")}
    plain.load_state_dict(state)
    inputs = molecule_crystal_and_mixed()["mixed"]
    ours = energy_forces_stress(model, **inputs, compute_stress=True)
    reference = energy_forces_stress(plain, **inputs, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-13, atol=1e-13)
    # and the scales do change the model once they are not zero
    with torch.no_grad():
        model.representation.interactions[0].tensor_scales.fill_(0.5)
    assert (energy_forces_stress(model, **inputs)["energy"] - reference["energy"]).abs().max() \
        > 1e-3


@pytest.mark.parametrize("tensor_order", ORDERS)
@pytest.mark.parametrize("system", ["molecules", "mixed"])
def test_methods_agree_in_values_forces_stress_and_training_gradients(
    tensor_order: int, system: str
) -> None:
    model = ts_model(tensor_order)
    assert_all_agree(results_by_method(model, molecule_crystal_and_mixed()[system]))
    assert model.representation.interactions[1].tensor_scales.grad.abs().max() > 0


@pytest.mark.parametrize("tensor_products", [False, True])
def test_lonely_atom_has_finite_forces_and_training_gradients(tensor_products: bool) -> None:
    # Its tensor parts vanish, where sqrt (and the products' division) would have an
    # infinite slope without the epsilon.
    model = ts_model(2, tensor_products=tensor_products)
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [12.0, 0.0, 0.0]],
                       dtype=torch.float64)
    out = energy_forces_stress(model, z, pos, create_graph=True)
    out["forces"].square().sum().backward()
    assert torch.isfinite(out["forces"]).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_tensor_orders_and_missing_vectors_are_named() -> None:
    sensitivity = InverseGaussianSensitivity(4, 0.7, 1.8, 2.0)
    for order in (3, -1, 1.5, True):
        with pytest.raises(ValueError, match="tensor_order must be 0, 1 or 2"):
            HIPNN(tensor_order=order)
    layer = HIPNNInteraction(3, 3, sensitivity, tensor_order=1)
    graph = radius_graph(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), 2.0)
    with pytest.raises(ValueError, match="tensor_order=1 needs the pair vectors"):
        layer(torch.eye(2, 3), graph.edge_index, graph.distances)


@pytest.mark.parametrize("tensor_order", ORDERS)
def test_saved_model_reloads_to_identical_outputs(tensor_order: int, tmp_path) -> None:
    model, (z, pos) = ts_model(tensor_order), ethanol()
    save_model(model, tmp_path / "ts.pt")
    loaded = load_model(tmp_path / "ts.pt")
    assert loaded.representation.tensor_order == tensor_order
    assert torch.equal(energy_forces_stress(loaded, z, pos)["forces"],
                       energy_forces_stress(model, z, pos)["forces"])


def test_hydra_config_builds_hipnn_ts() -> None:
    with initialize_config_dir(str(REPO / "conf" / "model"), version_base="1.3"):
        model = instantiate(compose("hipnn_ts"))
    assert model.representation.tensor_order == 2
    assert all(layer.tensor_scales.shape == (2, 64)
               for layer in model.representation.interactions)


def test_calculator_and_md_with_tensor_sensitivities(tmp_path) -> None:
    model, (z, pos) = ts_model(2), ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    calculator = HIPNNCalculator(model)
    atoms.calc = calculator
    numeric = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numeric, atol=1e-6)
    result = run_md(atoms, calculator, "nve", steps=40, timestep_fs=0.1, temperature_K=100,
                    trajectory=tmp_path / "t.extxyz", log=tmp_path / "md.csv",
                    log_interval=5, traj_interval=20, progress=False)
    total = np.array([row["etot_eV"] for row in result.rows], dtype=float)
    kinetic = np.array([row["ekin_eV"] for row in result.rows], dtype=float)
    assert result.steps_done == 40 and np.isfinite(total).all()
    assert total.std() < 0.1 * kinetic.std()


def test_charge_model_with_tensor_sensitivities() -> None:
    model = HIPNNPotential(ts_model(1), ts_model(2, hidden_channels=8))
    z, pos = ethanol()
    charge = torch.tensor([1.0], dtype=torch.float64)
    out = energy_forces_stress(model, z, pos, total_charge=charge)
    torch.testing.assert_close(out["charges"].sum(), torch.tensor(1.0, dtype=torch.float64))
    rotation = random_rotation(torch.Generator().manual_seed(2))
    rotated = energy_forces_stress(model, z, pos @ rotation.T, total_charge=charge)
    torch.testing.assert_close(rotated["charges"], out["charges"])
    torch.testing.assert_close(rotated["forces"], out["forces"] @ rotation.T)
