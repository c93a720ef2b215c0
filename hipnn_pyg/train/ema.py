r"""Exponential moving average (EMA) of model weights, and the callback that keeps it."""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import nn

from hipnn_pyg.compat.torch import lerp_all


class ExponentialMovingAverage(nn.Module):
    r"""Keeps a frozen copy of ``model`` whose parameters follow

    .. math::
        \bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta,
        \qquad d = \min\left(\text{decay}, \frac{1 + n}{10 + n}\right)

    after the ``n``-th update (the warm-up keeps early averages from remembering the
    random initialisation). Buffers are copied, not averaged.

    The copy is a registered submodule, so it is saved in and restored from
    checkpoints with the rest of the Lightning module, and a resumed run continues
    the same average.

    Args:
        model (nn.Module): The model to average.
        decay (float): Decay per update, in ``[0, 1)``, e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # The count on the host too, so an update never waits to read the device's;
        # read from the buffer once after construction or a checkpoint load.
        self._count: int | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_count())

    def _forget_count(self) -> None:
        self._count = None

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        r"""Copies ``model``'s weights into the average and restarts the warm-up."""
        self.module.load_state_dict(model.state_dict())
        self.num_updates.zero_()
        self._count = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        r"""Moves the average one step towards ``model``'s current weights."""
        if self._count is None:
            self._count = int(self.num_updates)
        n = float(self._count)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        averaged = list(self.module.parameters())
        current = [p.detach() for p in model.parameters()]
        lerp_all(averaged, current, 1.0 - decay)
        for target, source in zip(self.module.buffers(), model.buffers(), strict=True):
            target.copy_(source)
        self.num_updates += 1
        self._count += 1

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.module(*args, **kwargs)


class EMA(Callback):
    r"""Averages the trained weights with :class:`ExponentialMovingAverage` after every
    optimizer step; validation, test, the checkpoints' ``hipnn_model`` and ``model.pt``
    then use the averaged weights (:attr:`HIPNNLightningModule.eval_model
    <hipnn_pyg.train.HIPNNLightningModule.eval_model>`).

    The average is attached to the Lightning module as its submodule ``ema`` before any
    checkpoint is restored, so it is saved in the checkpoint's ``state_dict`` and
    restored both on resume and for ``trainer.test(ckpt_path=...)`` (Lightning restores
    a callback's own state only when fitting). Under data parallelism every process
    averages the same synchronised weights, so the copies stay identical. The average
    starts from the weights at the start of training (self-energies fitted). The
    Lightning module must hold the trained network as ``model`` (e.g.
    :class:`~hipnn_pyg.train.HIPNNLightningModule`).

    Args:
        decay (float): Decay per optimizer step, in ``[0, 1)``. (default: :obj:`0.999`)
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"callbacks.ema.decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self._last_step = -1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(getattr(pl_module, "ema", None), ExponentialMovingAverage):
            pl_module.ema = ExponentialMovingAverage(pl_module.model, self.decay)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if int(pl_module.ema.num_updates) == 0:
            pl_module.ema.reset(pl_module.model)  # not the weights at construction time
        self._last_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step > self._last_step:  # once per optimizer step
            pl_module.ema.update(pl_module.model)
            self._last_step = trainer.global_step
