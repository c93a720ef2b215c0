"""The active-learning loop end to end: EMT copper, a 2-model tiny committee, 2 rounds."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from hipnn_pyg.active.loop import ActiveLearning, run_active
from hipnn_pyg.extxyz import read_frames
from tests.active.helpers import active_config, copper, rho_of
from tests.conftest import REPO

NO_SPREAD = ["active.min_separation=0"]


class Killed(BaseException):
    """A simulated kill: not an error the loop may catch."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    r"""An uninterrupted 2-round run."""
    run_dir = tmp_path_factory.mktemp("active") / "run"
    state = run_active(active_config(run_dir, NO_SPREAD))
    assert state["stage"] == "done"
    return run_dir


def summary(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "summary.csv") as stream:
        return list(csv.DictReader(stream))


def test_two_rounds_grow_the_set_by_the_selected_frames(finished: Path) -> None:
    rows = summary(finished)
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert "reached max_rounds=2" in rows[-1]["stop_reason"]
    sizes = [int(r["train_size"]) for r in rows]
    assert sizes[0] == 8
    for r in (0, 1):
        selected = read_frames(finished / f"round_{r:03d}" / "selected.extxyz")
        assert len(selected) == 3 == int(rows[r]["labelled"])
        assert sizes[r + 1] == sizes[r] + len(selected)
        assert float(rows[r]["oracle_seconds"]) > 0 and float(rows[r]["rho_max"]) > 0
    assert float(rows[-1]["val_energy_mae"]) >= 0 and float(rows[-1]["val_forces_mae"]) > 0
    assert len(read_frames(finished / "dataset.extxyz")) == sizes[-1]
    assert (finished / "learning_curve.png").stat().st_size > 0
    assert len(list((finished / "round_002" / "models").glob("member_*/model.pt"))) == 2


def test_selected_frames_are_the_most_uncertain_candidates(finished: Path) -> None:
    for r in (0, 1):
        folder = finished / f"round_{r:03d}"
        candidates = read_frames(folder / "candidates.extxyz")
        selected = read_frames(folder / "selected.extxyz")
        top = np.sort(rho_of(candidates))[::-1][:3]
        np.testing.assert_array_equal(rho_of(selected), top)


def test_labelled_frames_carry_the_oracles_numbers(finished: Path) -> None:
    labelled = read_frames(finished / "round_001" / "labelled.extxyz")
    selected = read_frames(finished / "round_001" / "selected.extxyz")
    for frame, source in zip(labelled, selected, strict=True):
        np.testing.assert_array_equal(frame.positions, source.positions)
        reference = source.copy()
        reference.calc = EMT()
        assert frame.get_potential_energy() == reference.get_potential_energy()
        np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), rtol=0,
                                   atol=5e-9)  # extxyz's 8 decimals


def test_kills_between_stages_and_mid_labelling_resume_to_the_same_data(
        finished: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    kills = [("explore", 1, None), ("labelled", 1, 1)]

    def kill(stage: str, round_: int, detail: object) -> None:
        if kills and (stage, round_, detail) == kills[0]:
            kills.pop(0)
            raise Killed

    for _ in range(2):
        with pytest.raises(Killed):
            run_active(active_config(run_dir, NO_SPREAD), on_event=kill)
    assert len(read_frames(run_dir / "round_001" / "labelled.extxyz")) == 2
    run_active(active_config(run_dir, NO_SPREAD), on_event=kill)
    resumed, reference = (read_frames(d / "dataset.extxyz") for d in (run_dir, finished))
    assert len(resumed) == len(reference)
    for a, b in zip(resumed, reference, strict=True):
        assert a.info["active_id"] == b.info["active_id"]
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
    assert ActiveLearning(active_config(run_dir, NO_SPREAD)).run()["stage"] == "done"


def test_random_selection_explores_alike_and_picks_as_many(tmp_path: Path) -> None:
    cfg = active_config(tmp_path / "run", [*NO_SPREAD, "selection=random",
                                           "active.max_rounds=1", "active.final_training=false",
                                           "active.ensemble.bootstrap=true"])
    state = run_active(cfg)
    assert state["stop_reason"] == "reached max_rounds=1"
    folder = tmp_path / "run" / "round_000"
    resampled = read_frames(folder / "models" / "member_1" / "bootstrap.extxyz")
    ids = [a.info["active_id"] for a in resampled]
    assert len(ids) == 8 and len(set(ids)) < 8  # drawn with replacement
    candidates = {a.info["active_id"] for a in read_frames(folder / "candidates.extxyz")}
    selected = [a.info["active_id"] for a in read_frames(folder / "selected.extxyz")]
    assert len(selected) == 3 and set(selected) <= candidates


def test_changed_settings_on_an_existing_run_are_refused(tmp_path: Path) -> None:
    ActiveLearning(active_config(tmp_path, ["active.threshold=0.01"]))._check_config()
    ActiveLearning(active_config(tmp_path, ["active.threshold=0.01",
                                            "active.max_rounds=5"]))._check_config()
    with pytest.raises(ValueError, match=r"other settings \(\['threshold'\]\)"):
        ActiveLearning(active_config(tmp_path, ["active.threshold=0.02"]))._check_config()


def test_unknown_element_in_a_pool_is_refused_before_labelling(tmp_path: Path) -> None:
    import ase.io

    pool = [copper(), copper(1)]
    pool[1][2].symbol = "Au"
    ase.io.write(tmp_path / "pool.extxyz", pool)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "active.py"), f"run_dir={run_dir}",
         "progress=false", "active.ensemble.size=2",
         "active.explorers.pool={_target_:hipnn_pyg.active.explore.PoolExplorer,"
         f"path:'{tmp_path / 'pool.extxyz'}'}}"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "frame 1 holds Au (Z=79), unknown to the ensemble" in result.stderr
    assert not (run_dir / "initial_labelled.extxyz").exists()


def test_a_round_that_selects_nothing_stops_the_run(tmp_path: Path) -> None:
    state = run_active(active_config(tmp_path, ["active.threshold=1e9"]))
    assert state["stop_reason"] == "round 0 selected nothing (no candidate above threshold 1e+09)"
    assert not (tmp_path / "round_001").exists()  # the set did not grow: no retraining
    assert summary(tmp_path)[-1]["stop_reason"] == state["stop_reason"]


def test_the_labelling_budget_stops_the_run(tmp_path: Path) -> None:
    state = run_active(active_config(tmp_path, ["active.max_labels=4", "active.max_rounds=5"]))
    assert state["stop_reason"] == "labelling budget of 4 frames spent"
    rows = summary(tmp_path)
    assert [r["labelled"] for r in rows] == ["3", "1", ""]
    assert int(rows[-1]["train_size"]) == 8 + 4


def test_a_pool_is_labelled_once_across_rounds(tmp_path: Path) -> None:
    import ase.io

    ase.io.write(tmp_path / "pool.extxyz", [copper(seed) for seed in range(10, 16)])
    state = run_active(active_config(tmp_path / "run", [
        *NO_SPREAD, "active.explorers.md=null", "active.final_training=false",
        "active.explorers.pool={_target_:hipnn_pyg.active.explore.PoolExplorer,"
        f"path:'{tmp_path / 'pool.extxyz'}'}}"]))
    assert state["stop_reason"] == "reached max_rounds=2"
    picked = [a.info["active_id"] for r in (0, 1) for a in
              read_frames(tmp_path / "run" / f"round_{r:03d}" / "selected.extxyz")]
    assert sorted(picked) == [f"pool:{i}" for i in range(6)]
    assert len(read_frames(tmp_path / "run" / "round_001" / "candidates.extxyz")) == 3


def test_a_step_budget_trains_each_member_the_same_steps_on_a_fixed_validation_set(
        tmp_path: Path) -> None:
    import ase.io
    import torch

    labelled = []
    for seed in range(20, 24):
        atoms = copper(seed)
        atoms.calc = EMT()
        atoms.get_forces()
        labelled.append(atoms)
    ase.io.write(tmp_path / "validation.extxyz", labelled)
    state = run_active(active_config(tmp_path / "run", [
        *NO_SPREAD, "active.max_rounds=1", "active.final_training=false",
        "active.ensemble.steps=7", "active.ensemble.validations=2",
        "active.ensemble.validation={_target_:hipnn_pyg.active.structures.read,"
        f"path:'{tmp_path / 'validation.extxyz'}'}}"]))
    assert state["stage"] == "done"
    run = tmp_path / "run"
    assert len(read_frames(run / "validation.extxyz")) == 4
    for member in (0, 1):
        folder = run / "round_000" / "models" / f"member_{member}"
        checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
        # 8 frames in batches of 4: 7 steps are 3.5 epochs, rounded up to 2 validations
        # of 2 epochs each, the last one at the end
        assert (checkpoint["global_step"], checkpoint["epoch"]) == (8, 3)
        hparams = checkpoint["hyper_parameters"]
        assert hparams["scheduler_interval"] == "step"
        # the cosine decay ends at the floor (1% of the rate) with the last step
        assert checkpoint["lr_schedulers"][0]["last_epoch"] == 8
        final = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
        assert final == pytest.approx(0.01 * 1e-3)


def test_unlabelled_validation_frames_are_refused(tmp_path: Path) -> None:
    import ase.io

    ase.io.write(tmp_path / "validation.extxyz", [copper(30)])
    cfg = active_config(tmp_path / "run", [
        "active.ensemble.validation={_target_:hipnn_pyg.active.structures.read,"
        f"path:'{tmp_path / 'validation.extxyz'}'}}"])
    with pytest.raises(ValueError, match="active.ensemble.validation: frame 0 has no energy"):
        run_active(cfg)
    assert not (tmp_path / "run" / "round_000").exists()


def test_validation_frames_need_the_forces_the_members_train_on(tmp_path: Path) -> None:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = copper(31)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)  # energy only
    ase.io.write(tmp_path / "validation.extxyz", [atoms])
    # a plain path is accepted, as for test_sets
    cfg = active_config(tmp_path / "run", [
        f"active.ensemble.validation='{tmp_path / 'validation.extxyz'}'"])
    with pytest.raises(ValueError, match="frame 0 has no forces; the members train on "
                                         "energies and forces"):
        run_active(cfg)


def test_an_unknown_diversity_rule_is_refused_before_any_round(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"active.diversity='FPS': choose one of"):
        run_active(active_config(tmp_path / "run", ["active.diversity=FPS"]))
    assert not (tmp_path / "run" / "round_000").exists()
