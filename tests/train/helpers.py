"""Helpers for the training tests: config composition and a simulated crash."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict

from hipnn_pyg.train.resolvers import conf_dir


def tiny_model(prefix: str = "model.representation") -> list[str]:
    r"""Overrides that shrink the HIP-NN representation at config node ``prefix``."""
    return [f"{prefix}.hidden_channels=8", f"{prefix}.num_interactions=1",
            f"{prefix}.num_atom_layers=1", f"{prefix}.sensitivity.num_sensitivities=4"]


#: A quiet trainer on one thread.
QUIET = [
    "num_threads=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]
#: A tiny model and a quiet trainer: seconds per run on one CPU core.
TINY = [*tiny_model(), *QUIET]
#: A tiny model on one thread with the user's defaults otherwise (progress bar, summary).
TINY_DEFAULTS = [*tiny_model(), "num_threads=1"]
#: 16/8/8 frames of the shipped rMD17 ethanol files.
SHIPPED = [
    "data=rmd17_shipped",
    "model.representation.species=[1,6,8]",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "data.val_batch_size=8",
    "+data.max_frames=40",
]


def compose_config(
    name: str, output_dir: Path, overrides: Sequence[str] = (), data_dir: Path | None = None
) -> DictConfig:
    r"""Composes ``conf/<name>.yaml`` like ``@hydra.main`` would, with the run folder
    set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=list(overrides))
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
    GlobalHydra.instance().clear()
    return cfg


def crash_at(epoch: int, batch: int) -> list[str]:
    r"""Overrides that add :class:`CrashAt` to a run's callbacks."""
    return ["+callbacks.crash._target_=tests.train.helpers.CrashAt",
            f"+callbacks.crash.epoch={epoch}", f"+callbacks.crash.batch={batch}"]


def results(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / "results.json").read_text())


class CrashAt(Callback):
    r"""Raises at training batch ``batch`` of epoch ``epoch``, like a killed job."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


class RecordMonitored(Callback):
    r"""Appends, at every validation end, this process's rank, epoch, the learning rate
    and the values that checkpoint, early-stopping and plateau callbacks read, to the
    JSON-lines file ``path`` (one per process: ``path`` + ``.rank<r>``)."""

    def __init__(self, path: str, keys: Sequence[str] = ("val/loss",)) -> None:
        self.path, self.keys = path, list(keys)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        record = {"rank": trainer.global_rank, "epoch": trainer.current_epoch,
                  "lr": trainer.optimizers[0].param_groups[0]["lr"],
                  **{key: float(metrics[key]) for key in self.keys if key in metrics}}
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_records(path: Path) -> dict[int, list[dict[str, Any]]]:
    r"""The records of :class:`RecordMonitored` at ``path``, by rank."""
    records: dict[int, list[dict[str, Any]]] = {}
    for file in sorted(path.parent.glob(f"{path.name}.rank*")):
        lines = [json.loads(line) for line in file.read_text().splitlines() if line]
        records[int(file.name.rsplit("rank", 1)[1])] = lines
    return records
