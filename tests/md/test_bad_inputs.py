"""Bad-input corpus, MD side: a broken start structure or option is refused up front,
naming the problem, and the trajectory and log of an earlier run stay byte-identical;
``hipnn-md`` says the same in one line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from hipnn_pyg.calculator import HIPNNCalculator
from hipnn_pyg.cli import md_task
from hipnn_pyg.md import run_md
from hipnn_pyg.serialization import save_model
from tests.bad_inputs import (
    UNSAFE,
    assert_unchanged,
    crafted_model,
    failed_with,
    run_cli,
    snapshot,
)
from tests.nn.helpers import ethanol, small_model
from tests.train.helpers import compose_config


def _ethanol() -> Atoms:
    z, pos = ethanol()
    return Atoms(numbers=z.numpy(), positions=pos.numpy())


def _nan() -> Atoms:
    atoms = _ethanol()
    atoms.positions[4, 0] = np.nan
    return atoms


def _overlap() -> Atoms:
    atoms = _ethanol()
    atoms.positions[7] = atoms.positions[1] + [0.0, 0.05, 0.0]
    return atoms


def _chlorine() -> Atoms:
    atoms = _ethanol()
    atoms.numbers[8] = 17
    return atoms


def _earlier_run(folder: Path) -> tuple[Path, Path]:
    """A trajectory and log that a failing run must leave alone."""
    folder.mkdir(parents=True, exist_ok=True)
    trajectory, log = folder / "trajectory.extxyz", folder / "md_log.csv"
    ase.io.write(trajectory, _ethanol(), format="extxyz")
    log.write_text("step,time_ps,epot_eV\n0,0,-1.0\n")
    return trajectory, log


# (id, start structure, extra run_md options, what the message must say)
CASES: list[tuple[str, Callable[[], Atoms], dict[str, object], str]] = [
    ("nan-position", _nan, {}, r"start structure: positions contain NaN or inf \(atoms \[4\]\)"),
    ("overlapping-atoms", _overlap, {}, r"start structure: atoms 1 and 7 are 0\.0500 Å apart"),
    ("element-the-model-lacks", _chlorine, {}, r"Cl \(Z=17\) not among the species"),
    ("unknown-ensemble", _ethanol, {"ensemble": "nvt"}, r"unknown ensemble 'nvt'"),
    ("npt-of-a-molecule", _ethanol, {"ensemble": "npt"}, r"NPT needs a system periodic"),
]


@pytest.mark.parametrize(("make", "options", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_run_md_refuses_before_touching_files(tmp_path: Path, make, options, message) -> None:
    trajectory, log = _earlier_run(tmp_path)
    before = snapshot(trajectory, log)
    with pytest.raises(ValueError, match=message):
        run_md(make(), HIPNNCalculator(small_model()), steps=5, trajectory=trajectory,
               log=log, progress=False, **options)
    assert_unchanged(before)


def test_restart_from_a_foreign_trajectory_is_named(tmp_path: Path) -> None:
    trajectory, log = _earlier_run(tmp_path)
    before = snapshot(trajectory, log)
    with pytest.raises(ValueError, match=r"trajectory\.extxyz was not written by hipnn-md"):
        run_md(None, HIPNNCalculator(small_model()), steps=5, trajectory=trajectory,
               log=log, restart=True, progress=False)
    assert_unchanged(before)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    save_model(small_model(), tmp_path / "model.pt")
    return tmp_path / "model.pt"


@pytest.mark.parametrize("missing", ["model", "structure"])
def test_hipnn_md_with_a_missing_file_names_it(tmp_path: Path, model_file: Path, missing: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ase.io.write(tmp_path / "start.xyz", _ethanol())
    paths = {"model": model_file, "structure": tmp_path / "start.xyz"}
    paths[missing] = tmp_path / f"absent_{missing}"
    cfg = compose_config("md", tmp_path / "run", [f"model_path={paths['model']}",
                                                  f"structure={paths['structure']}",
                                                  "progress=false", "steps=2"])
    with pytest.raises(SystemExit) as exit_:  # what hipnn-md runs, in-process
        md_task(cfg)
    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert f"hipnn-md: error: {missing} file not found" in error and f"absent_{missing}" in error


def test_hipnn_md_with_nan_positions_keeps_the_earlier_run(tmp_path: Path,
                                                           model_file: Path) -> None:
    ase.io.write(tmp_path / "start.xyz", _nan())
    run = tmp_path / "run"
    before = snapshot(*_earlier_run(run))
    process = run_cli("md", f"model_path={model_file}", f"structure={tmp_path / 'start.xyz'}",
                      f"hydra.run.dir={run}", "progress=false", "steps=2")
    output = failed_with(process)
    assert process.returncode == 1
    assert "start.xyz" in output and "positions contain NaN or inf (atoms [4])" in output
    assert "Eigenvalues" not in output and "Traceback" not in output
    assert_unchanged(before)


def test_hipnn_md_refuses_a_model_file_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = crafted_model(tmp_path / "model.pt", marker)
    ase.io.write(tmp_path / "start.xyz", _ethanol())
    output = failed_with(run_cli("md", f"model_path={model}",
                                 f"structure={tmp_path / 'start.xyz'}",
                                 f"hydra.run.dir={tmp_path / 'run'}", "progress=false",
                                 "steps=2"))
    assert not marker.exists(), "loading the model file ran its code"
    assert "model.pt" in output
    assert re.search(UNSAFE, output), output[-2000:]
