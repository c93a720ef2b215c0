"""Query-by-committee measures against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hipnn_pyg.active.committee import Committee, energy_disagreement, force_disagreement
from hipnn_pyg.calculator import HIPNNCalculator
from tests.active.helpers import copper, tiny_models


def test_rho_and_force_spread_equal_hand_computation() -> None:
    models = tiny_models(3)
    atoms = copper()
    energies, forces = [], []
    for model in models:
        work = atoms.copy()
        work.calc = HIPNNCalculator(model)
        energies.append(work.get_potential_energy())
        forces.append(work.get_forces())
    mean = sum(energies) / 3
    sigma = math.sqrt(sum((e - mean) ** 2 for e in energies) / 2)  # sample std, K - 1
    spread = max(
        math.sqrt(sum(np.var([f[i, a] for f in forces], ddof=1) for a in range(3)))
        for i in range(len(atoms))
    )
    prediction = Committee(models).predict(atoms)
    assert sigma > 0 and spread > 0
    assert prediction.rho == pytest.approx(sigma / math.sqrt(len(atoms)), rel=1e-10)
    assert prediction.force_dev == pytest.approx(spread, rel=1e-10)
    assert prediction.energy == pytest.approx(mean, rel=1e-12)
    assert energy_disagreement(energies, len(atoms)) == pytest.approx(prediction.rho)
    assert force_disagreement(np.stack(forces)) == pytest.approx(spread)
    assert prediction.measure("energy") == prediction.rho
    with pytest.raises(ValueError, match="unknown disagreement measure 'stress'"):
        prediction.measure("stress")


def test_committee_reuses_results_of_unchanged_atoms() -> None:
    committee = Committee(tiny_models(2))
    atoms = copper()
    first = committee.predict(atoms)
    atoms.positions[0, 0] += 0.1
    assert committee.predict(atoms).energy != first.energy


def test_offset_free_rho_ignores_a_constant_shift_of_one_member() -> None:
    import torch

    models = tiny_models(3)
    frames = [copper(seed=s) for s in range(4)]
    plain = Committee(models)
    plain.fit_offsets(frames)
    shifted_models = [m for m in tiny_models(3)]
    with torch.no_grad():  # member 1: every self-energy +0.7 eV
        shifted_models[1].set_self_energies(shifted_models[1].self_energies + 0.7)
    shifted = Committee(shifted_models)
    shifted.fit_offsets(frames)
    probe = copper(seed=9)
    before, after = plain.predict(probe.copy()), shifted.predict(probe.copy())
    assert after.rho > before.rho + 0.1  # the plain measure sees the offset
    assert after.rho_centred == pytest.approx(before.rho_centred, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(shifted.offsets(probe.numbers) - plain.offsets(probe.numbers),
                               np.array([-1, 2, -1]) / 3 * 0.7 * len(probe), atol=1e-9)


def test_offset_free_rho_ignores_self_energy_shifts_across_cell_sizes() -> None:
    # one member's copper self-energy +0.1 eV: an offset that grows with the atom count,
    # which one constant per member could not remove
    import copy

    import torch
    from ase.build import bulk

    (model,) = tiny_models(1)
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.set_self_energies(shifted.self_energies + 0.1)
    committee = Committee([model, shifted])
    cells = [bulk("Cu", cubic=True), copper(1)]  # 4 and 8 atoms
    committee.fit_offsets(cells)
    for size in [(1, 1, 1), (2, 1, 1), (2, 2, 1)]:  # 4, 8, 16 atoms
        probe = bulk("Cu", cubic=True).repeat(size)
        probe.rattle(0.05, seed=3)
        prediction = committee.predict(probe)
        assert prediction.rho > 0.01
        assert prediction.rho_centred == pytest.approx(0.0, abs=1e-9)


def test_batched_predictions_equal_one_at_a_time() -> None:
    committee = Committee(tiny_models(3))
    frames = [copper(seed) for seed in range(5)]
    committee.fit_offsets(frames[:3])
    batched = committee.predict_many(frames, batch_size=2)
    for atoms, prediction in zip(frames, batched, strict=True):
        single = committee.predict(atoms)
        assert prediction.energy == pytest.approx(single.energy, rel=1e-12)
        np.testing.assert_allclose(prediction.forces, single.forces, atol=1e-10)
        for key in ("rho", "rho_centred", "force_dev"):
            assert getattr(prediction, key) == pytest.approx(getattr(single, key), rel=1e-9)
        np.testing.assert_allclose(prediction.energies, single.energies, rtol=1e-12)
