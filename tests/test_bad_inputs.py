"""Bad-input corpus: model files (truncated, foreign, text, a pickle that runs code),
labelling input, and the ``hipnn-train`` / ``hipnn-eval`` / ``hipnn-label`` programs
with broken configs. Every case checks that the message names the problem and that
the user's files are byte-identical afterwards. (Model and data inputs:
``tests/nn``, ``tests/data``; MD and ``hipnn-md``: ``tests/md``.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from hydra.errors import HydraException

from hipnn_pyg.calculator import HIPNNCalculator
from hipnn_pyg.label import label
from hipnn_pyg.serialization import load_model, model_state, save_model
from tests.bad_inputs import (
    UNSAFE,
    assert_unchanged,
    crafted_model,
    failed_with,
    run_cli,
    snapshot,
)
from tests.conftest import REPO
from tests.nn.helpers import small_model
from tests.test_label import copper_cells
from tests.test_scripts import TINY
from tests.train.helpers import compose_config


def _truncated_model(folder: Path) -> Path:
    save_model(small_model(), folder / "model.pt")
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])
    return folder / "model.pt"


def _truncated_checkpoint(folder: Path) -> Path:
    path = folder / "last.ckpt"
    torch.save({"epoch": 3, "hipnn_model": model_state(small_model())}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def _text_model(folder: Path) -> Path:
    (folder / "model.pt").write_text("species: [1, 6, 8]\nhidden_channels: 64\n")
    return folder / "model.pt"


def _foreign_checkpoint(folder: Path) -> Path:
    path = folder / "other.ckpt"  # another program's checkpoint: plain weights, no class
    torch.save({"epoch": 3, "state_dict": {"layer.weight": torch.ones(2, 2)}}, path)
    return path


def _empty_model(folder: Path) -> Path:
    (folder / "model.pt").write_bytes(b"")
    return folder / "model.pt"


# (id, file maker, what the message must say besides the file name)
MODEL_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated-model-pt", _truncated_model, "cannot read"),
    ("truncated-ckpt", _truncated_checkpoint, "cannot read"),
    ("text-file-named-model-pt", _text_model, "cannot read"),
    ("empty-model-pt", _empty_model, "cannot read"),
    ("checkpoint-of-another-program", _foreign_checkpoint, "not a hipnn_pyg model file"),
]


@pytest.mark.parametrize("use", ["load_model", "calculator"])
@pytest.mark.parametrize(("make", "message"), [c[1:] for c in MODEL_FILES],
                         ids=[c[0] for c in MODEL_FILES])
def test_broken_model_files_name_the_file(tmp_path: Path, make, message: str, use: str) -> None:
    path = make(tmp_path)
    before = snapshot(path)
    load = load_model if use == "load_model" else HIPNNCalculator
    with pytest.raises(ValueError, match=f"{re.escape(path.name)}.*{message}|"
                                         f"{message}.*{re.escape(path.name)}"):
        load(path)
    assert_unchanged(before)


@pytest.mark.parametrize("use", ["load_model", "calculator"])
def test_a_model_file_whose_pickle_runs_code_is_refused(tmp_path: Path, use: str) -> None:
    marker = tmp_path / "pwned"
    path = crafted_model(tmp_path / "model.pt", marker)
    load = load_model if use == "load_model" else HIPNNCalculator
    with pytest.raises(ValueError, match=UNSAFE) as error:
        load(path)
    assert "model.pt" in str(error.value)
    assert not marker.exists(), "loading the model file ran its code"


def _cells(path: Path, count: int = 3) -> Path:
    return copper_cells(path, count, rattle=0.02)


def _nan_in_frame_1(folder: Path) -> Path:
    frames = ase.io.read(_cells(folder / "in.extxyz"), ":")
    frames[1].positions[2, 1] = np.nan
    ase.io.write(folder / "in.extxyz", frames, format="extxyz")
    return folder / "in.extxyz"


def _overlap_in_frame_2(folder: Path) -> Path:
    frames = ase.io.read(_cells(folder / "in.extxyz"), ":")
    frames[2].positions[3] = frames[2].positions[0] + 0.1
    ase.io.write(folder / "in.extxyz", frames, format="extxyz")
    return folder / "in.extxyz"


def _good_input(folder: Path) -> Path:
    return _cells(folder / "in.extxyz")


def _empty_input(folder: Path) -> Path:
    (folder / "in.extxyz").write_text("")
    return folder / "in.extxyz"


def _cut_input(folder: Path) -> Path:
    path = _cells(folder / "in.extxyz")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-3]))
    return path


def _singular_cell(folder: Path) -> Path:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.cell[2] = 0.0
    ase.io.write(folder / "in.extxyz", atoms, format="extxyz")
    return folder / "in.extxyz"


# (id, input maker, calculator, what the message must say)
LABEL_CASES: list[tuple[str, Callable[[Path], Path], str, str]] = [
    ("nan-position", _nan_in_frame_1, "emt",
     r"structure 1 of .*in\.extxyz: positions contain NaN or inf \(atoms \[2\]\)"),
    ("overlapping-atoms", _overlap_in_frame_2, "emt",
     r"structure 2 of .*in\.extxyz: atoms 0 and 3 are 0\.1732 Å apart"),
    ("singular-cell", _singular_cell, "emt", r"structure 0 of .*in\.extxyz: singular cell"),
    ("empty-input", _empty_input, "emt", r"in\.extxyz.*Empty file"),
    ("input-cut-mid-frame", _cut_input, "emt", r"in\.extxyz"),
    ("unknown-calculator", _good_input, "dftb", r"unknown calculator 'dftb'; choose one of"),
]


@pytest.mark.parametrize(("make", "calculator", "message"), [c[1:] for c in LABEL_CASES],
                         ids=[c[0] for c in LABEL_CASES])
def test_label_refuses_before_labelling(tmp_path: Path, make, calculator, message) -> None:
    source = make(tmp_path)
    output = _cells(tmp_path / "labelled.extxyz", count=1)  # the user's earlier labels
    before = snapshot(source, output)
    with pytest.raises(ValueError, match=message):
        label(source, output, calculator, progress=False)
    assert_unchanged(before)


def test_hipnn_label_names_the_problem_and_keeps_the_output(tmp_path: Path) -> None:
    source = _nan_in_frame_1(tmp_path)
    output = _cells(tmp_path / "labelled.extxyz", count=1)
    before = snapshot(source, output)
    text = failed_with(run_cli("label", f"input={source}", f"output={output}", "calculator=emt",
                               f"hydra.run.dir={tmp_path / 'run'}", "progress=false"))
    assert "hipnn-label: error: structure 1 of" in text and "NaN or inf (atoms [2])" in text
    assert "Traceback" not in text
    assert_unchanged(before)


# (id, overrides of conf/train.yaml, what the error must say); composed in-process, as
# hipnn-train does first (a subprocess per case would cost seconds for the same check)
CONFIG_CASES = [
    ("unknown-config-option", ["model=nonexistent"], r"Could not find 'model/nonexistent'"),
    ("typo-in-a-key", ["model.hidden_channel=8"], r"Could not override 'model\.hidden_channel'"),
    ("unknown-group", ["optimiser=adam"], r"Could not override 'optimiser'"),
]


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_train_config_is_named(tmp_path: Path, overrides, message) -> None:
    with pytest.raises(HydraException, match=message):
        compose_config("train", tmp_path, overrides)


def _earlier_run(folder: Path) -> dict[Path, str]:
    (folder / "checkpoints").mkdir(parents=True)
    save_model(small_model(), folder / "model.pt")
    torch.save({"epoch": 1, "hipnn_model": model_state(small_model())},
               folder / "checkpoints" / "last.ckpt")
    return snapshot(folder / "model.pt", folder / "checkpoints")


def test_hipnn_train_with_an_element_the_model_lacks_writes_no_model(tmp_path: Path) -> None:
    output = failed_with(run_cli("train", *TINY, "model.representation.species=[1,6]",
                                 f"hydra.run.dir={tmp_path}"))
    assert re.search(r"elements \[8\] that are not in species \[1, 6\]", output), output[-3000:]
    assert not (tmp_path / "model.pt").exists()


def test_hipnn_train_in_another_runs_folder_is_refused_and_keeps_it(tmp_path: Path) -> None:
    # hydra.run.dir given by hand: refused before Hydra writes the run's .hydra/ there
    _earlier_run(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    before = snapshot(tmp_path)
    output = failed_with(run_cli("train", *TINY, f"hydra.run.dir={tmp_path}", "seed=7"))
    assert re.search(r"already holds another run's model\.pt, checkpoints/last\.ckpt", output), \
        output[-3000:]
    assert_unchanged(before)


def test_hipnn_train_into_another_runs_checkpoint_folder_is_refused(tmp_path: Path) -> None:
    # callbacks.model_checkpoint.dirpath outside the run folder: Lightning only warns
    before = _earlier_run(tmp_path / "earlier")
    shared = tmp_path / "earlier" / "checkpoints"
    output = failed_with(run_cli("train", *TINY, f"hydra.run.dir={tmp_path / 'new'}",
                                 f"callbacks.model_checkpoint.dirpath={shared}"))
    assert re.search(r"model_checkpoint\.dirpath=.* already holds another run's last\.ckpt",
                     output), output[-3000:]
    assert_unchanged(before)


def test_hipnn_eval_in_a_training_runs_folder_is_refused_and_keeps_it(tmp_path: Path) -> None:
    _earlier_run(tmp_path)
    (tmp_path / "results.json").write_text("{}")
    before = snapshot(tmp_path)
    output = failed_with(run_cli("eval", f"ckpt_path={tmp_path / 'model.pt'}",
                                 "data=rmd17_shipped", f"hydra.run.dir={tmp_path}"))
    assert re.search(r"hipnn-eval: error: .* already holds another run's model\.pt, "
                     r"results\.json", output), output[-3000:]
    assert_unchanged(before)


def test_hipnn_train_multirun_in_a_used_sweep_folder_is_refused(tmp_path: Path) -> None:
    _earlier_run(tmp_path / "0")
    before = snapshot(tmp_path)
    output = failed_with(run_cli("train", "-m", *TINY, f"hydra.sweep.dir={tmp_path}",
                                 "seed=1,2"))
    assert re.search(r"0 already holds another run's model\.pt", output), output[-3000:]
    assert_unchanged(before)
    assert not (tmp_path / "1").exists()


def test_hipnn_eval_names_a_model_file_that_is_text(tmp_path: Path) -> None:
    model = _text_model(tmp_path)
    before = snapshot(model)
    output = failed_with(run_cli("eval", f"ckpt_path={model}", "data=rmd17_shipped",
                                 f"hydra.run.dir={tmp_path / 'eval'}"))
    assert re.search(r"cannot read .*model\.pt", output), output[-2000:]
    assert_unchanged(before)


# --- hipnn-active: every structure is checked before any labelling or training -------

def _ethanol_frames(path: Path, broken: str) -> Path:
    frames = ase.io.read(REPO / "data" / "ethanol_gfn2" / "ethanol_gfn2.extxyz", ":4")
    if broken == "nan":
        frames[2].positions[1, 0] = float("nan")
    else:  # two atoms on top of each other
        frames[2].positions[1] = frames[2].positions[0] + 0.05
    ase.io.write(path, frames)
    return path


@pytest.mark.parametrize(("broken", "message"), [
    ("nan", r"active\.initial: frame 2: positions contain NaN or inf"),
    ("overlap", r"active\.initial: frame 2: .*(closer|overlap)"),
])
def test_hipnn_active_names_a_broken_start_frame(tmp_path: Path, broken: str,
                                                 message: str) -> None:
    start = _ethanol_frames(tmp_path / "start.extxyz", broken)
    before = snapshot(start)
    run = tmp_path / "run"
    output = failed_with(run_cli("active", "active=ethanol_gfn2", f"run_dir={run}",
                                 f"active.initial.path={start}", "progress=false"))
    assert re.search(message, output), output[-2000:]
    assert "hipnn-active: error:" in output
    assert_unchanged(before)
    assert not list(run.glob("round_*")) and not (run / "dataset.extxyz").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("active.initial.path=/no/such/start.extxyz", r"/no/such/start\.extxyz"),
    ("active.no_such_key=1", r"Could not override 'active\.no_such_key'"),
])
def test_hipnn_active_names_a_bad_setting(tmp_path: Path, override: str, message: str) -> None:
    output = failed_with(run_cli("active", "active=ethanol_gfn2", f"run_dir={tmp_path / 'run'}",
                                 override, "progress=false"))
    assert re.search(message, output), output[-2000:]
