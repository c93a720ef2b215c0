r"""Exponential moving average (EMA) of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


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

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        r"""Copies ``model``'s weights into the average and restarts the warm-up."""
        self.module.load_state_dict(model.state_dict())
        self.num_updates.zero_()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        r"""Moves the average one step towards ``model``'s current weights."""
        n = float(self.num_updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        averaged = list(self.module.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for target, source in zip(self.module.buffers(), model.buffers(), strict=True):
            target.copy_(source)
        self.num_updates += 1

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.module(*args, **kwargs)
