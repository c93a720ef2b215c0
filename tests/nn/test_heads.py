"""Heads: sized by the representation, self-energies, float64 sums, named outputs."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg.nn import ChargeHead, EnergyHead, HIPNNRepresentation, InverseGaussianSensitivity
from tests.nn.helpers import ethanol


def features(dtype: torch.dtype = torch.float64):
    representation = HIPNNRepresentation(
        (1, 6, 8), InverseGaussianSensitivity(4, 0.8, 3.5, cutoff=4.0), hidden_channels=8,
        num_interactions=2, num_atom_layers=1,
    ).to(dtype)
    z, pos = ethanol(dtype)
    return representation, representation(z, pos)


def test_energy_head_is_sized_on_build_with_its_self_energies() -> None:
    head = EnergyHead(self_energies=[-1.0, -2.0, -3.0])
    assert len(head.readouts) == 0
    representation, out = features()
    head.build(representation.channels, out.features[0])
    assert head.self_energies.tolist() == [-1.0, -2.0, -3.0]
    assert head.readouts[1].weight.dtype == torch.float64
    values = head(out)
    assert set(values) == {"energy", "atom_energy", "layer_energy"}
    species_energy = values["layer_energy"][:, 0].sum()
    assert float(species_energy) == 2 * -2.0 + -3.0 + 6 * -1.0
    with pytest.raises(ValueError, match=r"built for feature widths \[3, 8, 8\]"):
        head.build([3, 16, 16])
    with pytest.raises(ValueError, match="one self-energy per species"):
        head.set_self_energies(torch.zeros(2))


def test_energy_sums_in_float64_from_float32_features() -> None:
    representation, out = features(torch.float32)
    head = EnergyHead(self_energies=[-13.6e2, -1029.0e1, -2041.0e1], output="energy_cc",
                      channels=representation.channels)
    values = head(out)
    assert set(values) == {"energy_cc", "atom_energy_cc", "layer_energy_cc"}
    assert values["energy_cc"].dtype == torch.float64
    exact = values["layer_energy_cc"].double().sum()
    assert float(values["energy_cc"]) == float(exact)


def test_charge_head_with_its_own_representation() -> None:
    representation, out = features()
    own, _ = features()
    head = ChargeHead(representation=own)
    assert head.channels == own.channels  # built at once, from its own network
    values = head(out, torch.tensor([1.0], dtype=torch.float64))
    assert abs(float(values["charges"].sum()) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="origin must be one of"):
        ChargeHead(origin="nucleus")
