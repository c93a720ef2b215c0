r"""The Lightning module that trains a HIP-NN model on energies, forces and more."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from hipnn_pyg.compat.lightning import attached_trainer
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import model_state
from hipnn_pyg.train.callbacks import install_sigterm_flag_handler
from hipnn_pyg.train.losses import hierarchicality, l2_penalty, regularized_weights
from hipnn_pyg.train.metrics import EpochErrors, loader_padding_mask
from hipnn_pyg.train.optim import (
    clips_mixed_precision,
    configure_optimization,
    step_plateau,
    warm_up,
)
from hipnn_pyg.train.targets import (
    build_targets,
    check_labels,
    data_loss,
    derivatives,
    num_atoms,
)

# The epoch values are logged already summed over processes (see the class docs), so
# Lightning's advice to log them with sync_dist does not apply.
warnings.filterwarnings(
    "ignore", r"It is recommended to use `self.log\('(train|train_running|val|test)/",
    PossibleUserWarning,
)

DEFAULT_LOSS_WEIGHTS = {"energy": 1.0, "forces": 100.0}
#: Log prefix of the training errors: running means over an epoch's batches, each taken
#: with the raw weights of its step (not the EMA weights of validation and test).
TRAIN_RUNNING = "train_running"
SPLITS = ("train", "val", "test")


class HIPNNLightningModule(LightningModule):
    r"""Trains a HIP-NN model (or any model that :func:`hipnn_pyg.nn.predict` can run) on
    the :class:`~hipnn_pyg.train.targets.Target` objects built from ``loss_weights``.

    Logs ``{split}/{metric}_{mae,rmse}`` (data units: eV, eV/Å, e·Å, ...) and
    ``{split}/loss`` (the weighted data loss without regularisers, exact over the split);
    validation and test use :attr:`eval_model`. Training errors are logged as
    ``train_running/...``: means over the epoch's batches, each with the raw weights of
    its step, so not comparable with validation and test. ``train/loss`` is the epoch's
    mean training objective (regularisers included), ``train/loss_step`` the batch's.

    Under data parallelism every epoch value is summed over processes by one all-reduce
    in this module's epoch-end hooks, which all processes run in the same order, and
    logged already reduced, identical on every process (checkpoint, early-stopping and
    learning-rate decisions agree). Nothing is logged with ``sync_dist``: its lazy
    reduction runs wherever a value is first read, e.g. in the first process's progress
    bar only, and would deadlock the others. Evaluation needs autograd for forces: run
    the Trainer with ``inference_mode=False``.

    Args:
        model (nn.Module): The model to train, e.g. :class:`hipnn_pyg.HIPNN`.
        loss_weights (Mapping[str, float], optional): Weight of each target's loss term
            (its mean-squared error, or see ``force_loss``); 0 for metrics only. Extra
            heads plug in by name (e.g. ``dipole``).
            (default: :obj:`{"energy": 1.0, "forces": 100.0}`)
        per_atom_energy (bool): Divide energy residuals by the atom count in the loss.
            (default: :obj:`True`)
        force_loss (str): The forces' loss term: ``"mse"``, the mean square over atoms
            and components, or ``"norm"``, the mean over atoms of
            :math:`\lVert\hat F_i - F_i\rVert` (GemNet's; logged as ``forces_norm``), in
            eV/Å rather than eV²/Å², so its weight is on another scale.
            (default: :obj:`"mse"`)
        hierarchicality_weight (float): Weight of hippynn's hierarchicality penalty.
            (default: :obj:`0.0`)
        l2_weight (float): Weight of the squared norm of the weight matrices (not biases,
            sensitivities or self-energies). (default: :obj:`0.0`)
        optimizer (Callable, optional): Builds the optimizer from
            :func:`~hipnn_pyg.train.optim.parameter_groups`, e.g. ``partial(torch.optim.
            AdamW, lr=1e-3, weight_decay=1e-4)``. (default: :obj:`partial(Adam, lr=1e-3)`)
        scheduler (Callable, optional): Builds the learning-rate schedule from the
            optimizer, e.g. ``partial(ReduceLROnPlateau, factor=0.5)`` (stepped on
            ``monitor``) or ``partial(CosineAnnealingLR, T_max=2000)``.
            (default: :obj:`None`, a constant rate)
        scheduler_interval (str): Step the schedule every ``"epoch"`` or every optimizer
            ``"step"`` (a decay over a fixed step budget; not a plateau schedule).
            (default: :obj:`"epoch"`)
        warmup_steps (int): Optimizer steps of linear warm-up to the optimizer's ``lr``.
            (default: :obj:`0`)
        monitor (str): Metric of a plateau schedule. (default: :obj:`"val/loss"`)
        level_weights (Mapping[str, float], optional): Weight of each level of theory's
            structures in the loss, for a multi-fidelity model trained on data with a
            ``level`` (:class:`~hipnn_pyg.data.MultiFidelityDataModule`).
            (default: :obj:`None`, 1 each)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_weights: Mapping[str, float] | None = None,
        per_atom_energy: bool = True,
        hierarchicality_weight: float = 0.0,
        l2_weight: float = 0.0,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[[Optimizer], Any] | None = None,
        warmup_steps: int = 0,
        monitor: str = "val/loss",
        level_weights: Mapping[str, float] | None = None,
        scheduler_interval: str = "epoch",
        force_loss: str = "mse",
    ) -> None:
        super().__init__()
        if optimizer is not None and not callable(optimizer):
            raise ValueError(f"optimizer must build a torch optimizer (a class or partial, "
                             f"e.g. from a `_partial_: true` config), got {optimizer!r}")
        weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
        self.targets = build_targets(weights, per_atom_energy, force_loss)
        self.trained = [target for target in self.targets if target.trained]
        if not self.trained:
            raise ValueError(f"no loss weight > 0 in {weights}: nothing to train on")
        # plain types only (no partials or DictConfig): checkpoints stay weights_only-loadable
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.hparams["loss_weights"] = {name: float(w) for name, w in weights.items()}
        self.hparams["level_weights"] = (None if level_weights is None else
                                         {str(k): float(v) for k, v in level_weights.items()})
        levels = getattr(model, "levels", None)
        unknown = sorted(set(level_weights or {}) - set(levels or []))
        if unknown:
            raise ValueError(f"level_weights name level(s) {unknown} that the model does not "
                             f"have (its levels: {levels})")
        self.model = model
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        # Fixed rows per metric, the same on every process (see class docs)
        metrics = [metric for target in self.targets for metric in target.metrics]
        self.errors = {split: EpochErrors(metrics) for split in SPLITS}

    @property
    def eval_model(self) -> nn.Module:
        r"""The weights for validation, test and saving: the EMA average when an
        :class:`~hipnn_pyg.train.EMA` callback attached one as ``self.ema``."""
        ema = getattr(self, "ema", None)
        return ema.module if ema is not None else self.model

    def _predict(self, model: nn.Module, data: Any, training: bool) -> dict[str, Tensor]:
        derived = derivatives(self.targets, None if training else data)
        if derived and not training and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "forces and stress need autograd during validation/test: create the "
                "Trainer with inference_mode=False (conf/trainer/default.yaml does)"
            )
        return predict(model, data, compute_forces="forces" in derived,  # graph kept to train
                       compute_stress="stress" in derived, create_graph=training and bool(derived))

    def _padding_mask(
        self, split: str, data: Any, batch_idx: int, dataloader_idx: int
    ) -> Tensor | None:
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        return loader_padding_mask(loaders, dataloader_idx, batch_idx, data.num_graphs,
                                   data.z.device)

    def _log_epoch_metrics(self, split: str) -> None:
        r"""Sums the split's errors (and the training objective) over processes and logs
        them. Every process calls this from the same hook, so the one all-reduce meets on
        all of them, and all log the same values."""
        results, objective = self.errors[split].reduce(attached_trainer(self), self.device)
        prefix = TRAIN_RUNNING if split == "train" else split
        values = {f"{prefix}/{metric}_{kind}": result[kind]
                  for metric, result in results.items() for kind in ("mae", "rmse")}
        if objective is not None:
            values["train/loss"] = objective
        if split != "train" and results:
            values[f"{split}/loss"] = data_loss(self.trained, results, split)
        if split == "val" and not self.trainer.sanity_checking:
            step_plateau(self.trainer, values, self.hparams.monitor)
        for key, value in values.items():  # already reduced: no sync_dist (see class docs)
            self.log(key, value, prog_bar=key in ("val/loss", "val/energy_mae", "val/forces_mae"))

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        if not isinstance(scheduler, ReduceLROnPlateau):  # plateau: in _log_epoch_metrics
            super().lr_scheduler_step(scheduler, metric)

    def forward(self, data: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return self._predict(self.eval_model, data, training=False)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        check_labels(self.trained, getattr(datamodule, "train_dataset", None))

    def on_train_start(self) -> None:
        # Lightning's SIGTERM handler makes a collective call and can hang DDP ranks
        install_sigterm_flag_handler(self.trainer)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        prediction = self._predict(self.model, batch, training=True)
        atoms, size = num_atoms(batch), batch.num_graphs
        weight = self._graph_weights(batch)
        loss = sum(t.weight * t.loss_term(prediction, batch, atoms, weight)
                   for t in self.trained)
        # Step values are this process's batch only; epoch values: _log_epoch_metrics.
        if self.hparams.hierarchicality_weight > 0:
            hier = hierarchicality(prediction["layer_energy"], batch.batch, batch.num_graphs)
            loss = loss + self.hparams.hierarchicality_weight * hier
            self.log("train/hierarchicality", hier, batch_size=size)
        if self.hparams.l2_weight > 0:
            l2 = l2_penalty(regularized_weights(self.model))
            loss = loss + self.hparams.l2_weight * l2
            self.log("train/l2", l2, batch_size=size)
        self.log("train/loss_step", loss, batch_size=size, prog_bar=True)
        self.errors["train"].add_objective(loss, size)
        self.errors["train"].add_errors(self.targets, prediction, batch)
        return loss

    def _graph_weights(self, batch: Any) -> Tensor | None:
        # Each structure's weight by its level of theory (level_weights), or none.
        weights, levels = self.hparams.get("level_weights"), getattr(self.model, "levels", None)
        if not weights or levels is None or getattr(batch, "level", None) is None:
            return None
        table = torch.tensor([weights.get(name, 1.0) for name in levels],
                             dtype=torch.float64, device=batch.z.device)
        return table[batch.level.view(-1)]

    def on_train_epoch_start(self) -> None:
        self.errors["train"].reset()  # nothing left over from an interrupted epoch

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_start(self) -> None:
        self.errors["val"].reset()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        keep = self._padding_mask("val", batch, batch_idx, dataloader_idx)
        self.errors["val"].add_errors(self.targets, self._predict(self.eval_model, batch, False),
                                     batch, keep)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.errors["test"].reset()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        keep = self._padding_mask("test", batch, batch_idx, dataloader_idx)
        self.errors["test"].add_errors(self.targets, self._predict(self.eval_model, batch, False),
                                      batch, keep)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self._predict(self.eval_model, batch, False).items()}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Any = None) -> None:
        warm_up(optimizer, self.trainer.global_step, self.hparams.warmup_steps)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimization(
            self.model, self.optimizer_factory, self.scheduler_factory, self.hparams.monitor,
            self.hparams.get("scheduler_interval", "epoch"),
            fused=not clips_mixed_precision(attached_trainer(self)))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets hipnn_pyg.serialization.load_model read the (EMA) model straight from a checkpoint.
        checkpoint["hipnn_model"] = model_state(self.eval_model)
