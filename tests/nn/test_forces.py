"""Forces and stress: from the energy head only, whatever other heads the potential has."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg import HIPNNPotential, energy_forces_stress
from tests.nn.helpers import ethanol, small_model


def test_other_heads_do_not_change_forces() -> None:
    energy_model = small_model()
    z, pos = ethanol()
    alone = energy_forces_stress(energy_model, z, pos)
    with_charges = energy_forces_stress(HIPNNPotential(energy_model), z, pos)
    assert torch.equal(alone["forces"], with_charges["forces"])
    assert "charges" in with_charges and "charges" not in alone
    step = torch.zeros_like(pos)
    step[0, 0] = 1e-5
    numeric = -(energy_model(z, pos + step) - energy_model(z, pos - step)) / 2e-5
    torch.testing.assert_close(alone["forces"][0, 0], numeric[0], atol=1e-7, rtol=0)


def test_stress_needs_a_cell() -> None:
    z, pos = ethanol()
    with pytest.raises(ValueError, match="stress needs a periodic cell"):
        energy_forces_stress(small_model(), z, pos, compute_stress=True)
