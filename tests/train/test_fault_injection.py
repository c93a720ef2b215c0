"""Fault injection: training killed with SIGKILL (also in the middle of a checkpoint
write) and resumed as users do ends exactly like an uninterrupted run; a checkpoint
write that fails (disk full) leaves the previous checkpoint intact."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hipnn_pyg import atomic
from hipnn_pyg.atomic import PAUSE_VARIABLE
from hipnn_pyg.io import load_model, model_state, torch_load
from hipnn_pyg.train import AtomicCheckpointIO
from hipnn_pyg.train.run import train

from tests.nn.helpers import small_model

from .helpers import SHIPPED, TINY, compose_config, results

REPO = Path(__file__).resolve().parents[2]
RUN = [
    *SHIPPED,
    *TINY,
    "trainer.max_epochs=4",
    "module.ema_decay=0.9",
    "module.warmup_steps=3",
    "test=false",
]


def _start(folder: Path, *overrides: str, pause_s: float | None = None) -> subprocess.Popen:
    r"""``python scripts/train.py`` of this checkout in the run folder ``folder``, as users
    run it; returns once the run has started (imports and config done)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if pause_s is not None:
        env[PAUSE_VARIABLE] = str(pause_s)
    process = subprocess.Popen(
        [sys.executable, "scripts/train.py", *RUN, f"hydra.run.dir={folder}", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = []
    for line in process.stdout:  # the console log
        output.append(line)
        if "output folder:" in line:
            return process
    raise AssertionError(f"the run did not start: {''.join(output)[-3000:]}")


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen,
              timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "the run ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_result(
    tmp_path: Path,
) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    started = time.monotonic()
    train(compose_config("train", whole, RUN))  # the reference, in this process
    training_s = time.monotonic() - started

    # 1. killed in the middle of writing last.ckpt after the second epoch: the writer
    # pauses between writing the temporary file and renaming it (test hook)
    checkpoints = broken / "checkpoints"
    last = checkpoints / "last.ckpt"
    process = _start(broken, "resume=true", pause_s=0.5)
    _wait_for(last.is_file, process)
    _wait_for(lambda: any(checkpoints.glob(".last.ckpt.*.tmp")), process)
    _kill(process)
    assert any(checkpoints.glob(".last.ckpt.*.tmp"))  # the write was cut off
    assert torch_load(last)["epoch"] == 0  # the previous last.ckpt, intact
    load_model(last)

    # 2. resumed runs killed at seeded random moments of their training
    rng = random.Random(11)
    for _ in range(2):
        process = _start(broken, "resume=true")
        time.sleep(rng.uniform(0.0, training_s))
        _kill(process)
        load_model(last)  # whatever the moment, last.ckpt is whole

    # 3. the final resume ends where the uninterrupted run did
    _finish(_start(broken, "resume=true"))
    expected, actual = torch_load(whole / "checkpoints" / "last.ckpt"), torch_load(last)
    assert actual["epoch"] == expected["epoch"] == 3
    assert actual["global_step"] == expected["global_step"]
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    want, got = results(whole)["metrics"], results(broken)["metrics"]
    for key in ("val/loss", "val/energy_mae", "val/forces_mae", "val/forces_rmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
    pos = torch.randn(9, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    models = [load_model(folder / "model.pt") for folder in (whole, broken)]
    torch.testing.assert_close(models[1](z, pos), models[0](z, pos), rtol=1e-6, atol=1e-6)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "hipnn_model": model_state(small_model())}, path)
    before = path.read_bytes()

    def disk_full(obj: object, stream) -> None:  # half a file, then no space left
        stream.write(before[: len(before) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 1, "hipnn_model": model_state(small_model())}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert io.load_checkpoint(path)["epoch"] == 0
    load_model(path)
