"""The lean path for frozen sensitivities gives the same energies, forces, stress and
higher derivatives as the path that keeps the sensitivities."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg import energy_forces_stress, radius_graph
from hipnn_pyg.nn import InverseGaussianSensitivity
from hipnn_pyg.nn.envsum import available_backends, environment_sum, neighbour_layout
from hipnn_pyg.nn.frozen import frozen_environment_sum
from hipnn_pyg.nn.paths import layer_path
from tests.nn.helpers import ethanol, small_model
from tests.nn.test_interaction import molecule_crystal_and_mixed


def frozen_copy(model: torch.nn.Module, sensitivities_only: bool = False) -> torch.nn.Module:
    r"""``model``'s weights, frozen (or only its sensitivities), on the lean path."""
    copy = small_model()
    copy.load_state_dict(model.state_dict())
    for name, parameter in copy.named_parameters():
        if not sensitivities_only or ".sensitivity." in name:
            parameter.requires_grad_(False)
    copy.representation.set_lean(True)
    return copy


def paths(model: torch.nn.Module, features: torch.Tensor) -> set[str]:
    return {layer_path(layer, features).name for layer in model.representation.interactions}


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for interaction in model.representation.interactions:
        interaction.envsum_backend = backend


#: The models take the lean path on the compiled kernel only.
COMPILED = [b for b in available_backends() if b == "cpp"]


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("system", ["molecules", "mixed"])
def test_frozen_model_gives_the_same_forces_stress_and_hessian(backend: str,
                                                               system: str) -> None:
    inputs = molecule_crystal_and_mixed()[system]
    model = small_model()
    frozen = frozen_copy(model)
    results = []
    for candidate in (model, frozen):
        set_backend(candidate, backend)
    assert paths(model, inputs["pos"]) == {"envsum"} and paths(frozen, inputs["pos"]) == {"lean"}
    for candidate in (model, frozen):
        pos = inputs["pos"].clone().requires_grad_(True)
        out = energy_forces_stress(candidate, **{**inputs, "pos": pos},
                                   compute_stress=inputs["cell"] is not None, create_graph=True)
        (curvature,) = torch.autograd.grad(out["forces"].square().sum(), pos)
        results.append([out["energy"], out["forces"], out.get("stress", out["energy"]),
                        curvature])
    assert results[0][1].abs().max() > 0 and results[0][3].abs().max() > 0
    for ours, reference in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", COMPILED)
