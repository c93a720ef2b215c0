"""The Hydra entry points as a user runs them: scripts/train.py (single run and -m
sweep), scripts/eval.py, and the hipnn-train / hipnn-eval console scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import hipnn_pyg.train.resolvers  # noqa: F401  (${hipnn_*:} resolvers in printed configs)

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data=rmd17_shipped", "model.representation.species=[1,6,8]", "+data.max_frames=30",
    "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.batch_size=4",
    "model.representation.hidden_channels=8", "model.representation.num_interactions=1",
    "model.representation.num_atom_layers=1",
    "model.representation.sensitivity.num_sensitivities=4", "trainer.max_epochs=1",
    "num_threads=1",
]
# One override switches the progress display off (Lightning refuses a progress-bar
# callback without a bar; the run drops it).
QUIET = [*TINY, "trainer.enable_progress_bar=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(list(args), cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=600)
    if check:
        assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return process


@pytest.mark.slow
def test_multirun_sweep_writes_one_folder_per_job(tmp_path: Path) -> None:
    _run(sys.executable, "scripts/train.py", "-m", *QUIET,
         "model.representation.hidden_channels=8,16", f"hydra.sweep.dir={tmp_path}")
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    widths = []
    for job in jobs:
        config = OmegaConf.load(job / ".hydra" / "config.yaml")
        widths.append(config.model.representation.hidden_channels)
        assert list(job.glob("csv/version_*/metrics.csv"))
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "model.pt").is_file()
        result = json.loads((job / "results.json").read_text())
        assert result["objective"] == "val/loss" and result["objective_value"] > 0
    assert widths == [8, 16]
    listing = _run(sys.executable, "scripts/sweep_table.py", str(tmp_path)).stdout.splitlines()
    assert "data=rmd17_shipped" in listing[0]  # overrides common to all jobs, once
    rows = listing[3:]
    losses = sorted(json.loads((job / "results.json").read_text())["metrics"]["val/loss"]
                    for job in jobs)
    assert len(rows) == 2
    for row, loss in zip(rows, losses, strict=True):  # best validation loss first
        assert row.split(" | ")[1] == f"{loss:.4g}"
    assert any("hidden_channels=16" in row for row in rows)


@pytest.mark.slow
def test_train_then_evaluate_with_scripts_and_console_entry_points(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = _run(sys.executable, "scripts/train.py", *TINY, f"hydra.run.dir={run}")
    # The default progress display, piped: one line per epoch, no carriage returns.
    assert "epoch    0 step" in process.stdout and "val/loss=" in process.stdout
    assert "\r" not in process.stdout + process.stderr
    log = (run / "train.log").read_text()
    assert "Final errors" in log and "meV/Å" in log
    assert (run / ".hydra" / "config.yaml").is_file()
    assert process.returncode == 0

    evaluated = tmp_path / "eval"
    process = _run(sys.executable, "scripts/eval.py", f"ckpt_path={run}/checkpoints/last.ckpt",
                   "data=rmd17_shipped", "+data.max_frames=30", "data.num_train=8",
                   "data.num_val=4", "data.num_test=5",
                   f"hydra.run.dir={evaluated}")
    assert "test   forces" in process.stdout and "meV/Å" in process.stdout
    assert (evaluated / "parity_energy.png").stat().st_size > 1000
    assert (evaluated / "parity_forces.png").stat().st_size > 1000
    metrics = json.loads((evaluated / "results.json").read_text())["metrics"]
    assert metrics["test/forces_mae"] > 0

    console = shutil.which("hipnn-eval", path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("hipnn-eval not installed (pip install -e .)")
    process = _run(console, f"ckpt_path={run}/model.pt", "data=rmd17_shipped",
                   "+data.max_frames=30", "data.num_train=8", "data.num_val=4", "split=val",
                   "plots=false",
                   f"hydra.run.dir={tmp_path / 'eval2'}")
    assert "val    energy" in process.stdout


def test_console_train_finds_the_config() -> None:
    console = shutil.which("hipnn-train", path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("hipnn-train not installed (pip install -e .)")
    process = _run(console, "--cfg", "job", "experiment=rmd17_ethanol_quick")
    config = OmegaConf.create(process.stdout)
    assert config.model._target_ == "hipnn_pyg.nn.Potential"
    assert config.data.path.endswith("data/rmd17_ethanol/rmd17_ethanol_train_01.npz")


def test_console_paths_do_not_depend_on_the_current_folder(tmp_path: Path) -> None:
    console = shutil.which("hipnn-train", path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("hipnn-train not installed (pip install -e .)")
    configs, elsewhere = tmp_path / "my_conf", tmp_path / "elsewhere"
    shutil.copytree(REPO / "conf", configs)
    quick = (REPO / "conf" / "experiment" / "rmd17_ethanol_quick.yaml").read_text()
    assert "tags: [rmd17, ethanol, quick]" in quick
    (configs / "experiment" / "mine.yaml").write_text(
        quick.replace("tags: [rmd17, ethanol, quick]", "tags: [mine]"))
    elsewhere.mkdir()
    env = {k: v for k, v in ENV.items() if not k.startswith("HIPNN_")}
    env |= {"HIPNN_CONF_DIR": str(configs), "PYTHONPATH": str(REPO)}
    process = subprocess.run([console, "--cfg", "job", "--resolve", "experiment=mine"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    config = OmegaConf.create(process.stdout)
    assert list(config.tags) == ["mine"]  # an experiment only HIPNN_CONF_DIR has
    assert config.data.path == str(REPO / "data/rmd17_ethanol/rmd17_ethanol_train_01.npz")
    assert config.paths.log_dir == str(REPO / "logs")
    assert config.paths.data_dir == str((REPO.parent / "shared" / "data").resolve())

    env |= {"HIPNN_DATA_DIR": str(tmp_path), "HIPNN_LOG_DIR": str(tmp_path / "runs")}
    process = subprocess.run([console, "experiment=rmd17_ethanol", "debug=fdr"], cwd=elsewhere,
                             env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode != 0
    assert f"data.path={tmp_path}/rmd17/rmd17_ethanol_train_01.npz not found" in process.stderr
    assert "$HIPNN_DATA_DIR" in process.stderr
    assert list((tmp_path / "runs" / "debug" / "runs").iterdir())  # HIPNN_LOG_DIR
    assert not list(elsewhere.iterdir())


def test_unknown_key_fails_with_hydra_message() -> None:
    process = _run(sys.executable, "scripts/train.py", "model.hidden_chanels=8", check=False)
    assert process.returncode != 0
    assert "Could not override 'model.hidden_chanels'" in process.stderr
    assert "hidden_chanels" in process.stderr and "not in struct" in process.stderr


def test_rmd17_errors_removes_only_the_mean_energy_error(tmp_path: Path) -> None:
    # Reference energies = the model's own + a constant and a per-frame pattern: the
    # offset-free MAE keeps the pattern only; forces are the model's, error zero.
    import importlib.util

    import numpy as np
    import torch
    from torch_geometric.data import Batch, Data

    from hipnn_pyg.data.units import KCAL_MOL_TO_EV
    from hipnn_pyg.nn.predict import predict
    from hipnn_pyg.serialization import save_model
    from tests.nn.helpers import ethanol, small_model

    spec = importlib.util.spec_from_file_location("rmd17_errors", REPO / "scripts" /
                                                  "rmd17_errors.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = small_model()
    save_model(model, tmp_path / "model.pt")
    z, pos = ethanol()
    coords = torch.stack([pos + 0.02 * k for k in range(4)])
    out = predict(model, Batch.from_data_list([Data(z=z, pos=p) for p in coords]),
                  compute_forces=True)
    pattern = np.array([1.0, -1.0, 1.0, -1.0]) * 1e-3  # eV
    energies = (out["energy"].detach().numpy().reshape(-1) + 0.05 + pattern) / KCAL_MOL_TO_EV
    forces = out["forces"].detach().numpy().reshape(4, -1, 3) / KCAL_MOL_TO_EV
    np.savez(tmp_path / "test.npz", nuclear_charges=z.numpy(), coords=coords.numpy(),
             energies=energies, forces=forces)
    errors = script.rmd17_test_errors(tmp_path / "model.pt", tmp_path / "test.npz",
                                      batch_size=3)
    assert errors["mean_energy_error_meV"] == pytest.approx(-50.0, abs=1e-6)
    assert errors["energy_mae_meV"] == pytest.approx(50.0, rel=0.03)
    assert errors["energy_mae_offset_free_meV"] == pytest.approx(1.0, abs=1e-6)
    assert errors["forces_mae_meV_per_A"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU runs the real check")
def test_gpu_check_runs_dry_without_a_gpu_and_wires_every_step(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.txt"
    process = subprocess.run(["bash", "scripts/gpu_check.sh", str(out)], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout[-3000:] + out.read_text()[-3000:]
    assert "no GPU found" in process.stdout
    text = out.read_text()
    assert "DRY RUN" in text and "FAILED" not in text
    for step in ("CUDA tests", "bench_speed --device cuda", "largest water box",
                 "trainer=gpu run"):
        assert f"== {step}" in text, step
    assert "atoms/s" in text  # the water-box step ran (on the CPU)
    assert "accelerator: gpu" in text  # the GPU trainer config composes
