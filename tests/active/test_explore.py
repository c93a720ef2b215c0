"""Exploration: MD that stops at the first uncertain frame or is cut when it explodes,
ANI-1x normal-mode sampling, pools with unknown elements."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.cluster import Octahedron

from hipnn_pyg.active.committee import Committee
from hipnn_pyg.active.explore import LangevinExplorer, NormalModeExplorer, PoolExplorer
from tests.active.helpers import EMTCommittee, copper, rho_of, tiny_models


def test_md_stops_at_the_first_frame_over_the_threshold() -> None:
    committee = Committee(tiny_models(2))
    explorer = LangevinExplorer(temperatures_K=[300], steps=100, check_interval=10,
                                timestep_fs=1.0, trajectories=2)
    free = explorer.explore(committee, [copper()], seed=1)
    threshold = float(np.median(rho_of(free)))
    explorer.stop_threshold = threshold
    stopped = explorer.explore(committee, [copper()], seed=1)
    for group in ("md:s0:T300:r0", "md:s0:T300:r1"):
        full = rho_of([a for a in free if a.info["active_group"] == group])
        rho = rho_of([a for a in stopped if a.info["active_group"] == group])
        over = np.flatnonzero(full > threshold)
        assert len(rho) == (over[0] + 1 if len(over) else len(full)) > 0
        np.testing.assert_array_equal(rho, full[:len(rho)])  # same seeds, same path
    assert len(stopped) < len(free)


def test_an_exploding_trajectory_is_cut_not_fatal(caplog) -> None:
    explorer = LangevinExplorer(temperatures_K=[300], steps=100, check_interval=1,
                                timestep_fs=40.0, min_distance=1.5)
    frames = explorer.explore(EMTCommittee(), [copper()], seed=0)
    assert len(frames) < 100
    assert "trajectory cut" in caplog.text


def test_normal_mode_samples_have_the_ani_energy_bound() -> None:
    cluster = Octahedron("Cu", 3)
    cluster.center(vacuum=5.0)
    explorer = NormalModeExplorer(temperatures_K=[300.0], samples=20, fmax=1e-3,
                                  max_steps=500)
    minimum = explorer.minimise(EMTCommittee(), cluster)
    directions, constants = explorer.modes(EMTCommittee(), minimum)
    assert len(constants) == 3 * len(cluster) - 6 and (constants > 0).all()
    flat = directions.reshape(len(constants), -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(len(constants)), atol=1e-8)  # one mass
    rng = np.random.default_rng(0)
    bound = 1.5 * len(cluster) * units.kB * 300.0  # ANI-1x: at most 3/2 N kB T
    energies = []
    for _ in range(50):
        shift = explorer.displacement(directions, constants, len(cluster), 300.0, rng)
        amplitudes = flat @ shift.reshape(-1)
        energies.append(0.5 * np.sum(constants * amplitudes**2))
    assert min(energies) > 0 and max(energies) <= bound * (1 + 1e-9)
    assert max(energies) > 0.5 * bound  # the bound is reached, not undershot
    frames = explorer.explore(EMTCommittee(), [cluster], seed=0)
    assert len(frames) == 20 and len({a.info["active_id"] for a in frames}) == 20


def test_pool_with_an_unknown_element_is_refused(tmp_path) -> None:
    import ase.io

    pool = [copper(), copper(1)]
    pool[1][3].symbol = "Ag"
    ase.io.write(tmp_path / "pool.extxyz", pool)
    explorer = PoolExplorer(tmp_path / "pool.extxyz")
    with pytest.raises(ValueError, match=r"frame 1 holds Ag \(Z=47\), unknown to the ensemble"):
        explorer.check_frames([29])


def test_pool_candidates_carry_the_committee_verdict(tmp_path) -> None:
    import ase.io

    ase.io.write(tmp_path / "pool.extxyz", [copper(i) for i in range(3)] + [
        bulk("Cu", cubic=True)])
    committee = Committee(tiny_models(2))
    frames = PoolExplorer(tmp_path / "pool.extxyz").explore(committee, [], seed=0)
    assert [a.info["active_id"] for a in frames] == [f"pool:{i}" for i in range(4)]
    assert frames[2].info["rho"] == pytest.approx(committee.predict(copper(2)).rho)
    assert isinstance(frames[0], Atoms)


class FailingCommittee(EMTCommittee):
    r"""A committee whose forces raise ``error`` (out of memory, a bug)."""

    error: Exception = RuntimeError("out of memory")

    def calculate(self, atoms=None, properties=None, system_changes=None):
        raise FailingCommittee.error


@pytest.mark.parametrize("error", [RuntimeError("DefaultCPUAllocator: can't allocate memory"),
                                   TypeError("a bug"), IndexError("a bug")])
def test_md_passes_errors_that_are_not_about_the_geometry_through(error) -> None:
    FailingCommittee.error = error
    explorer = LangevinExplorer(temperatures_K=[300], steps=10, check_interval=5)
    with pytest.raises(type(error), match=str(error)):
        explorer.explore(FailingCommittee(), [copper()], seed=0)


def test_md_cuts_a_trajectory_on_a_geometry_error(caplog) -> None:
    from hipnn_pyg.nn.checks import GeometryError

    FailingCommittee.error = GeometryError("atoms 0 and 1 are 0.1 Å apart")
    explorer = LangevinExplorer(temperatures_K=[300], steps=10, check_interval=5)
    assert explorer.explore(FailingCommittee(), [copper()], seed=0) == []
    assert "trajectory cut" in caplog.text and "0.1 Å apart" in caplog.text


def test_md_runs_past_its_first_check_when_the_committee_is_as_sure_as_on_its_data() -> None:
    committee = Committee(tiny_models(2))
    committee.fit_offsets([copper(seed=s) for s in range(3)])
    assert committee.training_disagreement["energy"] > 0
    explorer = LangevinExplorer(temperatures_K=[300], steps=60, check_interval=10,
                                stop_relative=3.0)
    frames = explorer.explore(committee, [copper()], seed=2)
    assert len(frames) > 1  # not stopped at the first check
    rho = rho_of(frames)
    threshold = explorer.threshold(committee)
    assert threshold == pytest.approx(3.0 * committee.training_disagreement["energy"])
    assert (rho[:-1] <= threshold).all()  # it stops only where the committee is unsure
    explorer.stop_relative = 0.0  # any disagreement at all: the first check ends it
    assert len(explorer.explore(committee, [copper()], seed=2)) == 1


def test_md_seeds_rotate_through_the_data_set() -> None:
    explorer = LangevinExplorer(temperatures_K=[300], steps=10, check_interval=10,
                                max_seeds=2)
    seeds = [copper(seed=s) for s in range(6)]
    groups = {seed: {a.info["active_group"].split(":")[1] for a in
                     explorer.explore(EMTCommittee(), seeds, seed=seed)} for seed in range(4)}
    assert all(len(g) == 2 for g in groups.values())
    assert len(set().union(*groups.values())) > 2  # other seeds in other rounds


def test_normal_modes_are_sampled_around_other_minima_each_round() -> None:
    explorer = NormalModeExplorer(temperatures_K=[300], samples=1, max_seeds=2, fmax=0.2,
                                  max_steps=20)
    seeds = [copper(seed=s) for s in range(6)]
    groups = {seed: {a.info["active_group"].split(":")[1] for a in
                     explorer.explore(EMTCommittee(), seeds, seed=seed)} for seed in range(4)}
    assert all(len(g) == 2 for g in groups.values())
    assert len(set().union(*groups.values())) > 2
