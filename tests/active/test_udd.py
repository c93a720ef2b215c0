"""Uncertainty-driven dynamics: the bias against finite differences, and the explorer."""

from __future__ import annotations

import numpy as np
import pytest

from hipnn_pyg.active.committee import Committee
from hipnn_pyg.active.explore import LangevinExplorer
from hipnn_pyg.active.udd import (
    UncertaintyBiasedCommittee,
    UncertaintyDrivenExplorer,
    uncertainty_bias,
)
from tests.active.helpers import copper, tiny_models


def test_bias_forces_are_the_negative_gradient_of_the_bias_energy() -> None:
    committee = Committee(tiny_models(3))
    committee.fit_offsets([copper(s) for s in range(3)])
    atoms = copper(seed=5, stdev=0.1)
    biased = UncertaintyBiasedCommittee(committee, height=0.7, width=0.02)
    atoms.calc = biased
    forces = atoms.get_forces().copy()
    bias_forces = forces - committee.predict(atoms).forces
    assert np.abs(bias_forces).max() > 1e-4  # the bias acts here
    step = 1e-5
    for i, a in [(0, 0), (3, 1), (7, 2)]:
        energies = []
        for sign in (1.0, -1.0):
            work = atoms.copy()
            work.positions[i, a] += sign * step
            work.calc = UncertaintyBiasedCommittee(committee, height=0.7, width=0.02)
            energies.append(work.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[i, a],
                                                                         abs=1e-6)


def test_no_bias_where_the_members_agree() -> None:
    energies = np.array([1.0, 1.0, 1.0])
    forces = np.random.default_rng(0).normal(size=(3, 4, 3))
    energy, bias_forces = uncertainty_bias(energies, forces, 4, height=0.5, width=0.01)
    assert energy == 0.0 and not bias_forces.any()
    # large disagreement: the bias saturates at -height and its force fades
    energy, bias_forces = uncertainty_bias(np.array([0.0, 5.0, -5.0]), forces, 4, 0.5, 0.01)
    assert energy == pytest.approx(-0.5) and np.abs(bias_forces).max() < 1e-12


def test_explorer_runs_biased_md_and_reports_the_plain_committee() -> None:
    committee = Committee(tiny_models(2))
    committee.fit_offsets([copper(s) for s in range(3)])
    explorer = UncertaintyDrivenExplorer(height=0.5, width_relative=2.0, temperatures_K=[300],
                                         steps=20, check_interval=10, timestep_fs=1.0)
    frames = explorer.explore(committee, [copper(1)], seed=0)
    assert len(frames) == 2
    assert all(a.info["explorer"] == "udd" and a.info["active_group"].startswith("udd:")
               for a in frames)
    plain = committee.predict(frames[-1])
    assert frames[-1].info["rho_centred"] == pytest.approx(plain.rho_centred, rel=1e-9)
    # the bias drives the dynamics: the same trajectory without it goes elsewhere
    unbiased = LangevinExplorer(temperatures_K=[300], steps=20, check_interval=10,
                                timestep_fs=1.0).explore(committee, [copper(1)], seed=0)
    assert not np.allclose(frames[-1].positions, unbiased[-1].positions, atol=1e-6)
    flat = UncertaintyDrivenExplorer(height=0.0, width=1.0, temperatures_K=[300], steps=20,
                                     check_interval=10, timestep_fs=1.0)
    np.testing.assert_allclose(flat.explore(committee, [copper(1)], seed=0)[-1].positions,
                               unbiased[-1].positions, atol=1e-9)  # no bias: plain MD


def test_a_relative_width_needs_the_training_disagreement() -> None:
    committee = Committee(tiny_models(2))  # no fit_offsets
    with pytest.raises(ValueError, match="give width instead"):
        UncertaintyDrivenExplorer().bias_width(committee)
    assert UncertaintyDrivenExplorer(width=0.03).bias_width(committee) == 0.03
