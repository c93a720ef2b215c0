"""Arithmetic of the loss terms."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from hipnn_pyg import HIPNN
from hipnn_pyg.train.losses import (
    hierarchicality,
    l2_penalty,
    mse,
    per_atom,
    regularized_weights,
    residual,
    target_residuals,
    weighted_loss,
)


def test_residual_is_float64_and_reshaped() -> None:
    r = residual(torch.tensor([1.0, 2.0]), torch.tensor([[0.5], [2.5]], dtype=torch.float64))
    assert r.dtype == torch.float64
    assert r.tolist() == [0.5, -0.5]


def test_mse_and_per_atom() -> None:
    assert float(mse(torch.tensor([1.0, -3.0]))) == pytest.approx(5.0)
    assert float(mse(torch.zeros(0))) == 0.0
    assert per_atom(torch.tensor([6.0, 6.0]), torch.tensor([2, 3])).tolist() == [3.0, 2.0]


def test_hierarchicality_by_hand() -> None:
    # two molecules, three layers; molecule energies per layer are the column sums
    layer_energy = torch.tensor([[1.0, 1.0, 0.5], [1.0, 1.0, 0.5], [3.0, 0.0, 1.0]])
    batch = torch.tensor([0, 0, 1])
    # molecule 0: E = (2, 2, 1) -> 4/(4+4) + 1/(1+4) = 0.7
    # molecule 1: E = (3, 0, 1) -> 0/(0+9) + 1/(1+0) = 1.0
    value = hierarchicality(layer_energy, batch, num_graphs=2)
    assert float(value) == pytest.approx((0.7 + 1.0) / 2, rel=1e-6)
    assert float(hierarchicality(layer_energy[:, :1], batch, 2)) == 0.0


def test_l2_excludes_self_energies_biases_and_sensitivities() -> None:
    model = HIPNN(species=(1, 8), hidden_channels=4, num_interactions=1, num_atom_layers=1)
    model.set_self_energies(torch.tensor([100.0, 200.0]))
    weights = regularized_weights(model)
    ids = {id(w) for w in weights}
    assert id(model.energy_head.readouts[0].weight) not in ids
    assert all(w.dim() >= 2 for w in weights)
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    assert not any("bias" in n or "sensitiv" in n for n in names)
    expected = sum(float(w.detach().pow(2).sum()) for w in weights)
    assert float(l2_penalty(weights)) == pytest.approx(expected)


def _batch() -> Batch:
    graphs = [
        Data(z=torch.tensor([1, 8]), pos=torch.zeros(2, 3), energy=torch.tensor([1.0]),
             forces=torch.ones(2, 3)),
        Data(z=torch.tensor([1, 8, 1, 1]), pos=torch.zeros(4, 3), energy=torch.tensor([2.0]),
             forces=torch.zeros(4, 3)),
    ]
    return Batch.from_data_list(graphs)


def test_weighted_loss_per_atom_energy_and_forces() -> None:
    batch = _batch()
    prediction = {"energy": torch.tensor([3.0, 6.0]), "forces": torch.zeros(6, 3)}
    num_atoms = torch.tensor([2, 4])
    residuals = target_residuals(prediction, batch, ["energy", "forces"], num_atoms)
    # energy residuals (2, 4) per atom -> (1, 1); forces: 6 ones of 18 components
    assert residuals["energy"].tolist() == [1.0, 1.0]
    loss = weighted_loss(residuals, {"energy": 2.0, "forces": 10.0})
    assert float(loss) == pytest.approx(2.0 * 1.0 + 10.0 * 6 / 18)
    plain = target_residuals(prediction, batch, ["energy"], num_atoms, per_atom_energy=False)
    assert float(weighted_loss(plain, {"energy": 1.0})) == pytest.approx((4 + 16) / 2)


def test_missing_labels_and_predictions_name_the_target() -> None:
    batch = Batch.from_data_list([Data(z=torch.tensor([1]), pos=torch.zeros(1, 3),
                                       energy=torch.tensor([1.0]))])
    with pytest.raises(KeyError, match="data have no 'forces' labels"):
        target_residuals({"energy": torch.zeros(1), "forces": torch.zeros(1, 3)}, batch,
                         ["forces"], torch.tensor([1]))
    with pytest.raises(KeyError, match="model does not predict 'dipole'"):
        target_residuals({"energy": torch.zeros(1)}, batch, ["dipole"], torch.tensor([1]))
    with pytest.raises(ValueError, match="nothing to train on"):
        weighted_loss({}, {})
    assert math.isfinite(float(weighted_loss({"energy": torch.ones(2)}, {"energy": 1.0})))
