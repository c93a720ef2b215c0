"""Selection: the most uncertain candidates, spread out; the random baseline."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from hipnn_pyg.active.selection import select_by_committee, select_random


def candidates(rho: list[float], groups: list[str] | None = None) -> list[Atoms]:
    frames = []
    for i, value in enumerate(rho):
        atoms = Atoms("H", positions=[[0.0, 0.0, float(i)]])
        atoms.info.update(rho=value, force_dev=10 * value, active_order=i,
                          active_group=groups[i] if groups else f"g{i}")
        frames.append(atoms)
    return frames


def _candidate(atoms: Atoms, rho: float, group: str) -> Atoms:
    atoms.info.update(rho=rho, force_dev=rho, active_order=0, active_group=group)
    return atoms


def test_picks_the_highest_disagreement_above_the_threshold() -> None:
    rho = list(np.random.default_rng(0).uniform(0, 1, 40))
    picked = select_by_committee(candidates(rho), "energy", threshold=0.2, max_frames=5)
    assert picked == list(np.argsort(rho)[::-1][:5])
    few = select_by_committee(candidates(rho), "forces", threshold=9.5, max_frames=5)
    assert sorted(rho[i] for i in few) == sorted(r for r in rho if 10 * r > 9.5)


def test_spreads_picks_along_a_trajectory() -> None:
    rho = [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.05]
    frames = candidates(rho, ["t"] * 6 + ["u"])
    assert select_by_committee(frames, max_frames=3, min_separation=2) == [1, 3, 5]
    assert select_by_committee(frames, max_frames=3, max_per_group=1) == [1, 6]


def test_random_picks_the_same_count_reproducibly() -> None:
    frames = candidates([0.0] * 30)
    first = select_random(frames, 7, seed=3)
    assert len(set(first)) == 7 and first == select_random(frames, 7, seed=3)
    assert first != select_random(frames, 7, seed=4)
    assert len(select_random(frames, 50, seed=0)) == 30


def test_pool_selection_takes_as_many_frames_as_asked(tmp_path) -> None:
    # Every pool frame is a group of its own: max_per_group no longer caps a pool at 1.
    from ase.io import write

    from hipnn_pyg.active.committee import Prediction
    from hipnn_pyg.active.explore import PoolExplorer
    from tests.active.helpers import copper

    write(tmp_path / "pool.extxyz", [copper(seed=s) for s in range(12)])

    class Ranked:
        calls = 0

        def predict(self, atoms):
            Ranked.calls += 1
            return Prediction(0.0, np.zeros((len(atoms), 3)), 0.1 * Ranked.calls, 0.0)

        def predict_many(self, frames):
            return [self.predict(atoms) for atoms in frames]

    candidates = PoolExplorer(tmp_path / "pool.extxyz").explore(Ranked(), [], seed=0)
    picked = select_by_committee(candidates, max_frames=5, max_per_group=1)
    assert len(picked) == 5
    assert picked == [11, 10, 9, 8, 7]  # the most uncertain first


def test_diverse_selection_skips_near_copies_of_the_most_uncertain() -> None:
    # three near-copies of one structure are the most uncertain; farthest-point thinning
    # takes one of them, then the structures that differ
    from tests.active.helpers import copper

    base = copper(seed=0, stdev=0.05)
    frames = []
    for k in range(3):
        twin = base.copy()
        twin.positions[0, 0] += 1e-4 * k
        frames.append(_candidate(twin, rho=1.0 - 0.01 * k, group=f"twin{k}"))
    frames += [_candidate(copper(seed=s, stdev=0.2), rho=0.5 - 0.01 * s, group=f"o{s}")
               for s in range(1, 4)]
    assert select_by_committee(frames, max_frames=3) == [0, 1, 2]
    picked = select_by_committee(frames, max_frames=3, diversity="fps", shortlist_factor=2)
    assert picked[0] == 0 and len(picked) == 3 and set(picked[1:]) <= {3, 4, 5}
    with pytest.raises(ValueError, match="unknown diversity rule"):
        select_by_committee(frames, diversity="kmeans")


def test_diversity_descriptor_is_invariant_to_rotation_and_translation() -> None:
    from hipnn_pyg.active.selection import inverse_distances
    from tests.active.helpers import copper

    molecule = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    moved = molecule.copy()
    moved.rotate(37, "z")
    moved.translate([100.0, -3.0, 7.0])
    np.testing.assert_allclose(inverse_distances(moved), inverse_distances(molecule))
    crystal = copper(seed=1)
    shifted = crystal.copy()
    shifted.translate([crystal.cell[0, 0] * 0.5, 0, 0])
    shifted.wrap()
    np.testing.assert_allclose(inverse_distances(shifted), inverse_distances(crystal),
                               rtol=1e-10)
