r"""Training recipes of ``same_loop.py``: the plain recipe every model shares, and each
implementation's own (``--recipe own``), with their optimisers and learning-rate
schedules.

Loss convention (the same in hipnn_pyg, MACE's ``weighted`` loss and this loop):
:math:`w_E\,\mathrm{mean}((\hat E - E)/N)^2 + w_F\,\mathrm{mean}(\hat F - F)^2` over
structures and force components, in eV and Å; with ``force_loss="norm"`` (hipnn_pyg's
``module.force_loss=norm``) the force term is the mean over atoms of
:math:`\lVert\hat F_i - F_i\rVert`.

* ``plain``: Adam 3e-3, :math:`w_E : w_F = 1 : 100`, batch 16, halved after 10 epochs
  without a better validation loss (down to 1e-5); no warm-up, clipping or EMA.
* ``own``, hipnn_pyg: ``conf/experiment/rmd17_ethanol.yaml``'s recipe (Adam 2e-3, the
  force-norm loss at :math:`w_E : w_F = 1 : 0.6`, batch 16, warm-up 200 steps, gradient
  norm clipped at 10, EMA 0.99, the best weights' self-energies refitted on the training
  energies at the end, as ``hipnn-train``'s ``refit_self_energies`` does), its plateau
  schedule replaced by a half cosine over the CPU-time budget down to 1e-5
  (:func:`hipnn_pyg.train.budget.budget_lr`);
  ``--schedule plateau`` restores the experiment's (factor 0.5, patience 10, floor 1e-5).
* ``own``, MACE: the rMD17 recipe of Batatia et al., NeurIPS 2022 (lr 0.01, AMSGrad,
  batch 5, :math:`w_E : w_F = 1 : 1000`, EMA 0.99, float32), with
  ``mace/cli/run_train.py``'s defaults for the rest: Adam betas (0.9, 0.999), weight
  decay 5e-7 on the interactions' linear weights and the products, gradient norm
  clipped at 10, ReduceLROnPlateau factor 0.8 patience 50 epochs (no floor), and its
  stage two (``--swa``) over the last quarter of the budget (its default start, 3/4 of
  the epochs): weights 1000 : 100, lr 1e-3, the best epoch chosen afresh under the new
  loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from hipnn_pyg.train.budget import budget_lr


@dataclass(frozen=True)
class Recipe:
    r"""One training recipe.

    Args:
        lr: peak learning rate.
        force_weight: :math:`w_F` (energy weight 1).
        batch: structures per step.
        amsgrad: AMSGrad instead of Adam.
        weight_decay: L2 weight decay of MACE's decayed groups, added to the gradient
            as its recipe does; for ours decoupled (AdamW) on the weight matrices
            (0: none).
        ema: decay of the exponential moving average of the weights that validation,
            test and the saved weights use (``None``: no average).
        warmup: optimizer steps of linear warm-up.
        clip: gradient norm clip (``None``: none).
        schedule: ``"plateau"`` (on the validation loss, per epoch) or ``"cosine"``
            (over the CPU-time budget, per step, ending at ``min_lr``).
        factor: plateau factor.
        patience: plateau patience, epochs.
        min_lr: floor of both schedules.
        energy_weight: :math:`w_E`.
        stage_two: fraction of the budget at whose end MACE's stage two runs (``None``:
            none); it starts at the first epoch after ``1 - stage_two`` of the budget.
        stage_two_weights: :math:`(w_E, w_F)` of stage two.
        stage_two_lr: the constant rate of stage two.
        refit: shift the best weights' self-energies by a fit of their training
            residuals at the end (ours only).
        force_loss: the force term, ``"mse"`` or ``"norm"`` (see the module docs).
    """

    lr: float
    force_weight: float
    energy_weight: float = 1.0
    batch: int = 16
    amsgrad: bool = False
    weight_decay: float = 0.0
    ema: float | None = None
    warmup: int = 0
    clip: float | None = None
    schedule: str = "plateau"
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 1.0e-5
    stage_two: float | None = None
    stage_two_weights: tuple[float, float] = (1000.0, 100.0)
    stage_two_lr: float = 1.0e-3
    refit: bool = False
    force_loss: str = "mse"


PLAIN = Recipe(lr=3e-3, force_weight=100.0)
OWN = {
    "hipnn_pyg": Recipe(lr=2e-3, force_weight=0.6, ema=0.99, warmup=200, clip=10.0,
                        schedule="cosine", refit=True, force_loss="norm"),
    "mace": Recipe(lr=1e-2, force_weight=1000.0, batch=5, amsgrad=True, weight_decay=5e-7,
                   ema=0.99, clip=10.0, factor=0.8, patience=50, min_lr=0.0, stage_two=0.25),
}


def recipe_for(name: str, implementation: str, **changes: Any) -> Recipe:
    r"""The recipe ``name`` (``plain`` or ``own``) of ``implementation``, with
    ``changes`` (those not ``None``) applied.

    Raises:
        ValueError: ``own`` for an implementation without one here (hippynn).
    """
    if name == "plain":
        recipe = PLAIN
    elif name == "own" and implementation in OWN:
        recipe = OWN[implementation]
    else:
        raise ValueError(f"no {name!r} recipe for {implementation} (choose from plain"
                         f"{', own' if implementation in OWN else ''})")
    changes = {key: value for key, value in changes.items() if value is not None}
    return dataclasses.replace(recipe, **changes)


def parameter_groups(model: torch.nn.Module, implementation: str,
                     weight_decay: float) -> list[dict[str, Any]]:
    r"""The optimizer's parameter groups: for MACE with ``weight_decay``, its own split
    (``mace/tools/scripts_utils.py``'s ``get_params_options``: decay on the interactions'
    ``linear.weight``/``skip_tp_full.weight`` and on the products); for ours, decay on
    the weight matrices that ``hipnn-train``'s ``l2_weight`` regularises (not biases,
    scales or self-energies); else one group."""
    if implementation not in ("mace", "hipnn_pyg") or weight_decay == 0:
        return [{"params": list(model.parameters())}]
    if implementation == "hipnn_pyg":
        from hipnn_pyg.train.losses import regularized_weights

        decayed = regularized_weights(model)
    else:
        decayed = [p for name, p in model.interactions.named_parameters()
                   if "linear.weight" in name or "skip_tp_full.weight" in name]
        decayed += list(model.products.parameters())
    chosen = {id(p) for p in decayed}
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if id(p) not in chosen],
             "weight_decay": 0.0}]


class Schedule:
    r"""The learning rate of each step: linear warm-up over ``recipe.warmup`` steps, then
    either the plateau schedule (stepped per epoch on the validation loss) or the half
    cosine over the budget (set before every step from the fraction of CPU time used).

    Args:
        optimizer: the optimizer whose groups it sets.
        recipe: the recipe.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe) -> None:
        if recipe.schedule not in ("plateau", "cosine"):
            raise ValueError(f"schedule {recipe.schedule!r}: choose plateau or cosine")
        self.optimizer, self.recipe = optimizer, recipe
        self.fixed: float | None = None  # stage two's constant rate
        self.plateau = None if recipe.schedule != "plateau" else \
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=recipe.factor, patience=recipe.patience,
                min_lr=recipe.min_lr)

    def before_step(self, step: int, fraction: float) -> float:
        r"""Sets and returns the rate of optimizer step ``step`` (from 0), at
        ``fraction`` of the budget."""
        if self.fixed is not None:
            rate = self.fixed
        elif self.plateau is not None:
            rate = self.optimizer.param_groups[0]["lr"] if step >= self.recipe.warmup \
                else self.recipe.lr * (step + 1) / self.recipe.warmup
        else:
            rate = budget_lr(fraction, self.recipe.lr, self.recipe.min_lr)
            if step < self.recipe.warmup:
                rate = min(rate, self.recipe.lr * (step + 1) / self.recipe.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        return rate

    def after_epoch(self, step: int, val_loss: float) -> None:
        r"""Steps the plateau schedule on the epoch's validation loss (after warm-up)."""
        if self.plateau is not None and self.fixed is None and step >= self.recipe.warmup:
            self.plateau.step(val_loss)

    def start_stage_two(self) -> None:
        r"""From now on the constant ``recipe.stage_two_lr`` (MACE's SWALR after its
        one-epoch anneal)."""
        self.fixed = self.recipe.stage_two_lr
