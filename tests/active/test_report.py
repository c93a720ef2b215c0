"""What an active-learning run reports on its test sets."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from hipnn_pyg.active.committee import Prediction
from hipnn_pyg.active.report import committee_errors
from tests.active.helpers import copper


class Known:
    r"""A stand-in committee: labels plus known errors, disagreement ``rho`` rising with
    each frame's error and ``force_dev`` falling."""

    def __init__(self, errors: list[float]) -> None:
        self.errors = errors

    def predict_many(self, frames):
        out = []
        for k, atoms in enumerate(frames):
            forces = atoms.calc.results["forces"] + self.errors[k]
            energy = atoms.calc.results["energy"] + 2.0 + 0.1 * k  # offset 2 eV, slope
            out.append(Prediction(energy, forces, rho=self.errors[k],
                                  force_dev=-self.errors[k], rho_centred=0.0))
        return out


def test_errors_percentiles_and_rank_correlations() -> None:
    frames = []
    for seed in range(20):
        atoms = copper(seed)
        forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=-float(seed), forces=forces)
        frames.append(atoms)
    errors = [0.01 * (k + 1) for k in range(20)]
    result = committee_errors(Known(errors), frames)
    assert result["forces_mae"] == pytest.approx(np.mean(errors))
    assert result["frame_forces_rmse_max"] == pytest.approx(0.2)
    assert result["frame_forces_rmse_p95"] == pytest.approx(np.percentile(errors, 95))
    assert result["energy_mae"] == pytest.approx(2.0 + 0.1 * np.mean(np.arange(20)))
    # the 2 eV offset is gone, the slope is not
    assert result["energy_mae_offset_free"] == pytest.approx(
        np.mean(np.abs(0.1 * np.arange(20) - 0.95)))
    assert result["spearman_rho"] == pytest.approx(1.0)
    assert result["spearman_force_dev"] == pytest.approx(-1.0)
    assert "spearman_rho_centred" not in result  # constant: no ranking to compare
