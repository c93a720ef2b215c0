r"""Training and evaluation driven by a composed Hydra config (see ``conf/``).

:func:`train` and :func:`evaluate` take the config that ``scripts/train.py``,
``scripts/eval.py`` or the ``hipnn-train``/``hipnn-eval`` console scripts compose.
"""

from __future__ import annotations

import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import hipnn_pyg.train.resolvers  # noqa: F401  (registers ${hipnn_root:})
from hipnn_pyg.atomic import atomic_write_text
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import atomic_torch_save, load_model, save_model, torch_load
from hipnn_pyg.train import finetune
from hipnn_pyg.train.folders import (
    is_rank_zero,
    named_checkpoint,
    refuse_used_folder,
    resume_requested,
)
from hipnn_pyg.train.metrics import ErrorMetric, format_table
from hipnn_pyg.train.module import TRAIN_RUNNING
from hipnn_pyg.train.self_energy import (
    initialize_self_energies,
    refit_self_energies,
    scale_readouts,
)
from hipnn_pyg.train.targets import KNOWN_TARGETS, derivatives, num_atoms

log = logging.getLogger(__name__)


def instantiate_list(config: DictConfig | None, kind: type) -> list[Any]:
    r"""Instantiates every ``_target_`` entry of a config group (callbacks, loggers);
    ``null`` entries are skipped, so one can be switched off with ``callbacks.x=null``."""
    objects: list[Any] = []
    if not config:
        return objects
    for name, entry in config.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            obj = instantiate(entry)
            if not isinstance(obj, kind):
                raise TypeError(f"{name}: expected a {kind.__name__}, got {type(obj).__name__}")
            objects.append(obj)
    return objects


def trainer_callbacks(cfg: DictConfig) -> list[Callback]:
    r"""The ``callbacks`` group, without its progress display when
    ``trainer.enable_progress_bar=false`` (Lightning refuses a progress-bar callback
    then, so one override switches it off)."""
    callbacks = instantiate_list(cfg.get("callbacks"), Callback)
    if cfg.trainer.get("enable_progress_bar", True):
        return callbacks
    return [c for c in callbacks if not isinstance(c, ProgressBar)]


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    r"""The checkpoint to continue from, if any.

    * ``ckpt_path=<file or run folder>``: that checkpoint (a folder's
      ``checkpoints/last.ckpt``).
    * ``resume=true``: this run folder's ``checkpoints/last.ckpt`` (give the old folder
      with ``hydra.run.dir=...``) if it exists, else a fresh start, so that a requeued
      job resumes and a first one starts.
    * ``resume=<run folder or .ckpt>``: that folder's ``checkpoints/last.ckpt`` or that
      file; logs and new checkpoints go to this run's folder.
    """
    named = named_checkpoint(cfg)
    if named is not None:
        setting, path = named
        if not path.is_file():
            raise FileNotFoundError(f"{setting}: no checkpoint at {path}")
        log.info("resuming from %s", path)
        return str(path)
    if resume_requested(cfg):
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.warning("resume=true but %s does not exist: starting a new run", last)
    return None


def _has_test_data(datamodule: LightningDataModule) -> bool:
    dataset = getattr(datamodule, "test_dataset", None)
    if dataset is not None:  # HIPNNDataModule after setup: an empty split means no test
        return len(dataset) > 0
    return type(datamodule).test_dataloader is not LightningDataModule.test_dataloader


def apply_threads(cfg: DictConfig) -> None:
    r"""``torch.set_num_threads(cfg.num_threads)`` when set: small models on shared
    CPUs run several times faster on one thread than on oversubscribed cores."""
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))


