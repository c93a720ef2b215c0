"""Labelling the selected frames: exact oracle numbers, skipped failures, resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT

from hipnn_pyg.active.oracle import Oracle, label_frames
from tests.active.helpers import copper


class Killed(BaseException):
    """A kill (not an oracle failure: it must not be caught)."""


class CountingEMT(EMT):
    r"""EMT that counts its calls and fails when the first atom has x < -0.4 Å."""

    calls = 0

    def calculate(self, atoms=None, properties=None, system_changes=None):
        CountingEMT.calls += 1
        if atoms is not None and atoms.positions[0, 0] < -0.4:
            raise RuntimeError("SCF not converged")
        super().calculate(atoms, properties or ["energy"], system_changes or all_changes)


def frames(count: int = 5):
    out = []
    for i in range(count):
        atoms = copper(seed=i)
        atoms.info["active_id"] = f"md:{i}"
        out.append(atoms)
    return out


class CountingOracle(Oracle):
    def make(self) -> CountingEMT:
        return CountingEMT()


def test_labels_are_the_oracles_numbers_exactly(tmp_path) -> None:
    todo = frames(3)
    result = label_frames(todo, Oracle("emt"), tmp_path / "l.extxyz", tmp_path / "f.jsonl")
    assert result.new == 3 and not result.failed and result.seconds > 0
    for source, labelled in zip(todo, result.labelled, strict=True):
        np.testing.assert_allclose(labelled.positions, source.positions, rtol=0, atol=5e-9)
        reference = labelled.copy()  # the geometry as stored
        reference.calc = EMT()
        assert labelled.info["active_id"] == source.info["active_id"]
        assert labelled.get_potential_energy() == reference.get_potential_energy()
        # extxyz keeps 8 decimals of per-atom columns: exact to half a unit of the last
        np.testing.assert_allclose(labelled.get_forces(), reference.get_forces(), rtol=0,
                                   atol=5e-9)
        np.testing.assert_array_equal(labelled.get_stress(), reference.get_stress())


def test_a_failure_is_recorded_and_skipped(tmp_path) -> None:
    todo = frames(4)
    todo[1].positions[0, 0] = -0.5
    result = label_frames(todo, CountingOracle(), tmp_path / "l.extxyz",
                          tmp_path / "f.jsonl")
    assert [a.info["active_id"] for a in result.labelled] == ["md:0", "md:2", "md:3"]
    (record,) = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert record["id"] == "md:1" and "SCF not converged" in record["error"]


def test_resume_after_a_kill_never_recomputes_a_label(tmp_path) -> None:
    todo = frames(5)
    todo[3].positions[0, 0] = -0.5
    files = tmp_path / "l.extxyz", tmp_path / "f.jsonl"

    def kill_after_four(index: int) -> None:
        if index == 3:
            raise Killed

    CountingEMT.calls = 0
    with pytest.raises(Killed):
        label_frames(todo, CountingOracle(), *files, on_frame=kill_after_four)
    assert CountingEMT.calls == 4
    with open(files[0], "a") as stream:  # a torn frame from a kill mid-write
        stream.write("8\nLattice=")
    result = label_frames(todo, CountingOracle(), *files)
    assert CountingEMT.calls == 5 and result.new == 1
    assert [a.info["active_id"] for a in result.labelled] == ["md:0", "md:1", "md:2", "md:4"]
    uninterrupted = label_frames(todo, CountingOracle(), tmp_path / "u.extxyz",
                                 tmp_path / "u.jsonl")
    for a, b in zip(result.labelled, uninterrupted.labelled, strict=True):
        assert a.get_potential_energy() == b.get_potential_energy()


def test_frames_of_another_run_are_refused(tmp_path) -> None:
    label_frames(frames(2), Oracle("emt"), tmp_path / "l.extxyz", tmp_path / "f.jsonl")
    other = frames(1)
    other[0].info["active_id"] = "pool:7"
    with pytest.raises(ValueError, match="not among the selected ones"):
        label_frames(other, Oracle("emt"), tmp_path / "l.extxyz", tmp_path / "f.jsonl")


class BrokenEMT(EMT):
    r"""An oracle that raises ``error`` on every frame."""

    error: Exception = RuntimeError("SCF not converged")

    def calculate(self, atoms=None, properties=None, system_changes=None):
        raise BrokenEMT.error


class BrokenOracle(Oracle):
    def make(self) -> BrokenEMT:
        return BrokenEMT()


def test_an_oracle_that_cannot_start_stops_before_any_frame_is_charged(tmp_path) -> None:
    from hipnn_pyg.active.oracle import OracleError

    files = tmp_path / "l.extxyz", tmp_path / "f.jsonl"
    with pytest.raises(OracleError, match="cannot start.*unknown calculator"):
        label_frames(frames(3), Oracle("no-such-code"), *files)
    with pytest.raises(OracleError, match="cannot start.*unknown PySCF method 'casscf'"):
        label_frames(frames(3), Oracle("pyscf", {"method": "casscf"}), *files)
    assert not files[0].exists() and not files[1].exists()


def test_an_oracle_failing_on_every_first_frame_stops_with_its_message(tmp_path) -> None:
    from hipnn_pyg.active.oracle import PROBE_FRAMES, OracleError

    files = tmp_path / "l.extxyz", tmp_path / "f.jsonl"
    with pytest.raises(OracleError, match=f"first {PROBE_FRAMES} frames.*SCF not converged"):
        label_frames(frames(5), BrokenOracle(), *files)
    assert not files[1].exists()  # nothing recorded: a rerun tries them again


def test_a_programming_error_of_the_oracle_passes_through_unrecorded(tmp_path) -> None:
    files = tmp_path / "l.extxyz", tmp_path / "f.jsonl"
    BrokenEMT.error = TypeError("calculate() got an unexpected argument")
    try:
        with pytest.raises(TypeError, match="unexpected argument"):
            label_frames(frames(3), BrokenOracle(), *files)
    finally:
        BrokenEMT.error = RuntimeError("SCF not converged")
    assert not files[1].exists()


def test_failures_before_the_first_success_are_recorded_once_it_works(tmp_path) -> None:
    todo = frames(4)
    todo[0].positions[0, 0] = -0.5  # the first frame fails, then the oracle works
    result = label_frames(todo, CountingOracle(), tmp_path / "l.extxyz",
                          tmp_path / "f.jsonl")
    assert [r["id"] for r in result.failed] == ["md:0"] and len(result.labelled) == 3


def test_the_stored_label_oracle_returns_the_data_sets_labels(tmp_path) -> None:
    from ase.units import kcal, mol

    from tests.conftest import REPO

    path = REPO / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz"
    raw = np.load(path)
    todo = []
    for k in (3, 7):
        atoms = Atoms(numbers=raw["nuclear_charges"], positions=raw["coords"][k])
        atoms.info["active_id"] = f"pool:{k}"
        todo.append(atoms)
    stranger = todo[0].copy()
    stranger.positions[0, 0] += 0.1
    stranger.info["active_id"] = "pool:new"
    result = label_frames([*todo, stranger], Oracle("stored", {"path": str(path)}),
                          tmp_path / "l.extxyz", tmp_path / "f.jsonl")
    assert [a.info["active_id"] for a in result.labelled] == ["pool:3", "pool:7"]
    for labelled, k in zip(result.labelled, (3, 7), strict=True):
        assert labelled.get_potential_energy() == pytest.approx(
            raw["energies"][k] * kcal / mol, abs=1e-9)
        np.testing.assert_allclose(labelled.get_forces(), raw["forces"][k] * kcal / mol,
                                   atol=5e-8)
    assert [r["id"] for r in result.failed] == ["pool:new"]
    assert "not among the stored labels" in result.failed[0]["error"]
