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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from hipnn_pyg.serialization import load_model

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


def member_config(train_overrides: Sequence[str], data_path: Path, output_dir: Path,
                  seed: int, val_fraction: float, warm_start: Path | None = None,
                  num_threads: int | None = None) -> DictConfig:
    r"""The training config of one committee member (see module docs)."""
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
    })
    with open_dict(cfg):
        # a killed member continues from its last.ckpt
        cfg.resume = (output_dir / "checkpoints" / "last.ckpt").is_file()
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