def test_force_training_behind_frozen_sensitivities_has_the_same_gradients(backend: str) -> None:
    inputs = molecule_crystal_and_mixed()["mixed"]
    model = small_model()
    partly = frozen_copy(model, sensitivities_only=True)
    gradients = []
    for candidate in (model, partly):
        set_backend(candidate, backend)
    assert paths(partly, inputs["pos"]) == {"lean"}
    for candidate in (model, partly):
        out = energy_forces_stress(candidate, **inputs, create_graph=True)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        gradients.append({name: p.grad for name, p in candidate.named_parameters()
                          if p.requires_grad})
    assert gradients[1] and all(".sensitivity." not in name for name in gradients[1])
    for name, gradient in gradients[1].items():
        torch.testing.assert_close(gradient, gradients[0][name], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", available_backends())
def test_function_equals_the_environment_sum_to_second_order(backend: str) -> None:
    pos = (3.0 * torch.rand(30, 3, dtype=torch.float64)).requires_grad_(True)
    layout = neighbour_layout(radius_graph(pos, 2.5).edge_index, 30)
    sensitivity = InverseGaussianSensitivity(6, 0.7, 2.0, 2.5).double().requires_grad_(False)
    features = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(30, 6, 5, dtype=torch.float64)
    results = []
    for lean in (False, True):
        graph = radius_graph(pos, 2.5)
        environment = (
            frozen_environment_sum(features, graph.distances, sensitivity, layout, backend)
            if lean else environment_sum(features, sensitivity(graph.distances), layout, backend)
        )
        grads = torch.autograd.grad((environment * weights).sum(), (pos, features),
                                    create_graph=True)
        second = torch.autograd.grad(grads[0].square().sum(), (pos, features))
        results.append([environment, *grads, *second])
    for ours, reference in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-11, atol=1e-11)
    graph = radius_graph(pos, 2.5)
    first_only = frozen_environment_sum(features, graph.distances, sensitivity, layout, backend)
    (grad_pos,) = torch.autograd.grad((first_only * weights).sum(), pos)
    torch.testing.assert_close(grad_pos, results[0][1], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", COMPILED)
def test_blocks_of_atoms_give_the_same_environment_and_gradients(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Large systems sum the environment and the features' gradient by blocks of atoms;
    # tiny blocks here (a few atoms' edges, and single atoms above the block size).
    # Atoms 0, 1 and 30 far from the others: edgeless rows before and inside the blocks.
    pos = 4.0 * torch.rand(60, 3, dtype=torch.float64)
    pos[[0, 1, 30]] += torch.tensor([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 50.0]],
                                    dtype=torch.float64)
    pos.requires_grad_(True)
    sensitivity = InverseGaussianSensitivity(6, 0.7, 2.0, 2.5).double().requires_grad_(False)
    features = torch.randn(60, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(60, 6, 5, dtype=torch.float64)
    results = []
    for block_edges in (1 << 18, 7):
        monkeypatch.setattr("hipnn_pyg.nn.frozen._BLOCK_EDGES", block_edges)
        graph = radius_graph(pos, 2.5)
        layout = neighbour_layout(graph.edge_index, 60)
        assert layout.num_edges > 20 * block_edges or block_edges > layout.num_edges
        environment = frozen_environment_sum(features, graph.distances, sensitivity, layout,
                                             backend)
        grads = torch.autograd.grad((environment * weights).sum(), (pos, features))
        results.append([environment, *grads])
    assert results[0][0][[0, 1, 30]].abs().max() == 0  # no neighbours: zero environment
    for blocked, whole in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)


def test_row_blocks_cover_every_row_once_edgeless_rows_included(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hipnn_pyg.nn.frozen import _row_blocks

    monkeypatch.setattr("hipnn_pyg.nn.frozen._BLOCK_EDGES", 4)
    # Rows 0, 1 and 5 have no edges; row 3 alone holds more edges than a block.
    degrees = torch.tensor([0, 0, 3, 9, 2, 0, 1, 4])
    start = torch.cat([torch.zeros(1, dtype=torch.long), degrees.cumsum(0)])
    blocks = _row_blocks(start)
    assert blocks[0][0] == 0 and blocks[-1][1] == degrees.numel()
    for before, after in zip(blocks[:-1], blocks[1:], strict=True):
        assert before[1] == after[0] and before[3] == after[2]  # rows and edges contiguous
    assert (3, 4, 3, 12) in blocks  # the heavy row, a block of its own


@pytest.mark.parametrize("backend", COMPILED)
def test_lean_inference_refuses_sensitivities_that_could_train(backend: str) -> None:
    model = small_model()
    set_backend(model, backend)
    model.representation.set_lean(True)
    z, pos = ethanol()
    with pytest.raises(ValueError, match="no gradient.*freeze them"):
        model(z, pos)
    with torch.no_grad():  # nothing can train: fine
        model(z, pos)


def test_training_validation_and_frozen_fine_tuning_take_one_path() -> None:
    # No hidden state: grad mode, eval mode and frozen parts leave the path as it is.
    model = small_model()
    features = torch.zeros(3, 3, dtype=torch.float64)
    training = paths(model.train(), features)
    with torch.no_grad():
        assert paths(model.eval(), features) == training
    for parameter in model.representation.parameters():
        parameter.requires_grad_(False)
    assert paths(model, features) == training
