r"""Optimizer, warm-up and learning-rate schedule of the training module, built from
factories (Hydra ``_partial_: true`` configs such as ``conf/module/default.yaml``'s)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
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


def clips_mixed_precision(trainer: Trainer | None) -> bool:
    r"""Whether ``trainer`` clips gradients under mixed precision, which Lightning
    refuses for an optimizer that could unscale them itself (a fused one)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    if trainer is None:
        return False
    return isinstance(trainer.precision_plugin, MixedPrecision) and bool(
        trainer.gradient_clip_val)


#: devices whose fused optimizer kernels hipnn_pyg relies on
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(optimizer: Callable[..., Optimizer], groups: list[dict[str, Any]],
                    fused: bool = True) -> Optimizer:
    r"""``optimizer(groups)``, fused when ``fused`` allows it, its class takes ``fused``
    with the default :obj:`None` (Adam, AdamW, SGD, Adagrad), its config sets neither
    ``fused`` nor ``foreach``, and every parameter is a floating-point tensor on a CPU or
    CUDA device.

    A fused optimizer updates every parameter in one kernel: the same arithmetic as the
    default loop over tensors, in less time on a CPU. A checkpoint's optimizer state
    loads into either form (the moments are the same), and the loaded groups keep the
    form built here."""
    target = optimizer.func if isinstance(optimizer, partial) else optimizer
    chosen = optimizer.keywords if isinstance(optimizer, partial) else {}
    default = inspect.signature(target).parameters.get("fused") \
        if isinstance(target, type) else None
    supported = all(p.is_floating_point() and p.device.type in FUSED_DEVICES
                    for group in groups for p in group["params"])
    if fused and default is not None and default.default is None and supported \
            and "fused" not in chosen and "foreach" not in chosen:
        built = optimizer(groups, fused=True)
    else:
        built = optimizer(groups)
    form = {key: built.defaults[key] for key in ("fused", "foreach") if key in built.defaults}

    def keep_form(loaded: Optimizer) -> None:
        for group in loaded.param_groups:
            group.update(form)

    built.register_load_state_dict_post_hook(keep_form)
    return built


def configure_optimization(
    model: nn.Module,
    optimizer: Callable[..., Optimizer],
    scheduler: Callable[[Optimizer], Any] | None,
    monitor: str,
    interval: str = "epoch",
    fused: bool = True,
) -> dict[str, Any]:
    r"""What :meth:`~lightning.pytorch.LightningModule.configure_optimizers` returns: the
    optimizer over :func:`parameter_groups` (fused where :func:`build_optimizer` can, and
    ``fused``) and, if given, the schedule stepped once per ``interval`` (``"epoch"`` or
    ``"step"``; a plateau schedule per epoch on ``monitor``)."""
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval={interval!r}: choose 'epoch' or 'step'")
    built = build_optimizer(optimizer, parameter_groups(model), fused)
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
