r"""A learning rate that decays over a CPU-time budget and reaches its floor exactly
when the budget ends.

A plateau schedule halves the rate when a noisy validation loss stalls, so on a short
budget it may reach its floor long before the end (or never leave the peak rate); a
decay over a number of steps must guess how many steps the budget holds, which depends
on the machine, its load and the model. Here each optimizer step's rate is a function
of the fraction of the budget already used, read from the run's
:class:`~hipnn_pyg.train.CpuTimeLimit`, so the decay ends at the budget's end under any
step speed, and a resumed run (whose CPU time the limit keeps in its checkpoint)
continues the same curve.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from lightning import Callback, LightningModule, Trainer

from hipnn_pyg.train.callbacks import CpuTimeLimit

log = logging.getLogger(__name__)

SHAPES = ("cosine", "linear")


def budget_lr(fraction: float, peak: float, floor: float, shape: str = "cosine") -> float:
    r"""The learning rate after ``fraction`` of the budget: ``peak`` at 0, ``floor`` at
    1 and after, in between a half cosine, :math:`\eta = \eta_{min} + (\eta_{max} -
    \eta_{min})\,(1 + \cos \pi f)/2`, or a straight line.

    Args:
        fraction (float): Fraction of the budget used (clipped to ``[0, 1]``).
        peak (float): Rate at the start.
        floor (float): Rate at the end of the budget.
        shape (str): ``"cosine"`` or ``"linear"``. (default: :obj:`"cosine"`)
    """
    if shape not in SHAPES:
        raise ValueError(f"budget schedule shape {shape!r}: choose one of {SHAPES}")
    f = min(max(float(fraction), 0.0), 1.0)
    weight = 0.5 * (1.0 + math.cos(math.pi * f)) if shape == "cosine" else 1.0 - f
    return floor + (peak - floor) * weight


class BudgetSchedule(Callback):
    r"""Sets every parameter group's learning rate before each training batch from the
    fraction of the :class:`~hipnn_pyg.train.CpuTimeLimit` budget used so far
    (:func:`budget_lr`, from the optimizer's configured ``lr`` down to ``min_lr`` at the
    budget's end).

    Use it with ``callbacks.cpu_time_limit`` and without a module scheduler
    (``module.scheduler=null``; a plateau schedule would fight it), e.g.
    ``callbacks=[default,ema,cpu_time_limit,budget_schedule] module.scheduler=null``
    (``conf/callbacks/budget_schedule.yaml``). A linear warm-up (``module.warmup_steps``)
    still rules its first steps. Under data parallelism rank 0's fraction is broadcast,
    so every rank steps with the same rate.

    Args:
        min_lr (float): The rate at the end of the budget. (default: :obj:`1e-5`)
        shape (str): ``"cosine"`` or ``"linear"``. (default: :obj:`"cosine"`)
    """

    def __init__(self, min_lr: float = 1.0e-5, shape: str = "cosine") -> None:
        super().__init__()
        budget_lr(0.0, 1.0, 0.0, shape)  # checks the shape
        if not min_lr >= 0:
            raise ValueError(f"BudgetSchedule needs min_lr >= 0, got {min_lr}")
        self.min_lr = float(min_lr)
        self.shape = shape
        self.last_fraction = 0.0

    @staticmethod
    def limit(trainer: Trainer) -> CpuTimeLimit:
        r"""The trainer's :class:`~hipnn_pyg.train.CpuTimeLimit` (the budget)."""
        limits = [c for c in trainer.callbacks if isinstance(c, CpuTimeLimit)]
        if not limits:
            raise ValueError("the budget schedule needs a CPU-time budget: add the "
                             "cpu_time_limit callback (callbacks=[...,cpu_time_limit,"
                             "budget_schedule])")
        return limits[0]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.limit(trainer)
        if any(config.scheduler is not None for config in trainer.lr_scheduler_configs):
            raise ValueError("the budget schedule sets the learning rate itself: switch off "
                             "the module's scheduler (module.scheduler=null)")

    def fraction(self, trainer: Trainer) -> float:
        r"""Fraction of the budget used, rank 0's under data parallelism."""
        limit = self.limit(trainer)
        used = limit.used_seconds() / (60.0 * limit.minutes)
        return float(trainer.strategy.broadcast(used, src=0))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.last_fraction = self.fraction(trainer)
        for optimizer in trainer.optimizers:
            rate = budget_lr(self.last_fraction, optimizer.defaults["lr"], self.min_lr,
                             self.shape)
            for group in optimizer.param_groups:
                group["lr"] = rate