def _scalar(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def fit_on_training_split(model: torch.nn.Module, datamodule: LightningDataModule,
                          network_offset: bool = False,
                          readout_decay: float | None = None) -> None:
    r"""Fits ``model``'s self-energies on the data's training split when they are all
    zero (see :func:`~hipnn_pyg.train.self_energy.initialize_self_energies`), with
    ``network_offset`` also absorbing the untrained network's mean energy; first scales
    the higher energy readouts by ``readout_decay`` when given
    (:func:`~hipnn_pyg.train.self_energy.scale_readouts`)."""
    if getattr(model, "self_energies", None) is None:
        return  # not a model with self-energies
    if readout_decay is not None:
        scale_readouts(model, readout_decay)
    datamodule.setup("fit")
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None:
        raise RuntimeError(
            f"fit_self_energies=true needs a datamodule with a train_dataset, not "
            f"{type(datamodule).__name__} (or set the model's self-energies, or "
            "fit_self_energies=false)"
        )
    initialize_self_energies(model, dataset, network_offset)


def start_from_training_split(cfg: DictConfig, model: torch.nn.Module,
                              datamodule: LightningDataModule) -> None:
    r"""A new run's start (``fit_self_energies``): :func:`fit_on_training_split` with the
    config's ``fit_network_offset`` (default on) and ``initial_readout_decay``."""
    fit_on_training_split(model, datamodule, bool(cfg.get("fit_network_offset", True)),
                          cfg.get("initial_readout_decay"))


def refit_after_training(cfg: DictConfig, module: Any, datamodule: LightningDataModule,
                         best: str | None) -> bool:
    r"""With ``refit_self_energies`` (default on), loads the best checkpoint's weights and
    shifts their self-energies by a least-squares fit of the training split's energy
    residuals (:func:`~hipnn_pyg.train.self_energy.refit_self_energies`): a force-weighted
    loss learns the energy's constant offset slowly, and no validation or test energy
    enters the fit. Returns whether it refitted (then test and ``model.pt`` use these
    weights; the checkpoint files keep the trained ones)."""
    model = module.eval_model
    targets = {target.name for target in getattr(module, "trained", ())}
    if not cfg.get("refit_self_energies", True) or "energy" not in targets \
            or getattr(model, "self_energies", None) is None:
        return False
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None:
        return False
    if best is not None:
        module.load_state_dict(torch_load(best)["state_dict"])
    refit_self_energies(module.eval_model, dataset)
    return True


def train(cfg: DictConfig) -> float | None:
    r"""Trains (and tests) the model that ``cfg`` describes.

    Writes to ``cfg.paths.output_dir``: ``checkpoints/`` (best and ``last.ckpt``,
    atomically), the loggers' metrics, ``model.pt`` (the best weights, EMA if used,
    loadable with :func:`hipnn_pyg.serialization.load_model`) and ``results.json``. A new
    run (not a resumed one) first fits the self-energies on the training split
    (``fit_self_energies``); with ``finetune.from`` it starts from that model instead
    (:mod:`hipnn_pyg.train.finetune`).

    Returns:
        The value of ``cfg.optimized_metric`` (for sweeps; its best value when it is
        the checkpoint's monitor), or ``None`` if it was not logged.
    """
    apply_threads(cfg)
    if cfg.get("seed") is not None:
        seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    log.info("output folder: %s", output_dir)
    if is_rank_zero():
        refuse_used_folder(output_dir, cfg)  # also before Hydra writes (conf/train.yaml)
    ckpt_path = checkpoint_to_resume(cfg) if cfg.get("train", True) else None
    hipnn_pyg.train.resolvers.check_data_paths(cfg)  # a missing file: where it was looked for
    datamodule: LightningDataModule = instantiate(cfg.data)
    source = finetune.pretrained_source(cfg)
    if source:
        model, frozen = finetune.pretrained_model(cfg, source)
    else:
        model = instantiate(cfg.model)
    module = instantiate(cfg.module, model=model)
    callbacks = trainer_callbacks(cfg)
    loggers = instantiate_list(cfg.get("logger"), Logger)
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if loggers:  # the resolved config, without Hydra's own node (present in compose())
        config = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(config, resolve=True))  # type: ignore[arg-type]

    if cfg.get("train", True):
        if source:
            finetune.prepare_data(cfg, model, datamodule, refit=ckpt_path is None)
        elif ckpt_path is None and cfg.get("fit_self_energies", True):
            start_from_training_split(cfg, model, datamodule)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException as error:
            # Lightning raises it without an exit code, so a terminated run would exit 0
            # and look finished to a scheduler or sweep: exit as a killed process does.
            raise SystemExit(128 + signal.SIGTERM) from error
        if not any(key.startswith("val/") for key in trainer.callback_metrics) and len(
                getattr(datamodule, "val_dataset", None) or []):
            # resumed after its last epoch (killed before the end): nothing was trained,
            # so validate the final weights again for the results
            trainer.validate(module, datamodule=datamodule, verbose=False)
    results = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}

    checkpoint = trainer.checkpoint_callback if isinstance(
        trainer.checkpoint_callback, ModelCheckpoint) else None
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    refitted = cfg.get("train", True) and refit_after_training(cfg, module, datamodule, best)
    if cfg.get("test", True) and _has_test_data(datamodule):
        if best is None:
            log.warning("no best checkpoint: testing the current weights")
        tested = None if refitted else best  # the refitted best weights are in memory
        for entry in trainer.test(module, datamodule=datamodule, ckpt_path=tested,
                                  verbose=False):
            results.update({k: _scalar(v) for k, v in entry.items()})

    objective = cfg.get("optimized_metric")
    value = results.get(objective) if objective else None
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if best_score is not None and objective == checkpoint.monitor:
        value = _scalar(best_score)

    if trainer.is_global_zero:
        if best is not None and not refitted:  # the best weights (EMA if used)
            state = torch_load(best)["hipnn_model"]
            atomic_torch_save(state, output_dir / "model.pt")
        else:
            save_model(module.eval_model, output_dir / "model.pt")
        summary = {"best_checkpoint": best, "objective": objective, "objective_value": value,
                   "metrics": results}
        if source:
            summary["finetune"] = {"from": str(source), "frozen": frozen.num_frozen,
                                   "trainable": frozen.num_trainable}
        atomic_write_text(output_dir / "results.json", json.dumps(summary, indent=2, default=str))
        weights = "EMA weights" if module.eval_model is not module.model else "weights"
        log.info("\n%s", format_table(
            {k: v for split in (TRAIN_RUNNING, "val", "test") for k, v in results.items()
             if k.startswith(f"{split}/")},
            title=f"Final errors (val: last epoch, {weights}; test: "
                  f"{'best checkpoint' if best else 'final'}, {weights};\n"
                  f"{TRAIN_RUNNING}: mean over the last epoch's batches, each with the raw "
                  "weights of its step, not comparable with val/test)",
        ))
        log.info("model: %s", output_dir / "model.pt")
    return value


