"""Fault injection: training killed with SIGKILL at random moments (also in the middle
of a checkpoint write) and resumed as users do ends exactly like an uninterrupted run; a
checkpoint write that fails (disk full) leaves the previous checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from hipnn_pyg import atomic
from hipnn_pyg.atomic import PAUSE_VARIABLE
from hipnn_pyg.serialization import load_model, model_state, torch_load
from hipnn_pyg.train import AtomicCheckpointIO
from tests.nn.helpers import small_model

from .helpers import SHIPPED, TINY, results

REPO = Path(__file__).resolve().parents[2]
RUN = [
    *SHIPPED,
    *TINY,
    "trainer.max_epochs=4",
    "callbacks=[default,ema]",
    "callbacks.ema.decay=0.9",
    "module.warmup_steps=3",
    "test=false",
]

#: Runs ``python scripts/train.py ARGS`` as forks of one process that has done the slow
#: imports once (seconds each on a busy machine), so that many runs can be killed
#: cheaply. Requests on stdin, one JSON line each: {"start": ...} answers the run's pid,
#: {"wait": pid} its exit status.
_LAUNCHER = r"""
import json, os, runpy, sys, traceback
import hipnn_pyg.train.run, hydra, lightning  # noqa: F401  (the slow imports)
for line in sys.stdin:
    request = json.loads(line)
    if "wait" in request:
        print(os.waitpid(request["wait"], 0)[1], flush=True)
        continue
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        continue
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.argv = ["scripts/train.py", *request["start"]]
    code = 0
    try:
        runpy.run_path("scripts/train.py", run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
"""


class Launcher:
    r"""Starts, kills and waits for training runs of this checkout (see ``_LAUNCHER``)."""

    def __init__(self, logs: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-c", _LAUNCHER], cwd=REPO, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.logs = logs
        self.running: set[int] = set()

    def _ask(self, request: dict) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def start(self, folder: Path, *overrides: str, pause_s: float | None = None) -> int:
        r"""Starts ``scripts/train.py`` in the run folder ``folder``; returns its pid once
        the run has begun (config composed, output folder logged)."""
        log = self.logs / f"run{len(list(self.logs.glob('run*.log')))}.log"
        env = {PAUSE_VARIABLE: str(pause_s)} if pause_s is not None else {}
        pid = self._ask({"start": [*RUN, f"hydra.run.dir={folder}", *overrides],
                         "env": env, "log": str(log)})
        self.running.add(pid)
        self.wait_for(lambda: log.is_file() and "output folder:" in log.read_text(), pid)
        return pid

    def wait_for(self, condition: Callable[[], bool], pid: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert _alive(pid), f"run {pid} ended first:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.wait(pid)

    def wait(self, pid: int) -> int:
        status = self._ask({"wait": pid})
        self.running.discard(pid)
        return status

    def output(self) -> str:
        return "".join(log.read_text() for log in sorted(self.logs.glob("run*.log")))

    def close(self) -> None:
        for pid in list(self.running):
            os.kill(pid, signal.SIGKILL)
            self.wait(pid)
        self.process.kill()  # idle: nothing to lose, and faster than a clean exit
        self.process.communicate(timeout=60)


def _alive(pid: int) -> bool:
    r"""Whether ``pid`` is still running (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _written(paths: Iterator[Path]) -> bool:
    r"""Whether one of ``paths`` holds data (a temporary file may vanish meanwhile)."""
    for path in paths:
        try:
            if path.stat().st_size > 0:
                return True
        except FileNotFoundError:
            pass
    return False


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    if sys.platform != "linux":
        pytest.skip("forks and /proc: Linux only")
    (tmp_path / "logs").mkdir()
    launcher = Launcher(tmp_path / "logs")
    yield launcher
    launcher.close()


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_result(
    tmp_path: Path, launcher: Launcher
) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    pid = launcher.start(whole)
    started = time.monotonic()
    assert launcher.wait(pid) == 0, launcher.output()[-3000:]
    training_s = time.monotonic() - started

    # 1. killed in the middle of writing last.ckpt after the second epoch: the writer
    # pauses between writing the temporary file and renaming it (test hook)
    checkpoints = broken / "checkpoints"
    last = checkpoints / "last.ckpt"
    # (2 s: the poll below must see the temporary file even on a busy machine)
    pid = launcher.start(broken, "resume=true", pause_s=2.0)
    launcher.wait_for(last.is_file, pid)
    launcher.wait_for(lambda: _written(checkpoints.glob(".last.ckpt.*.tmp")), pid)
    launcher.kill(pid)
    assert _written(checkpoints.glob(".last.ckpt.*.tmp"))  # the new one, never renamed
    assert torch_load(last)["epoch"] == 0  # the previous last.ckpt, intact
    load_model(last)

    # 2. resumed runs killed at seeded random moments of their training
    rng = random.Random(11)
    for _ in range(3):
        pid = launcher.start(broken, "resume=true")
        time.sleep(rng.uniform(0.0, training_s))
        launcher.kill(pid)
        load_model(last)  # whatever the moment, last.ckpt is whole

    # 3. the last resume ends where the uninterrupted run did
    pid = launcher.start(broken, "resume=true")
    assert launcher.wait(pid) == 0, launcher.output()[-3000:]
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
