r"""The Lightning module that trains a HIP-NN model on energies, forces and more."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from hipnn_pyg.io import model_state
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.train.callbacks import install_sigterm_flag_handler
from hipnn_pyg.train.ema import ExponentialMovingAverage
from hipnn_pyg.train.losses import (
    PER_ATOM_TARGETS,
    hierarchicality,
    l2_penalty,
    per_atom,
    regularized_weights,
    residual,
    target_residuals,
    weighted_loss,
)
from hipnn_pyg.train.metrics import ErrorSums, distributed_padding_mask

log = logging.getLogger(__name__)
# The epoch values are logged already summed over processes (see the class docs), so
# Lightning's advice to log them with sync_dist does not apply.
warnings.filterwarnings(
    "ignore", r"It is recommended to use `self.log\('(train|train_running|val|test)/",
    PossibleUserWarning,
)

#: Targets that get MAE/RMSE whenever both the model and the data provide them
#: (``charges``: the per-atom partial charges of a charge head, in e).
METRIC_TARGETS = ("energy", "forces", "stress", "dipole", "dipole_magnitude", "quadrupole",
                  "charges")
#: Targets obtained by differentiating the energy (need gradients in evaluation).
DERIVED_TARGETS = ("forces", "stress")
DEFAULT_LOSS_WEIGHTS = {"energy": 1.0, "forces": 100.0}
#: Log prefix of the training errors: running means over an epoch's batches, each taken
#: with the raw weights of its step (not the EMA weights of validation and test).
TRAIN_RUNNING = "train_running"
#: The splits with error sums.
SPLITS = ("train", "val", "test")


class HIPNNLightningModule(LightningModule):
    r"""Trains a HIP-NN model (or any model that :func:`hipnn_pyg.nn.predict` can run)
    with the loss of :mod:`hipnn_pyg.train.losses`.

    Validation, test, the ``hipnn_model`` entry of every checkpoint and the final
    ``model.pt`` use the EMA weights when ``ema_decay`` is set. Metrics are logged as
    ``{split}/{target}_{mae,rmse}`` in the data's units (eV, eV/Å, eV/Å³, e·Å, e), plus
    ``{split}/energy_per_atom_*`` and ``{split}/loss``; ``val/loss`` is the weighted
    data loss without regularisers, computed exactly over the whole split. Training
    errors are logged as ``train_running/{target}_{mae,rmse}``: means over the epoch's
    batches, each with the raw weights of its step while they changed, so they are not
    comparable with the validation and test errors (EMA weights, fixed). ``train/loss``
    is the epoch's mean training objective (regularisers included), ``train/loss_step``
    the current batch's.

    Under data parallelism every epoch value is summed over processes with one
    all-reduce in this module's own epoch-end hooks, which all processes run in the
    same order, and logged already reduced (identical on every process, so checkpoint,
    early-stopping and learning-rate decisions agree). Nothing is logged with
    ``sync_dist``: its lazy reduction would run wherever a value is first read, e.g. in
    a progress bar that only the first process shows, and deadlock the others.

    Evaluation needs autograd for forces, so the Trainer must run with
    ``inference_mode=False`` (the ``conf/trainer`` configs do).

    Args:
        model (nn.Module): The model to train, e.g. :class:`hipnn_pyg.HIPNN`.
        loss_weights (Mapping[str, float], optional): Weight of each target's
            mean-squared error; a target is trained on when its weight is > 0 and then
            must be in both the predictions and the data. Extra heads plug in by name
            (e.g. ``dipole``). (default: :obj:`{"energy": 1.0, "forces": 100.0}`)
        per_atom_energy (bool): Divide energy residuals by the atom count in the loss.
            (default: :obj:`True`)
        hierarchicality_weight (float): Weight of hippynn's hierarchicality penalty.
            (default: :obj:`0.0`)
        l2_weight (float): Weight of the squared norm of the weight matrices (not
            biases, sensitivities or self-energies). (default: :obj:`0.0`)
        optimizer (str): ``"adam"`` or ``"adamw"``. (default: :obj:`"adam"`)
        lr (float): Learning rate after warm-up. (default: :obj:`1e-3`)
        weight_decay (float): Optimizer weight decay, applied to the same weights as
            ``l2_weight``. (default: :obj:`0.0`)
        scheduler_factor (float): ReduceLROnPlateau factor. (default: :obj:`0.5`)
        scheduler_patience (int): ReduceLROnPlateau patience in validation epochs.
            (default: :obj:`5`)
        min_lr (float): Smallest learning rate of the plateau schedule.
            (default: :obj:`1e-6`)
        warmup_steps (int): Optimizer steps of linear warm-up from ``lr / warmup_steps``
            to ``lr``. (default: :obj:`0`)
        ema_decay (float, optional): Decay of the exponential moving average of the
            weights, e.g. 0.999. (default: :obj:`None`, no EMA)
        fit_self_energies (bool): Before the first epoch, fit the per-species
            self-energies on the training split when they are all zero (never on
            resume). (default: :obj:`True`)
        monitor (str): Metric that drives the plateau schedule. (default: :obj:`"val/loss"`)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_weights: Mapping[str, float] | None = None,
        per_atom_energy: bool = True,
        hierarchicality_weight: float = 0.0,
        l2_weight: float = 0.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler_factor: float = 0.5,
        scheduler_patience: int = 5,
        min_lr: float = 1e-6,
        warmup_steps: int = 0,
        ema_decay: float | None = None,
        fit_self_energies: bool = True,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        if optimizer.lower() not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got '{optimizer}'")
        weights = dict(loss_weights) if loss_weights is not None else dict(DEFAULT_LOSS_WEIGHTS)
        if any(float(w) < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        self.save_hyperparameters(ignore=["model"])
        # plain types only (not Hydra's DictConfig): checkpoints stay weights_only-loadable
        self.hparams["loss_weights"] = {name: float(w) for name, w in weights.items()}
        self.model = model
        self.loss_weights = {name: float(w) for name, w in weights.items() if float(w) > 0}
        if not self.loss_weights:
            raise ValueError(f"no loss weight > 0 in {weights}: nothing to train on")
        self.ema = ExponentialMovingAverage(model, ema_decay) if ema_decay else None
        # Persistent flag, so that a resumed run never refits the self-energies.
        self.register_buffer("self_energies_fitted", torch.tensor(False))
        # Error sums with a fixed row per quantity, the same on every process (see class
        # docs); the training objective's sum and sample count beside them.
        names = []
        for target in dict.fromkeys((*METRIC_TARGETS, *self.loss_weights)):
            names.append(target)
            if target in PER_ATOM_TARGETS:
                names.append(f"{target}_per_atom")
        self.errors = {split: ErrorSums(names) for split in SPLITS}
        self._train_loss_sums = torch.zeros(2, dtype=torch.float64)

    # ----------------------------------------------------------------- helpers
    @property
    def eval_model(self) -> nn.Module:
        r"""The weights used for validation, test and saving: EMA if enabled."""
        return self.ema.module if self.ema is not None else self.model

    @staticmethod
    def _num_atoms(data: Any) -> Tensor:
        if getattr(data, "ptr", None) is not None:
            return data.ptr[1:] - data.ptr[:-1]
        return torch.bincount(data.batch, minlength=data.num_graphs)

    @staticmethod
    def _has(data: Any, name: str) -> bool:
        return getattr(data, name, None) is not None

    def _predict(self, model: nn.Module, data: Any, training: bool) -> dict[str, Tensor]:
        if training:  # derivatives only where trained on; their graph is kept for backward
            forces = "forces" in self.loss_weights
            stress = "stress" in self.loss_weights
        else:
            forces = "forces" in self.loss_weights or self._has(data, "forces")
            stress = "stress" in self.loss_weights or self._has(data, "stress")
        if (forces or stress) and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "forces and stress need autograd during validation/test: create the "
                "Trainer with inference_mode=False (conf/trainer/default.yaml does)"
            )
        return predict(
            model,
            data,
            compute_forces=forces,
            compute_stress=stress,
            create_graph=training and (forces or stress),
        )

    def _update_metrics(
        self, split: str, prediction: Mapping[str, Tensor], data: Any, keep: Tensor | None = None
    ) -> None:
        num_atoms = self._num_atoms(data)
        atom_keep = keep[data.batch] if keep is not None else None
        for target in dict.fromkeys((*METRIC_TARGETS, *self.loss_weights)):
            if target not in prediction or not self._has(data, target):
                continue
            error = residual(prediction[target].detach(), getattr(data, target))
            per_structure = error
            if keep is not None:  # drop padding duplicates (graph- or atom-level rows)
                mask = keep if error.size(0) == keep.numel() else atom_keep
                error = error[mask]
                per_structure = per_structure[keep] if target in PER_ATOM_TARGETS else error
            self.errors[split].update(target, error)
            if target in PER_ATOM_TARGETS:
                atoms = num_atoms if keep is None else num_atoms[keep]
                self.errors[split].update(f"{target}_per_atom", per_atom(per_structure, atoms))

    def _padding_mask(
        self, split: str, data: Any, batch_idx: int, dataloader_idx: int
    ) -> Tensor | None:
        r"""Which graphs of evaluation batch ``batch_idx`` of loader ``dataloader_idx``
        are real, not a distributed sampler's padding (see
        :func:`~hipnn_pyg.train.metrics.distributed_padding_mask`)."""
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
        return distributed_padding_mask(loader, batch_idx, data.num_graphs, data.z.device)

    def _sum_over_processes(self, tensor: Tensor) -> Tensor:
        r"""A copy of ``tensor`` summed over all processes (one all-reduce)."""
        total = tensor.to(self.device, copy=True)  # the all-reduce works in place
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return total
        return trainer.strategy.reduce(total, reduce_op="sum")

    def _loss_metric_name(self, target: str) -> str:
        per_atom_energy = self.hparams.per_atom_energy
        return f"{target}_per_atom" if per_atom_energy and target in PER_ATOM_TARGETS else target

    def _log_epoch_metrics(self, split: str) -> None:
        r"""Sums the split's errors (and the training objective) over processes and logs
        them. Every process calls this from the same hook, so the one all-reduce meets
        on all of them, and all log the same values."""
        errors = self.errors[split]
        local = errors.sums.flatten()
        if split == "train":
            local = torch.cat([local, self._train_loss_sums.to(local.device)])
        total = self._sum_over_processes(local).double().cpu()
        errors.reset()
        values: dict[str, float] = {}
        if split == "train":
            self._train_loss_sums.zero_()
            loss_sum, count = total[-2:].tolist()
            if count > 0:
                values["train/loss"] = loss_sum / count
            total = total[:-2]
        prefix = TRAIN_RUNNING if split == "train" else split
        results = errors.results(total.view_as(errors.sums))
        for target, result in results.items():
            values[f"{prefix}/{target}_mae"] = result["mae"]
            values[f"{prefix}/{target}_rmse"] = result["rmse"]
        mse = {target: result["mse"] for target, result in results.items()}
        if split != "train" and mse:
            names = {t: self._loss_metric_name(t) for t in self.loss_weights}
            missing = [t for t, name in names.items() if name not in mse]
            if missing:
                raise KeyError(
                    f"the {split} data lack the trained target(s) {missing}: "
                    "cannot compute the validation loss"
                )
            values[f"{split}/loss"] = sum(w * mse[names[t]] for t, w in self.loss_weights.items())
        if split == "val" and not self.trainer.sanity_checking:
            self._step_plateau(values)
        for key, value in values.items():  # already reduced: no sync_dist (see class docs)
            self.log(key, value, prog_bar=key in self._progress_keys)

    _progress_keys = ("val/loss", "val/energy_mae", "val/forces_mae")

    def _step_plateau(self, values: Mapping[str, float]) -> None:
        # Stepped here, before ModelCheckpoint saves at on_validation_end, so that the
        # saved scheduler state includes this epoch's step: Lightning's own plateau
        # step comes after the checkpoint and is skipped on resume, which would make a
        # resumed run diverge from an uninterrupted one.
        monitor = self.hparams.monitor
        if monitor not in values:
            raise KeyError(f"scheduler monitor '{monitor}' not among the logged {sorted(values)}")
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step(values[monitor])

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return  # stepped in _step_plateau
        super().lr_scheduler_step(scheduler, metric)

    # ----------------------------------------------------------------- hooks
    def forward(self, data: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return self._predict(self.eval_model, data, training=False)

    def on_fit_start(self) -> None:
        self._check_targets()
        if self.hparams.fit_self_energies and not bool(self.self_energies_fitted):
            self._fit_self_energies()
        self.self_energies_fitted.fill_(True)
        if self.ema is not None and int(self.ema.num_updates) == 0:
            self.ema.reset(self.model)  # start the average from the fitted model

    def _check_targets(self) -> None:
        r"""Fails before the first step if the training data lack a trained target."""
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is None or not hasattr(dataset, "has"):
            return  # checked per batch in target_residuals instead
        for target in self.loss_weights:
            if not dataset.has(target):
                detail = dataset.missing_message(target) if hasattr(
                    dataset, "missing_message") else f"no '{target}' in the data"
                raise ValueError(
                    f"module.loss_weights.{target}={self.loss_weights[target]} > 0, but the "
                    f"training data have no '{target}' labels ({detail}); set its weight to 0 "
                    "or use a data set that has them"
                )

    def _fit_self_energies(self) -> None:
        current = getattr(self.model, "self_energies", None)
        if current is None or bool(current.abs().gt(0).any()):
            return  # not a HIP-NN, or given by the user
        from hipnn_pyg.train.self_energy import fit_self_energies

        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is None:
            raise RuntimeError(
                "fit_self_energies=True needs a datamodule with a train_dataset "
                "(or set the model's self-energies, or fit_self_energies=False)"
            )
        energies = fit_self_energies(dataset, self.model.species)
        self.model.set_self_energies(energies.to(current))
        log.info("fitted self-energies (eV) on %d training structures: %s", len(dataset),
                 dict(zip(self.model.species, energies.tolist(), strict=True)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        prediction = self._predict(self.model, batch, training=True)
        residuals = target_residuals(
            prediction, batch, self.loss_weights, self._num_atoms(batch),
            self.hparams.per_atom_energy,
        )
        loss = weighted_loss(residuals, self.loss_weights)
        size = batch.num_graphs
        # Step values are this process's batch only (the progress bar and loggers show
        # the first process's); epoch values are reduced in _log_epoch_metrics.
        if self.hparams.hierarchicality_weight > 0:
            hier = hierarchicality(prediction["layer_energy"], batch.batch, batch.num_graphs)
            loss = loss + self.hparams.hierarchicality_weight * hier
            self.log("train/hierarchicality", hier, batch_size=size)
        if self.hparams.l2_weight > 0:
            l2 = l2_penalty(regularized_weights(self.model))
            loss = loss + self.hparams.l2_weight * l2
            self.log("train/l2", l2, batch_size=size)
        self.log("train/loss_step", loss, batch_size=size, prog_bar=True)
        self._train_loss_sums = self._train_loss_sums.to(loss.device) + torch.stack(
            [loss.detach().double() * size, loss.new_tensor(size, dtype=torch.float64)]
        )
        self._update_metrics("train", prediction, batch)
        return loss

    def on_train_start(self) -> None:
        # Lightning's SIGTERM handler makes a collective call and can hang DDP ranks
        install_sigterm_flag_handler(self.trainer)

    def on_train_epoch_start(self) -> None:
        self.errors["train"].reset()
        self._train_loss_sums.zero_()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_start(self) -> None:
        self.errors["val"].reset()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        prediction = self._predict(self.eval_model, batch, False)
        keep = self._padding_mask("val", batch, batch_idx, dataloader_idx)
        self._update_metrics("val", prediction, batch, keep)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.errors["test"].reset()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        prediction = self._predict(self.eval_model, batch, False)
        keep = self._padding_mask("test", batch, batch_idx, dataloader_idx)
        self._update_metrics("test", prediction, batch, keep)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self._predict(self.eval_model, batch, False).items()}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Any = None) -> None:
        warmup = self.hparams.warmup_steps
        if warmup > 0 and self.trainer.global_step < warmup:
            scale = (self.trainer.global_step + 1) / warmup
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr * scale
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            self.ema.update(self.model)

    def configure_optimizers(self) -> dict[str, Any]:
        decayed = {id(p) for p in regularized_weights(self.model)}
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [  # no weight decay on biases, sensitivities and self-energies
            {"params": [p for p in params if id(p) in decayed],
             "weight_decay": self.hparams.weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        cls = torch.optim.AdamW if self.hparams.optimizer.lower() == "adamw" else torch.optim.Adam
        optimizer = cls(groups, lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.hparams.scheduler_factor,
            patience=self.hparams.scheduler_patience, min_lr=self.hparams.min_lr,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor,
                             "interval": "epoch", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets hipnn_pyg.io.load_model read the (EMA) model straight from a checkpoint.
        checkpoint["hipnn_model"] = model_state(self.eval_model)
