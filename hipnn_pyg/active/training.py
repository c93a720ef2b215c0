r"""Training the committee with the project's Hydra training (:func:`hipnn_pyg.train.run.train`).

Each member is ``conf/train.yaml`` composed with the user's ``train_overrides`` (model,
trainer, module, ...) plus what the loop sets: the run's data file (``data=ase``), the
member's seed (weights and train/validation split both differ per member), its
folder, and optionally a warm start from the previous round's member. The member's
seed, data file and folder are set after composition (one composition serves all
members), so ``train_overrides`` cannot change them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from hipnn_pyg.serialization import load_model
from hipnn_pyg.train.folders import used_files

log = logging.getLogger(__name__)


class WarmStart(Callback):
    r"""Starts training from the weights (and self-energies) of a saved model.

    The weights are loaded in :meth:`setup`, before Lightning restores a checkpoint,
    so a killed member resumed from its ``last.ckpt`` continues from there instead.

    Args:
        path (str): A model written by :func:`hipnn_pyg.serialization.save_model`.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        source = load_model(self.path)
        model = pl_module.model
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError as error:
            raise ValueError(f"warm start from {self.path}: the saved model does not match "
                             f"the configured one ({error})") from error
        log.info("warm start from %s", self.path)


@functools.lru_cache(maxsize=8)
def _composed(config_name: str, overrides: tuple[str, ...]) -> DictConfig:
    r"""``conf/<config_name>.yaml`` with ``overrides`` and Hydra's node, unresolved
    (cached: composing takes about a second)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hipnn_pyg.train.resolvers import conf_dir

    hydra_state = GlobalHydra.instance()
    previous = hydra_state.hydra if hydra_state.is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
            return hydra_compose(config_name=config_name, return_hydra_config=True,
                                 overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
        if previous is not None:
            GlobalHydra.instance().initialize(previous)


def _resolved(cfg: DictConfig, values: dict[str, Any] | None = None) -> DictConfig:
    r"""A resolved copy of a :func:`_composed` config with ``values`` (dotted keys)
    set first, without Hydra's node; Hydra's global config is restored afterwards."""
    from hydra.core.hydra_config import HydraConfig

    cfg = copy.deepcopy(cfg)
    for key, value in (values or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    outer = HydraConfig.instance().cfg
    try:
        HydraConfig().set_config(cfg)  # for ${hydra:...} interpolations
        without_hydra = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
        resolved = OmegaConf.create(OmegaConf.to_container(without_hydra, resolve=True))
    finally:
        HydraConfig.instance().cfg = outer  # type: ignore[assignment]
    assert isinstance(resolved, DictConfig)
    return resolved


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    r"""``conf/<config_name>.yaml`` composed with ``overrides`` like the console scripts
    would, fully resolved, without Hydra's own node. Hydra's global state is restored
    afterwards, so this also works inside a running Hydra app."""
    return _resolved(_composed(config_name, tuple(overrides)))


@dataclass(frozen=True)
class StepBudget:
    r"""Every member trains for ``steps`` optimiser steps (see module docs).

    Args:
        steps (int): Optimiser steps per member and round (rounded to whole
            validation intervals, see :meth:`apply`).
        validations (int): About this many validations over the budget (each may keep
            a checkpoint). (default: :obj:`10`)
        final_lr_fraction (float): The cosine decay ends at this fraction of the
            optimiser's learning rate. (default: :obj:`0.01`)
    """

    steps: int
    validations: int = 10
    final_lr_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 1 or self.validations < 1 or not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"a step budget needs steps >= 1, validations >= 1 and "
                             f"0 <= final_lr_fraction <= 1, got {self}")

    def apply(self, cfg: DictConfig, num_train_frames: int) -> None:
        r"""Sets the trainer, schedule and callbacks of the resolved member ``cfg``.

        The last step is validated, so the final, fully decayed weights can be the
        checkpoint kept. Where an epoch is shorter than the interval between
        validations, training runs whole epochs: ``steps`` rounded to a whole number of
        validation intervals (at most one interval, about ``steps / validations``, more).
        Otherwise it validates every ``steps // validations`` steps, across epochs, and
        stops after ``validations`` of them (at most ``validations - 1`` steps fewer)."""
        steps_per_epoch = max(math.ceil(num_train_frames / int(cfg.data.batch_size)), 1)
        with open_dict(cfg):
            if steps_per_epoch * self.validations <= self.steps:
                epochs = math.ceil(self.steps / steps_per_epoch)
                every = max(round(epochs / self.validations), 1)
                epochs = math.ceil(epochs / every) * every
                total = epochs * steps_per_epoch
                cfg.trainer.max_steps = -1
                cfg.trainer.max_epochs = epochs
                cfg.trainer.check_val_every_n_epoch = every
            else:  # long epochs: validate by steps
                every = max(self.steps // self.validations, 1)
                total = every * self.validations
                cfg.trainer.max_steps = total
                cfg.trainer.max_epochs = -1
                cfg.trainer.val_check_interval = every
                cfg.trainer.check_val_every_n_epoch = None
            cfg.module.scheduler = {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
                "T_max": total,
                "eta_min": float(cfg.module.optimizer.lr) * self.final_lr_fraction}
            cfg.module.scheduler_interval = "step"
            cfg.module.warmup_steps = 0  # the cosine schedule owns the learning rate
            if cfg.get("callbacks"):
                cfg.callbacks.pop("early_stopping", None)


def member_config(train_overrides: Sequence[str], data_path: Path, output_dir: Path,
                  seed: int, val_fraction: float, warm_start: Path | None = None,
                  num_threads: int | None = None, budget: StepBudget | None = None,
                  val_path: Path | None = None, num_train_frames: int | None = None
                  ) -> DictConfig:
    r"""The training config of one committee member (see module docs): with a
    ``budget`` (and the training frames it divides into epochs), a fixed number of
    steps; with ``val_path``, that fixed validation file instead of ``val_fraction`` of
    the member's data."""
    overrides = [
        "data=ase", "data.path=???", "data.num_train=null",
        f"data.num_val={float(val_fraction)}", "data.num_test=0", "test=false",
        "logger=csv", "tags=[active]", *train_overrides,
    ]
    if num_threads:
        overrides.append(f"num_threads={int(num_threads)}")
    cfg = _resolved(_composed("train", tuple(overrides)), {
        "paths.output_dir": str(output_dir), "paths.log_dir": str(output_dir / "logs"),
        "data.path": str(data_path), "data.seed": seed, "seed": seed,
        **({} if val_path is None else {"data.val_path": str(val_path)}),
    })
    if budget is not None:
        if num_train_frames is None:
            raise ValueError("a step budget needs the number of training frames")
        budget.apply(cfg, num_train_frames)
    with open_dict(cfg):
        # a killed member continues from its last.ckpt, or starts again if killed
        # before writing one (train_member skips finished members)
        cfg.resume = bool(used_files(output_dir))
        if warm_start is not None:
            cfg.callbacks = cfg.get("callbacks") or {}
            cfg.callbacks.warm_start = {"_target_": f"{__name__}.WarmStart",
                                        "path": str(warm_start)}
    return cfg


def train_member(cfg: DictConfig) -> dict[str, Any]:
    r"""Trains one member (skipped when its folder already holds the finished
    ``results.json``); returns its ``results.json``."""
    from hipnn_pyg.train.run import train

    output_dir = Path(cfg.paths.output_dir)
    results = output_dir / "results.json"
    if not results.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        train(cfg)
    return json.loads(results.read_text())
