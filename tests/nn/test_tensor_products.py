"""HIP-HOP-NN's product invariants of HIP-NN-TS: the definition (v^T Q v, tr Q^3, |Qv|^2
of 3 x 3 matrices) to third order, invariance, and the model around them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import Tensor

from hipnn_pyg import HIPNN, energy_forces_stress
from hipnn_pyg.export import export_energy_forces, load_exported
from hipnn_pyg.nn import HIPNNInteraction, HIPNNRepresentation, InverseGaussianSensitivity
from hipnn_pyg.nn.spec import build_from_spec, model_spec
from hipnn_pyg.nn.tensor_sensitivity import angular_channels, product_invariants
from hipnn_pyg.serialization import load_model, save_model
from tests.conftest import REPO
from tests.nn.helpers import ethanol, small_model, trained_looking
from tests.nn.test_interaction import (
    assert_all_agree,
    molecule_crystal_and_mixed,
    results_by_method,
)
from tests.nn.test_model import finite_difference, random_rotation


def _basis() -> Tensor:
    # The order-2 channels' matrices, written from their definition (not the code's).
    s2, s6 = math.sqrt(2.0), math.sqrt(6.0)
    basis = torch.zeros(5, 3, 3, dtype=torch.float64)
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        basis[k, i, j] = basis[k, j, i] = 1.0 / s2
    basis[3] = torch.diag(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)) / s2
    basis[4] = torch.diag(torch.tensor([-1.0, -1.0, 2.0], dtype=torch.float64)) / s6
    return basis


def _reference(components: Tensor, epsilon: float = 1e-6) -> Tensor:
    vector = components[:, 1:4].transpose(1, 2)
    matrix = torch.einsum("akf,kij->afij", components[:, 4:], _basis())
    matrix_vector = torch.einsum("afij,afj->afi", matrix, vector)
    scale_squared = components[:, 1:].square().sum(1) + epsilon
    return torch.stack([
        (vector * matrix_vector).sum(-1) / scale_squared,
        torch.einsum("afij,afjk,afki->af", matrix, matrix, matrix) / scale_squared,
        matrix_vector.square().sum(-1) / scale_squared**1.5,
    ], dim=1)


def products_model(**kwargs: object) -> HIPNN:
    torch.manual_seed(2)
    return small_model(tensor_order=2, tensor_products=True, **kwargs)


def test_basis_is_that_of_the_angular_channels() -> None:
    basis = _basis()
    torch.testing.assert_close(torch.einsum("kij,lij->kl", basis, basis),
                               torch.eye(5, dtype=torch.float64))
    unit = torch.nn.functional.normalize(torch.randn(7, 3, dtype=torch.float64), dim=-1)
    rebuilt = torch.einsum("ek,kij->eij", angular_channels(unit, 2)[:, 4:], basis)
    torch.testing.assert_close(rebuilt, unit[:, :, None] * unit[:, None, :]
                               - torch.eye(3, dtype=torch.float64) / 3.0)


def test_products_match_the_matrix_definition_to_third_order() -> None:
    generator = torch.Generator().manual_seed(0)
    contracted = torch.randn(6, 9, 5, generator=generator, dtype=torch.float64,
                             requires_grad=True)
    contracted.data[0, 1:] = 0.0  # an atom whose tensor parts vanish: epsilon guards it
    weights = torch.randn(6, 3, 5, generator=generator, dtype=torch.float64)
    probe = torch.randn(6, 9, 5, generator=generator, dtype=torch.float64)

    def derivatives(function) -> list[Tensor]:
        values = function(contracted)
        (first,) = torch.autograd.grad((weights * values).sum(), contracted,
                                       create_graph=True)
        (second,) = torch.autograd.grad((probe * first).square().sum(), contracted,
                                        create_graph=True)
        (third,) = torch.autograd.grad((probe * second).square().sum(), contracted)
        return [values, first, second, third]

    for got, expected in zip(derivatives(lambda c: product_invariants(c, 1e-6)),
                             derivatives(_reference), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        assert torch.isfinite(got).all()


def test_products_are_invariant_odd_and_of_degree_one() -> None:
    generator = torch.Generator().manual_seed(1)
    contracted = torch.randn(4, 9, 3, generator=generator, dtype=torch.float64)
    values = product_invariants(contracted, 0.0)
    rotation = random_rotation(generator)
    basis = _basis()
    rotated = contracted.clone()
    rotated[:, 1:4] = torch.einsum("ij,ajf->aif", rotation, contracted[:, 1:4])
    matrices = torch.einsum("akf,kij->afij", contracted[:, 4:], basis)
    turned = rotation @ matrices @ rotation.T
    rotated[:, 4:] = torch.einsum("afij,kij->akf", turned, basis)
    torch.testing.assert_close(product_invariants(rotated, 0.0), values)
    # Homogeneous of degree one, as the norms are; odd under a sign flip of all parts.
    torch.testing.assert_close(product_invariants(3.0 * contracted, 0.0), 3.0 * values)
    torch.testing.assert_close(product_invariants(-contracted, 0.0)[:, :2], -values[:, :2])
    assert values.abs().min() > 0  # none vanishes identically


def test_energy_is_invariant_forces_exact_and_products_matter() -> None:
    model, (z, pos) = products_model(), ethanol()
    with torch.no_grad():  # drawn scales near one, readouts moved off zero
        trained_looking(model, 0.1, seed=3)
    energy = model(z, pos)
    generator = torch.Generator().manual_seed(3)
    rotation = random_rotation(generator)
    torch.testing.assert_close(model(z, pos @ rotation.T + 2.0), energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(model(z, -pos), energy, rtol=0, atol=1e-10)
    forces = energy_forces_stress(model, z, pos)["forces"]
    reference = -finite_difference(lambda p: model(z, p).sum(), pos)
    assert (forces - reference).norm() / reference.norm() < 1e-6
    # Zero product scales give exactly HIP-NN-TS with the same weights.
    plain = small_model(tensor_order=2)
    plain.load_state_dict({key: value for key, value in model.state_dict().items()
                           if not key.endswith("product_scales")})
    inputs = molecule_crystal_and_mixed()["mixed"]
    with_products = energy_forces_stress(model, **inputs)["energy"]
    with torch.no_grad():
        for interaction in model.representation.interactions:
            interaction.product_scales.zero_()
    ours = energy_forces_stress(model, **inputs, compute_stress=True)
    reference = energy_forces_stress(plain, **inputs, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-13, atol=1e-13)
    assert (with_products - reference["energy"]).abs().max() > 1e-3


def test_float32_follows_float64() -> None:
    model, (z, pos) = products_model(), ethanol()
    trained_looking(model, 0.1, seed=4)
    reference = energy_forces_stress(model, z, pos)
    single = energy_forces_stress(model.float(), z, pos.float())
    torch.testing.assert_close(single["energy"].double(), reference["energy"],
                               rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(single["forces"].double(), reference["forces"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("system", ["molecules", "mixed"])
def test_methods_agree_with_products(system: str) -> None:
    model = products_model()
    assert_all_agree(results_by_method(model, molecule_crystal_and_mixed()[system]))
    assert model.representation.interactions[1].product_scales.grad.abs().max() > 0


def test_near_symmetric_site_has_exact_forces() -> None:
    # An octahedral site: its summed vector and quadrupole vanish by symmetry, and a
    # small distortion leaves them near the epsilon that keeps the products smooth.
    model = trained_looking(products_model(), 0.1, seed=6)
    directions = torch.cat([torch.eye(3), -torch.eye(3)]).double()
    pos = torch.cat([torch.zeros(1, 3, dtype=torch.float64), 1.1 * directions])
    pos = pos + 1e-3 * torch.randn(7, 3, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64)
    z = torch.tensor([6, 1, 1, 1, 1, 1, 1])
    forces = energy_forces_stress(model, z, pos)["forces"]
    reference = -finite_difference(lambda p: model(z, p).sum(), pos)
    assert torch.isfinite(forces).all()
    assert (forces - reference).norm() / reference.norm() < 1e-5


def test_products_need_the_quadrupole_channels_and_a_bool() -> None:
    sensitivity = InverseGaussianSensitivity(4, 0.7, 1.8, 2.0)
    for order in (0, 1):
        with pytest.raises(ValueError, match="tensor_products needs tensor_order=2"):
            HIPNNInteraction(3, 3, sensitivity, tensor_order=order, tensor_products=True)
        with pytest.raises(ValueError, match="tensor_products needs tensor_order=2"):
            HIPNNRepresentation([1, 8], sensitivity, tensor_order=order, tensor_products=True)
        with pytest.raises(ValueError, match="tensor_products needs tensor_order=2"):
            HIPNN(tensor_order=order, tensor_products=True)
    # A string from a command line ("false", "no") must not read as true.
    for value in ("false", "no", 1, None):
        with pytest.raises(ValueError, match="tensor_products must be true or false"):
            HIPNN(tensor_order=2, tensor_products=value)


def test_saved_spec_export_and_hydra_config_keep_the_products(tmp_path: Path) -> None:
    model, (z, pos) = products_model(num_interactions=1), ethanol()
    trained_looking(model, 0.1, seed=5)
    assert "tensor_products=True" in repr(model)
    assert model_spec(model)["tensor_products"] is True
    assert build_from_spec(model_spec(model)).representation.tensor_products
    save_model(model, tmp_path / "hop.pt")
    loaded = load_model(tmp_path / "hop.pt")
    reference = energy_forces_stress(model, z, pos)
    assert torch.equal(energy_forces_stress(loaded, z, pos)["forces"], reference["forces"])
    export_energy_forces(model, tmp_path / "hop.pt2")
    program = load_exported(tmp_path / "hop.pt2")
    torch.testing.assert_close(program(z, pos)["forces"], reference["forces"], rtol=0,
                               atol=1e-10)
    crystal = molecule_crystal_and_mixed()["crystal"]
    periodic = energy_forces_stress(model, **crystal, compute_stress=True)
    served = program(crystal["z"], crystal["pos"], crystal["cell"][0], crystal["pbc"][0])
    torch.testing.assert_close(served["forces"], periodic["forces"], rtol=0, atol=1e-10)
    nothing = program(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64))
    assert float(nothing["energy"]) == 0.0 and nothing["forces"].shape == (0, 3)
    with initialize_config_dir(str(REPO / "conf" / "model"), version_base="1.3"):
        built = instantiate(compose("hipnn_hop"))
    assert built.representation.tensor_order == 2
    assert all(layer.product_scales.shape == (3, 64)
               for layer in built.representation.interactions)
