r"""Training callbacks, and a safe SIGTERM handler for data-parallel runs."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import RandomSampler

from hipnn_pyg.compat.lightning import (
    LastCheckpointHook,
    replace_sigterm_handler,
    signal_connector,
    sigterm_handlers,
    sigterm_notifier,
)

log = logging.getLogger(__name__)


def install_sigterm_flag_handler(trainer: Trainer) -> bool:
    r"""Replaces Lightning's SIGTERM notifier by one that only forwards the signal to the
    ranks the launcher started and sets ``trainer.received_sigterm``.

    Lightning's own notifier also makes a ``broadcast`` from inside the signal handler,
    that is at whatever point each process happens to be when the signal lands; the
    other processes meet it with a different collective and every rank hangs. The flag
    alone is enough: the training loop broadcasts rank 0's flag at the start of every
    step, on all ranks at the same point, and all of them stop together. Other SIGTERM
    handlers (SLURM requeue, the user's) are kept. Lightning restores the original
    handlers when the run ends.

    Returns:
        Whether the handler was replaced (only for several processes, on the main
        thread, and when Lightning's notifier is found).
    """
    if trainer.world_size < 2 or threading.current_thread() is not threading.main_thread():
        return False
    connector, notifier = signal_connector(trainer), sigterm_notifier(trainer)
    handlers = sigterm_handlers()
    if handlers is None or notifier not in handlers:
        log.warning("Lightning's SIGTERM notifier is not among the SIGTERM handlers, so it "
                    "stays: a SIGTERM during this data-parallel run may leave ranks waiting")
        return False

    def notify(signum: int, frame: FrameType | None) -> None:
        log.info("rank %d: received signal %d, stopping", trainer.global_rank, signum)
        if not connector.received_sigterm:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)  # the ranks this process started
        connector.received_sigterm = True

    replace_sigterm_handler(notifier, notify)
    return True


class EpochSeed(Callback):
    r"""Reseeds the random number generators at the start of every training epoch
    from ``(seed, epoch)``.

    Lightning checkpoints do not hold RNG states, and a sampler that shuffles from
    the global generator would draw a different order after a resume than in an
    uninterrupted run. Reseeding per epoch makes epoch ``k``'s shuffle a function of
    ``k`` alone, so a run resumed from ``last.ckpt`` repeats the uninterrupted run
    exactly. (Distributed samplers already seed from the epoch; this covers the
    single-process :class:`~torch.utils.data.RandomSampler`, with or without its own
    generator.)

    Args:
        seed (int): Base seed. (default: :obj:`0`)
    """

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        self.seed = int(seed or 0)

    def epoch_seed(self, epoch: int) -> int:
        r"""The seed of epoch ``epoch``."""
        return (self.seed * 1_000_003 + epoch) % 2**31

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run resumed from a checkpoint written at the end of an epoch starts the
        # next epoch without on_train_epoch_start: seed it here.
        self.reseed(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reseed(trainer)

    def reseed(self, trainer: Trainer) -> None:
        r"""Seeds the global generators, and the shuffling sampler of every training
        loader, from ``(seed, trainer.current_epoch)``."""
        seed = self.epoch_seed(trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            sampler = getattr(loader, "sampler", None)
            if isinstance(sampler, RandomSampler) and sampler.generator is None:
                # Without its own generator the sampler draws its seed from the global
                # one when iteration starts, after however many draws Lightning and the
                # DataLoader made in between (which differ between a fresh and a
                # resumed epoch). A private generator makes the order depend on the
                # epoch alone.
                sampler.generator = torch.Generator()
            for owner in (loader, sampler):
                generator = getattr(owner, "generator", None)
                if isinstance(generator, torch.Generator):
                    generator.manual_seed(seed)


class CpuTimeLimit(Callback):
    r"""Stops training once this process has used ``minutes`` of CPU time.

    Lightning's ``max_time`` counts wall time, so a run that shares its cores with
    other work trains for fewer steps than the same run alone; a budget in CPU time
    (of every thread of the process, :func:`time.process_time`) stays equal under
    contention, which benchmarks comparing runs side by side need. The time used is
    kept in checkpoints, so a resumed run continues its budget rather than restarting it.
    Checked after every training batch and validation, like Lightning's
    :class:`~lightning.pytorch.callbacks.Timer`.

    Args:
        minutes (float): CPU-time budget of the whole fit, in minutes.
        clock (Callable[[], float], optional): Seconds of CPU time, for tests.
            (default: :obj:`None`, :func:`time.process_time`)
    """

    def __init__(self, minutes: float, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        if not minutes > 0:
            raise ValueError(f"CpuTimeLimit needs a positive budget, got minutes={minutes}")
        self.minutes = float(minutes)
        self.clock = clock or time.process_time
        self._used_before = 0.0  # CPU seconds of earlier (resumed) runs
        self._start: float | None = None

    def used_seconds(self) -> float:
        r"""CPU seconds the fit has used so far, earlier runs included."""
        running = 0.0 if self._start is None else self.clock() - self._start
        return self._used_before + running

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = self.clock()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._used_before, self._start = self.used_seconds(), None

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        # every rank must agree, or one would stop while the others wait in a collective
        spent = self.used_seconds() >= 60.0 * self.minutes
        if trainer.strategy.reduce_boolean_decision(spent, all=False) and not trainer.should_stop:
            trainer.should_stop = True
            log.info("CPU-time budget of %.1f min used: stopping", self.minutes)

    def state_dict(self) -> dict[str, float]:
        return {"used_seconds": self.used_seconds()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._used_before = float(state_dict["used_seconds"])


class RunCheckpoint(LastCheckpointHook):
    r"""Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` whose
    ``last.ckpt`` follows every epoch, as its name says.

    Lightning writes ``last.ckpt`` only when it also writes a best (top-k) checkpoint, so
    after the monitored loss stops improving a killed run would lose every epoch since
    its last improvement. Here ``last.ckpt`` is also written at every other save point
    (the end of each training epoch, or each validation when saving there), atomically
    through the trainer's :class:`~hipnn_pyg.train.AtomicCheckpointIO`.
    """

    _last_written_step: int = -1

    @property
    def state_key(self) -> str:
        # the key Lightning's own class files its state under, so checkpoints written
        # before or without this class resume with their best score and paths
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_last_saved(self, trainer: Trainer) -> None:
        self._last_written_step = trainer.global_step

    def _write_last(self, trainer: Trainer, at_train_epoch_end: bool) -> None:
        if (not self.save_last or trainer.fast_dev_run or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING
                or self.saves_on_train_epoch_end(trainer) != at_train_epoch_end
                or self._last_written_step == trainer.global_step):
            return
        self.save_last_now(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._write_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._write_last(trainer, at_train_epoch_end=False)
