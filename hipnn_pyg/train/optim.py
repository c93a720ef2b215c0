r"""Optimizer, warm-up and learning-rate schedule of the training module, built from
factories (Hydra ``_partial_: true`` configs such as ``conf/module/default.yaml``'s)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning import Trainer
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from hipnn_pyg.train.losses import regularized_weights


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    r"""The optimizer's parameter groups: the :func:`~hipnn_pyg.train.losses.
    regularized_weights` with the optimizer's weight decay, and the rest (biases,
    sensitivities, self-energies) with none. Frozen parameters (``requires_grad=False``)
    are left out, so layers can be frozen for fine-tuning."""
    decayed = {id(p) for p in regularized_weights(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in decayed]},
        {"params": [p for p in trainable if id(p) not in decayed], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def configure_optimization(
    model: nn.Module,
    optimizer: Callable[..., Optimizer],
    scheduler: Callable[[Optimizer], Any] | None,
    monitor: str,
    interval: str = "epoch",
) -> dict[str, Any]:
    r"""What :meth:`~lightning.pytorch.LightningModule.configure_optimizers` returns: the
    optimizer over :func:`parameter_groups` and, if given, the schedule stepped once per
    ``interval`` (``"epoch"`` or ``"step"``; a plateau schedule per epoch on ``monitor``)."""
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval={interval!r}: choose 'epoch' or 'step'")
    built = optimizer(parameter_groups(model))
    if scheduler is None:
        return {"optimizer": built}
    schedule = scheduler(built)
    if interval == "step" and isinstance(schedule, ReduceLROnPlateau):
        raise ValueError("a plateau schedule follows an epoch metric: use "
                         "scheduler_interval='epoch' with ReduceLROnPlateau")
    return {"optimizer": built, "lr_scheduler": {
        "scheduler": schedule, "interval": interval, "frequency": 1, "monitor": monitor}}


def warm_up(optimizer: Any, step: int, warmup_steps: int) -> None:
    r"""Sets every group's learning rate to ``(step + 1) / warmup_steps`` of the
    optimizer's configured ``lr`` during the first ``warmup_steps`` steps (linear)."""
    if 0 <= step < warmup_steps:
        for group in optimizer.param_groups:
            group["lr"] = optimizer.defaults["lr"] * (step + 1) / warmup_steps


def step_plateau(trainer: Trainer, values: Mapping[str, float], monitor: str) -> None:
    r"""Steps the trainer's :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`
    schedules on ``values[monitor]``.

    Call it before ``ModelCheckpoint`` saves (at ``on_validation_end``), so that the
    saved schedule includes this epoch's step: Lightning's own plateau step comes after
    the checkpoint and is skipped on resume, so a resumed run would diverge.

    Raises:
        KeyError: ``monitor`` is not among ``values``.
    """
    for config in trainer.lr_scheduler_configs:
        if isinstance(config.scheduler, ReduceLROnPlateau):
            if monitor not in values:
                raise KeyError(f"scheduler monitor '{monitor}' not among the logged "
                               f"{sorted(values)}")
            config.scheduler.step(values[monitor])
