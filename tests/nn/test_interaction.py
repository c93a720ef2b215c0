"""The interaction layer: the three environment methods agree; sensitivities behave."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg import energy_forces_stress, radius_graph
from hipnn_pyg.nn import CosineCutoff, HIPNNInteraction, InverseGaussianSensitivity
from hipnn_pyg.nn.envsum import available_backends
from hipnn_pyg.nn.interaction import METHODS, neighbour_slots
from tests.nn.helpers import ethanol, random_crystal, small_model


def test_methods_agree_with_gradients() -> None:
    pos = (4.0 * torch.rand(40, 3, dtype=torch.float64)).requires_grad_(True)
    batch = torch.arange(4).repeat_interleave(10)
    graph = radius_graph(pos, 2.5, batch)
    layer = HIPNNInteraction(5, 7, InverseGaussianSensitivity(6, 0.7, 2.0, 2.5)).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    outputs = []
    for method in METHODS:
        layer.method = method
        out = layer(x, graph.edge_index, graph.distances)
        (grad,) = torch.autograd.grad(out.square().sum(), pos, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), layer.interaction_weight)
        outputs.append((out, grad, second))
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            torch.testing.assert_close(a, b)


def molecule_crystal_and_mixed() -> dict[str, dict[str, torch.Tensor | None]]:
    z_mol, pos_mol = ethanol()
    z_xtal, pos_xtal, cell = random_crystal(6, 3.0, torch.Generator().manual_seed(4))
    periodic = torch.ones(1, 3, dtype=torch.bool)
    return {
        "molecules": dict(z=torch.cat([z_mol, z_mol[:6]]),
                          pos=torch.cat([pos_mol, pos_mol[:6] + 0.1]),
                          batch=torch.tensor([0] * 9 + [1] * 6), cell=None, pbc=None),
        "crystal": dict(z=z_xtal, pos=pos_xtal, batch=None, cell=cell[None], pbc=periodic),
        "mixed": dict(z=torch.cat([z_mol, z_xtal]), pos=torch.cat([pos_mol, pos_xtal]),
                      batch=torch.tensor([0] * 9 + [1] * 6),
                      cell=torch.stack([torch.zeros(3, 3, dtype=cell.dtype), cell]),
                      pbc=torch.tensor([[False] * 3, [True] * 3])),
    }


def results_by_method(model, inputs: dict) -> dict[tuple[str, str | None], list[torch.Tensor]]:
    r"""Energy, forces, stress (for cells) and the gradients of a force-training loss
    for every environment method and envsum backend."""
    variants = [("envsum", backend) for backend in available_backends()]
    variants += [(method, None) for method in METHODS if method != "envsum"]
    results = {}
    for method, backend in variants:
        for interaction in model.representation.interactions:
            interaction.method, interaction.envsum_backend = method, backend
        model.zero_grad()
        out = energy_forces_stress(model, **inputs, compute_stress=inputs["cell"] is not None,
                                   create_graph=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        if "stress" in out:
            loss = loss + out["stress"].square().sum()
        loss.backward()
        stress = out.get("stress", out["energy"])
        gradients = [p.grad.clone() for p in model.parameters()]
        results[method, backend] = [out["energy"], out["forces"], stress, *gradients]
    return results


def assert_all_agree(results: dict) -> None:
    reference = results["padded", None]
    assert reference[1].abs().max() > 0
    for result in results.values():
        for a, b in zip(result, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("system", ["molecules", "crystal", "mixed"])
def test_model_energy_forces_stress_and_training_gradients_agree(system: str) -> None:
    assert_all_agree(results_by_method(small_model(), molecule_crystal_and_mixed()[system]))


def test_envsum_is_the_default_and_unknown_methods_are_refused() -> None:
    sensitivity = InverseGaussianSensitivity(4, 0.7, 1.8, 2.0)
    assert HIPNNInteraction(3, 3, sensitivity).method == "envsum"
    with pytest.raises(ValueError, match="unknown environment method 'fused'"):
        HIPNNInteraction(3, 3, sensitivity, method="fused")


@pytest.mark.parametrize("method", METHODS)
def test_atom_without_neighbours_gets_zero_environment(method: str) -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    graph = radius_graph(pos, 2.0)
    layer = HIPNNInteraction(3, 3, InverseGaussianSensitivity(4, 0.7, 1.8, 2.0), method)
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
