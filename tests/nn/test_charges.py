"""The charge head: exact total charge, covariant multipoles, I/O, loss wiring."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch_geometric.data import Batch, Data

from hipnn_pyg.nn import HIPNNPotential, predict
from hipnn_pyg.nn.charges import safe_norm
from hipnn_pyg.serialization import load_model, save_model
from hipnn_pyg.train.losses import target_residuals
from tests.nn.helpers import ethanol, small_model


def potential(separate: bool = False) -> HIPNNPotential:
    charge_model = small_model(hidden_channels=8) if separate else None
    return HIPNNPotential(small_model(), charge_model)


def rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def batch_of(*systems: tuple[torch.Tensor, torch.Tensor, float]) -> Batch:
    return Batch.from_data_list([
        Data(z=z, pos=pos, charge=torch.tensor([charge], dtype=torch.float64))
        for z, pos, charge in systems
    ])


@pytest.mark.parametrize("separate", [False, True])
def test_charges_sum_to_the_total_charge_in_a_batch(separate: bool) -> None:
    z, pos = ethanol()
    data = batch_of((z, pos, 0.0), (z[:5], pos[:5] + 3.0, 1.0), (z, pos @ rotation(1), -2.0))
    out = predict(potential(separate), data, compute_forces=False)
    sums = torch.zeros(3, dtype=torch.float64).index_add_(0, data.batch, out["charges"])
    assert torch.allclose(sums, torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64),
                          atol=1e-13, rtol=0)
    # the raw charges are not neutral: the correction is what makes the sums exact
    raw = out["layer_charges"].sum(-1)[data.batch == 0].sum()
    assert abs(float(raw.detach())) > 1e-6


def test_missing_charge_field_means_neutral() -> None:
    z, pos = ethanol()
    out = predict(potential(), Data(z=z, pos=pos), compute_forces=False)
    assert abs(float(out["charges"].detach().sum())) < 1e-13


def test_dipole_translation_invariant_and_rotates_with_molecule() -> None:
    model = potential()
    z, pos = ethanol()
    R = rotation(7)
    for charge in (0.0, 1.0):  # charged: invariant through the centre-of-mass origin
        moved = batch_of((z, pos, charge), (z, pos + torch.tensor([3.0, -7.0, 11.0],
                         dtype=torch.float64), charge), (z, pos @ R.T, charge))
        out = predict(model, moved, compute_forces=False)
        mu = out["dipole"]
        assert float(mu[0].norm()) > 1e-3
        torch.testing.assert_close(mu[1], mu[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(mu[2], R @ mu[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(out["dipole_magnitude"], mu.norm(dim=-1))
        theta = out["quadrupole"]
        torch.testing.assert_close(theta[2], R @ theta[0] @ R.T, atol=1e-12, rtol=0)
        torch.testing.assert_close(theta[1], theta[0], atol=1e-12, rtol=0)


def test_quadrupole_is_traceless_and_symmetric() -> None:
    z, pos = ethanol()
    out = predict(potential(True), batch_of((z, pos, 0.0), (z, pos * 1.1, 1.0)),
                  compute_forces=False)
    theta = out["quadrupole"]
    assert theta.abs().max() > 1e-3
    torch.testing.assert_close(theta, theta.transpose(1, 2), atol=1e-14, rtol=0)
    trace = theta.diagonal(dim1=1, dim2=2).sum(-1)
    assert trace.abs().max() < 1e-13


def test_dipole_matches_sum_of_charges_times_positions() -> None:
    z, pos = ethanol()
    out = predict(potential(), Data(z=z, pos=pos), compute_forces=False)
    expected = (out["charges"][:, None] * pos).sum(0)
    torch.testing.assert_close(out["dipole"][0], expected, atol=1e-12, rtol=0)


def test_energy_unchanged_and_forces_still_exact() -> None:
    energy_model = small_model()
    model = HIPNNPotential(energy_model)
    z, pos = ethanol()
    out = predict(model, Data(z=z, pos=pos))
    assert torch.allclose(out["energy"], energy_model(z, pos))
    numeric = torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        step = torch.zeros_like(pos)
        step[0, k] = 1e-5
        numeric[k] = -(energy_model(z, pos + step) - energy_model(z, pos - step)) / 2e-5
    # rounding of the ~6000 eV totals in the differences is ~3e-8 eV/Å: relative 1e-6
    torch.testing.assert_close(out["forces"][0], numeric, atol=1e-7, rtol=1e-6)


def test_zero_dipole_magnitude_has_finite_gradient() -> None:
    vector = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    safe_norm(vector).sum().backward()
    assert torch.isfinite(vector.grad).all()


@pytest.mark.parametrize("separate", [False, True])
def test_save_and_load_round_trip(tmp_path, separate: bool) -> None:
    model = potential(separate)
    z, pos = ethanol()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt").double()
    assert isinstance(loaded, HIPNNPotential) and loaded.share_features is not separate
    a = predict(model, Data(z=z, pos=pos), compute_forces=False)
    b = predict(loaded, Data(z=z, pos=pos), compute_forces=False)
    for key in ("energy", "charges", "dipole", "quadrupole"):
        torch.testing.assert_close(a[key], b[key])


def test_hydra_builds_both_variants() -> None:
    energy = {"_target_": "hipnn_pyg.HIPNN", "species": [1, 6, 8], "hidden_channels": 8,
              "num_atom_layers": 1, "num_sensitivities": 4, "cutoff": 4.0,
              "soft_max_distance": 3.5}
    shared = instantiate(OmegaConf.create({"_target_": "hipnn_pyg.nn.HIPNNPotential",
                                           "energy_model": energy, "charge_model": None}))
    separate = instantiate(OmegaConf.create({"_target_": "hipnn_pyg.nn.HIPNNPotential",
                                             "energy_model": energy, "charge_model": energy,
                                             "origin": "center_of_geometry"}))
    assert shared.share_features and not separate.share_features
    assert separate.origin == "center_of_geometry"
    with pytest.raises(ValueError, match="origin"):
        HIPNNPotential(small_model(), origin="nucleus")


def test_dipole_loss_needs_dipole_labels() -> None:
    z, pos = ethanol()
    data = batch_of((z, pos, 0.0))
    out = predict(potential(), data, compute_forces=False)
    with pytest.raises(KeyError, match="no 'dipole' labels"):
        target_residuals(out, data, ["dipole"], torch.tensor([9]))
    with pytest.raises(KeyError, match="does not predict 'dipole'"):
        target_residuals(predict(small_model(), data, compute_forces=False), data,
                         ["dipole"], torch.tensor([9]))
    data.dipole = torch.zeros(1, 3, dtype=torch.float64)
    data.quadrupole = torch.zeros(1, 3, 3, dtype=torch.float64)
    data.dipole_magnitude = torch.zeros(1, dtype=torch.float64)
    residuals = target_residuals(out, data, ["dipole", "dipole_magnitude", "quadrupole"],
                                 torch.tensor([9]))
    assert residuals["quadrupole"].shape == (1, 3, 3)
    torch.testing.assert_close(residuals["dipole"], out["dipole"])
    assert math.isfinite(float(residuals["dipole_magnitude"].sum()))
