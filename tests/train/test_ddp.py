"""Data-parallel training on two CPU processes (DDP, gloo), launched as users launch it:
``scripts/train.py trainer=ddp_cpu`` with the default callbacks, progress bar included.

Two processes give the same metrics as one process with the same global batch:
full-batch steps make the result independent of how the training set is shuffled and
sharded, and the metrics are exact sums over processes. A signal to the launcher ends
every process."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

from hipnn_pyg.train.run import train

from .helpers import SHIPPED, TINY_DEFAULTS, compose_config, read_records, results

REPO = Path(__file__).resolve().parents[2]
#: The repository first on the path: the launched ranks import this checkout and
#: :class:`~tests.train.helpers.RecordMonitored`.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
RUN = [
    *SHIPPED,
    *TINY_DEFAULTS,  # the user's defaults: progress bar and model summary on
    "data.num_train=8",
    # odd sizes: DistributedSampler pads with duplicates, which the metrics must skip
    "data.num_val=7",
    "data.num_test=5",
    "trainer.max_epochs=2",
    "callbacks=[default,ema]",
    "callbacks.ema.decay=0.5",
]
#: Seconds a two-process run of a few tiny epochs may take on a busy 2-core machine.
DDP_TIME_LIMIT = 150


def _process_group(pgid: int) -> list[int]:
    r"""Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _user_signals() -> None:
    # What a terminal gives a command: default SIGINT and SIGTERM. A shell without job
    # control starts background jobs (`cmd &`, as a CI runner may) with SIGINT ignored,
    # which exec keeps; Python then installs no KeyboardInterrupt handler and a test
    # of Ctrl-C would watch training carry on.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _launch(overrides: Sequence[str], log: Path, terminal: bool = False
            ) -> Iterator[subprocess.Popen]:
    r"""``scripts/train.py`` in a session of its own, so that every rank it spawns can
    be found by process group, with a terminal's signal dispositions; whatever is left
    of it is killed on exit. With ``terminal`` its output goes to a pseudo-terminal, as a
    user's does at a shell prompt (so the progress bar is Lightning's), copied to
    ``log``."""
    master = None
    with log.open("w") as output:
        if terminal:
            master, slave = pty.openpty()
            # a terminal of 40 x 120 characters: tqdm draws nothing at width 0
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            sink: object = slave
        else:
            sink = output
        process = subprocess.Popen(
            [sys.executable, "scripts/train.py", *overrides], cwd=REPO, env=ENV,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_user_signals,
        )
    copier = None
    if master is not None:
        os.close(slave)
        copier = threading.Thread(target=_copy_terminal, args=(master, log), daemon=True)
        copier.start()
    try:
        yield process
    finally:
        for pid in _process_group(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.wait()
        if copier is not None:
            copier.join(timeout=30)
            os.close(master)


def _copy_terminal(master: int, log: Path) -> None:
    with log.open("ab") as output:
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            output.write(chunk)
            output.flush()


def _wait_for(condition: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _run_to_end(overrides: Sequence[str], log: Path, terminal: bool = False) -> None:
    with _launch(overrides, log, terminal) as process:
        try:
            process.wait(timeout=DDP_TIME_LIMIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"DDP run still running after {DDP_TIME_LIMIT} s (deadlock?); "
                        f"log:\n{log.read_text()[-4000:]}")
        assert process.returncode == 0, log.read_text()[-4000:]


@pytest.mark.slow
def test_ddp_cpu_with_default_callbacks_matches_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(compose_config("train", single, [*RUN, "data.batch_size=8", "data.val_batch_size=8"]))

    records = tmp_path / "monitored.jsonl"
    _run_to_end([*RUN, "trainer=ddp_cpu", "data.batch_size=4", "data.val_batch_size=2",
                 "+callbacks.record._target_=tests.train.helpers.RecordMonitored",
                 f"+callbacks.record.path={records}", f"hydra.run.dir={ddp}"],
                tmp_path / "ddp.log", terminal=True)
    log = (tmp_path / "ddp.log").read_text(errors="replace")
    assert "distributed_backend=gloo" in log
    assert "Epoch 1/1" in log or "Epoch 1:" in log  # Lightning's bar, as on a terminal

    want, got = results(single)["metrics"], results(ddp)["metrics"]
    for key in ("val/loss", "val/energy_mae", "val/energy_rmse", "val/forces_mae",
                "val/forces_rmse", "test/energy_mae", "test/forces_mae", "train/loss",
                "train_running/energy_mae", "train_running/forces_rmse"):
        assert got[key] == pytest.approx(want[key], rel=2e-5), key
    # what ModelCheckpoint, EarlyStopping and the plateau schedule read: equal on all ranks
    by_rank = read_records(records)
    assert sorted(by_rank) == [0, 1]
    assert [r["epoch"] for r in by_rank[0]] == [0, 1]
    assert by_rank[0] == [{**r, "rank": 0} for r in by_rank[1]]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_launcher_ends_every_rank(tmp_path: Path, signum: int) -> None:
    run, log = tmp_path / "run", tmp_path / "run.log"
    overrides = [*SHIPPED, *TINY_DEFAULTS, "trainer=ddp_cpu", "trainer.max_epochs=10000",
                 f"hydra.run.dir={run}"]
    with _launch(overrides, log) as process:
        # training has started on both ranks once the first epoch's checkpoint is there
        _wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file()
                  and len(_process_group(process.pid)) >= 2,
                  DDP_TIME_LIMIT, "no checkpoint from two ranks", log)
        assert process.poll() is None, log.read_text()[-4000:]
        process.send_signal(signum)
        _wait_for(lambda: process.poll() is not None and not _process_group(process.pid),
                  60, f"launcher or ranks alive after {signal.Signals(signum).name}", log)
        # interrupted, not finished: no final model or results
        assert not (run / "results.json").exists() and not (run / "model.pt").exists()
        # a scheduler must see a killed run: 143 (128 + SIGTERM) or Lightning's 1 for Ctrl-C
        assert process.returncode == (128 + signal.SIGTERM if signum == signal.SIGTERM else 1)


@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu"])
def test_ddp_configs_set_a_finite_process_group_timeout(tmp_path: Path, trainer: str) -> None:
    cfg = compose_config("train", tmp_path, [f"trainer={trainer}"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert timedelta(0) < strategy._timeout <= timedelta(minutes=30)