@torch.no_grad()
def _collect(model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, list]:
    r"""``{metric: [(reference, prediction), ...]}`` per batch, on the CPU, for every
    known target that both the model and the data provide."""
    collected: dict[str, list] = {}
    for batch in loader:
        batch = batch.to(device)
        labelled = [t for t in KNOWN_TARGETS.values() if getattr(batch, t.name, None) is not None]
        derived = derivatives(labelled, batch)
        prediction = predict(model, batch, compute_forces="forces" in derived,
                             compute_stress="stress" in derived)
        atoms = num_atoms(batch)
        for target in (t for t in labelled if t.available(prediction, batch)):
            pairs = target.pairs({target.name: prediction[target.name].detach()}, batch, atoms)
            for metric, (predicted, reference) in pairs.items():
                collected.setdefault(metric, []).append((reference.cpu(), predicted.cpu()))
    return collected


def evaluate(cfg: DictConfig) -> dict[str, float]:
    r"""Evaluates a trained model (``cfg.ckpt_path``: a ``model.pt`` or a Lightning
    checkpoint) on one split (``cfg.split``: ``test``, ``val`` or ``train``) of the data
    that ``cfg.data`` describes. Prints MAE/RMSE per target in meV, meV/Å, ...; writes
    ``parity_<target>.png`` and ``results.json`` to ``cfg.paths.output_dir``.

    Returns:
        ``{"<split>/<target>_mae": value, ...}`` in eV-based units.
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluation needs ckpt_path=<model.pt or .ckpt>")
    apply_threads(cfg)
    output_dir = Path(cfg.paths.output_dir)
    refuse_used_folder(output_dir, cfg, resumable=False)  # a training run's results.json
    device = torch.device(cfg.get("device") or "cpu")
    model = load_model(cfg.ckpt_path, map_location=device).to(device)
    hipnn_pyg.train.resolvers.check_data_paths(cfg)
    datamodule: LightningDataModule = instantiate(cfg.data)
    split = cfg.get("split", "test")
    stages = {"test": "test", "val": "validate", "train": "fit"}
    if split not in stages:
        raise ValueError(f"split must be one of {sorted(stages)}, got '{split}'")
    datamodule.setup(stages[split])
    loader = getattr(datamodule, f"{split}_dataloader")()
    pairs = _collect(model, loader, device)
    if not pairs:
        raise ValueError("the data hold no target that the model predicts")

    results: dict[str, float] = {}
    for target, chunks in pairs.items():
        reference = torch.cat([r.reshape(-1) for r, _ in chunks])
        prediction = torch.cat([p.reshape(-1) for _, p in chunks])
        metric = ErrorMetric()
        metric.update(prediction - reference)
        values = metric.compute()
        results[f"{split}/{target}_mae"] = float(values["mae"])
        results[f"{split}/{target}_rmse"] = float(values["rmse"])
        if cfg.get("plots", True) and target in ("energy", "forces", "stress", "dipole"):
            from hipnn_pyg.train.plots import parity_plot

            base_unit = KNOWN_TARGETS[target].unit.replace("meV", "eV").replace("me·", "e·")
            parity_plot(reference.numpy(), prediction.numpy(), output_dir / f"parity_{target}.png",
                        title=target.capitalize(), unit=base_unit, center=target == "energy")
    table = format_table(results, title=f"Errors of {cfg.ckpt_path} on the {split} split")
    print(table)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "results.json", json.dumps(
        {"ckpt_path": str(cfg.ckpt_path), "split": split, "metrics": results,
         "num_structures": int(sum(r.numel() for r, _ in pairs.get("energy", [])))}, indent=2))
    if any(math.isnan(v) for v in results.values()):
        log.warning("some errors are NaN")
    return results
