"""Target objects: loss weights, per-atom rule, residuals, derivatives, validation loss
and label checks, as training and hipnn-eval use them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hipnn_pyg.train.targets import (
    DISPLAY_UNITS,
    KNOWN_TARGETS,
    build_targets,
    check_labels,
    data_loss,
    derivatives,
    num_atoms,
)


def _batch() -> SimpleNamespace:
    # two structures of 2 and 3 atoms
    return SimpleNamespace(energy=torch.tensor([1.0, 2.0]), forces=torch.zeros(5, 3),
                           ptr=torch.tensor([0, 2, 5]), num_graphs=2)


def test_build_targets_keeps_known_ones_for_metrics_and_adds_extra_heads() -> None:
    targets = {t.name: t for t in build_targets({"forces": 10.0, "polarizability": 2.0})}
    assert set(KNOWN_TARGETS) < set(targets)
    assert targets["forces"].weight == 10.0 and targets["forces"].derivative
    assert targets["energy"].weight == 0.0 and not targets["energy"].trained  # metrics only
    assert targets["polarizability"].trained and targets["polarizability"].metrics == (
        "polarizability",)
    with pytest.raises(ValueError, match=">= 0"):
        build_targets({"energy": -1.0})


@pytest.mark.parametrize("per_atom_energy", [True, False])
def test_energy_loss_residual_per_atom_rule(per_atom_energy: bool) -> None:
    energy = next(t for t in build_targets({"energy": 1.0}, per_atom_energy)
                  if t.name == "energy")
    batch = _batch()
    prediction = {"energy": torch.tensor([5.0, 8.0])}
    residuals = energy.residuals(prediction, batch, num_atoms(batch))
    assert residuals["energy"].dtype == torch.float64
    assert residuals["energy"].tolist() == [4.0, 6.0]
    assert residuals["energy_per_atom"].tolist() == [2.0, 2.0]
    loss = energy.loss_residual(prediction, batch, num_atoms(batch))
    assert loss.tolist() == ([2.0, 2.0] if per_atom_energy else [4.0, 6.0])
    assert energy.loss_metric == ("energy_per_atom" if per_atom_energy else "energy")


def test_missing_prediction_or_label_names_the_target() -> None:
    dipole = next(t for t in build_targets({"dipole": 1.0}) if t.name == "dipole")
    batch = _batch()
    with pytest.raises(KeyError, match="does not predict 'dipole'"):
        dipole.residuals({"energy": torch.zeros(2)}, batch, num_atoms(batch))
    with pytest.raises(KeyError, match="no 'dipole' labels"):
        dipole.residuals({"dipole": torch.zeros(2, 3)}, batch, num_atoms(batch))
    assert not dipole.available({"dipole": torch.zeros(2, 3)}, batch)


def test_derivatives_in_training_and_evaluation() -> None:
    energy_only = build_targets({"energy": 1.0})
    assert derivatives(energy_only) == set()  # training: only what the loss needs
    assert derivatives(energy_only, _batch()) == {"forces"}  # evaluation: what is labelled
    assert derivatives(build_targets({"energy": 1.0, "stress": 1.0})) == {"stress"}


def test_data_loss_and_missing_target() -> None:
    targets = build_targets({"energy": 2.0, "forces": 10.0})
    results = {"energy_per_atom": {"mse": 0.5}, "energy": {"mse": 7.0}, "forces": {"mse": 0.1}}
    assert data_loss(targets, results) == pytest.approx(2.0 * 0.5 + 10.0 * 0.1)
    with pytest.raises(KeyError, match=r"val data lack the trained target\(s\) \['forces'\]"):
        data_loss(targets, {"energy_per_atom": {"mse": 0.5}})


def test_check_labels_names_key_and_weight() -> None:
    dataset = SimpleNamespace(has=lambda name: name == "energy")
    targets = build_targets({"energy": 1.0, "forces": 100.0})
    with pytest.raises(ValueError, match=r"module.loss_weights.forces=100.0 > 0"):
        check_labels(targets, dataset)
    check_labels(build_targets({"energy": 1.0}), dataset)
    check_labels(targets, object())  # no has(): checked per batch instead


def test_display_units_cover_every_metric() -> None:
    assert DISPLAY_UNITS["energy_per_atom"] == ("meV/atom", 1000.0)
    assert DISPLAY_UNITS["forces"] == ("meV/Å", 1000.0)
    for target in KNOWN_TARGETS.values():
        assert all(metric in DISPLAY_UNITS for metric in target.metrics)


def _forces_batch() -> tuple[dict[str, torch.Tensor], SimpleNamespace]:
    # structures of 2 and 3 atoms; the second structure's last atom is unlabelled
    torch.manual_seed(0)
    predicted = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(5, 3, dtype=torch.float64)
    reference[4, 1] = float("nan")
    batch = SimpleNamespace(energy=torch.tensor([1.0, 2.0]), forces=reference,
                            batch=torch.tensor([0, 0, 1, 1, 1]), ptr=torch.tensor([0, 2, 5]),
                            num_graphs=2)
    return {"energy": torch.tensor([1.5, 2.5]), "forces": predicted}, batch


def test_norm_loss_is_the_mean_error_length_of_the_labelled_atoms() -> None:
    forces = next(t for t in build_targets({"forces": 1.0}, force_loss="norm")
                  if t.name == "forces")
    prediction, batch = _forces_batch()
    term = forces.loss_term(prediction, batch, num_atoms(batch))
    by_hand = [float((prediction["forces"][i] - batch.forces[i]).norm()) for i in range(4)]
    assert float(term) == pytest.approx(sum(by_hand) / 4)  # atom 4 (partly NaN) left out
    # structure weights weigh each atom's length by its structure's weight, linearly
    weighted = forces.loss_term(prediction, batch, num_atoms(batch),
                                torch.tensor([3.0, 0.5]))
    expected = (3.0 * (by_hand[0] + by_hand[1]) + 0.5 * (by_hand[2] + by_hand[3])) / 4
    assert float(weighted) == pytest.approx(expected)
    # a row with no error has a gradient of zero, not NaN
    batch.forces = prediction["forces"].detach().clone()
    (gradient,) = torch.autograd.grad(forces.loss_term(prediction, batch, num_atoms(batch)),
                                      prediction["forces"])
    assert torch.equal(gradient, torch.zeros_like(gradient))


def test_mse_loss_term_is_the_mean_square_under_the_same_weights() -> None:
    forces = next(t for t in build_targets({"forces": 1.0}) if t.name == "forces")
    prediction, batch = _forces_batch()
    residual = (prediction["forces"] - batch.forces).detach()
    weights = torch.tensor([3.0, 0.5])[batch.batch].view(-1, 1)
    labelled = torch.isfinite(residual)
    expected = (weights * residual.square()).expand_as(residual)[labelled].mean()
    assert float(forces.loss_term(prediction, batch, num_atoms(batch),
                                  torch.tensor([3.0, 0.5]))) == pytest.approx(float(expected))
    assert forces.metrics == ("forces",) and forces.loss_row == "forces"


def test_norm_loss_metric_validation_loss_and_bad_kind() -> None:
    targets = build_targets({"energy": 2.0, "forces": 0.5}, force_loss="norm")
    forces = next(t for t in targets if t.name == "forces")
    assert forces.metrics == ("forces", "forces_norm") and forces.loss_row == "forces_norm"
    assert DISPLAY_UNITS["forces_norm"] == ("meV/Å", 1000.0)
    results = {"energy_per_atom": {"mse": 0.5}, "forces": {"mse": 9.0, "mae": 8.0},
               "forces_norm": {"mse": 4.0, "mae": 0.25}}
    assert data_loss(targets, results) == pytest.approx(2.0 * 0.5 + 0.5 * 0.25)
    with pytest.raises(KeyError, match=r"lack the trained target\(s\) \['forces'\]"):
        data_loss(targets, {"energy_per_atom": {"mse": 0.5}, "forces": {"mse": 9.0}})
    with pytest.raises(ValueError,
                       match=r"module.force_loss='l1': choose one of \['mse', 'norm'\]"):
        build_targets({"forces": 1.0}, force_loss="l1")


def test_norm_loss_of_a_batch_without_force_labels_is_zero_and_keeps_its_graph() -> None:
    # a level of theory without forces (NaN), or a data-parallel batch of padding only
    forces = next(t for t in build_targets({"forces": 1.0}, force_loss="norm")
                  if t.name == "forces")
    prediction, batch = _forces_batch()
    batch.forces = torch.full((5, 3), float("nan"), dtype=torch.float64)
    term = forces.loss_term(prediction, batch, num_atoms(batch), torch.tensor([1.0, 2.0]))
    assert float(term) == 0.0
    (gradient,) = torch.autograd.grad(term, prediction["forces"])
    assert torch.equal(gradient, torch.zeros_like(gradient))
