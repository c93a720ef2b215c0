r"""The ``hipnn-md`` program behind :func:`hipnn_pyg.cli.md` (config ``conf/md.yaml``):
the structure and calculator a config names, and the run."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

def read_structure(path: str, index: int | str = -1) -> Any:
    r"""One frame of a structure file, with errors that name the file."""
    from pathlib import Path

    import ase.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        atoms = ase.io.read(path, index=index)
    except Exception as error:  # ASE raises many types for unreadable files
        raise ValueError(f"cannot read structure file {path} (frame {index}): "
                         f"{type(error).__name__}: {error}") from error
    if isinstance(atoms, list):
        raise ValueError(f"structure_index={index} selects {len(atoms)} frames of {path}; "
                         "give one frame")
    return atoms


def run_md_from_config(cfg: DictConfig) -> Any:
    r"""Builds the calculator and structure from ``cfg`` and runs
    :func:`hipnn_pyg.md.run_md`; returns its :class:`~hipnn_pyg.md.MDResult`."""
    import torch

    from hipnn_pyg.calculator import HIPNNCalculator
    from hipnn_pyg.md.dynamics import run_md
    from hipnn_pyg.nn.checks import check_atoms

    dtype = getattr(torch, str(cfg.dtype))
    calculator = HIPNNCalculator(str(cfg.model_path), device=cfg.device, dtype=dtype,
                                 charge=cfg.charge,
                                 head=cfg.get("head"))
    atoms = None
    if not cfg.restart:
        atoms = read_structure(str(cfg.structure), cfg.structure_index)
        check_atoms(atoms, calculator.models, name=f"{cfg.structure} (frame "
                    f"{cfg.structure_index})")
    options = OmegaConf.to_container(cfg.md, resolve=True)
    assert isinstance(options, dict)
    ensemble = options.pop("ensemble")
    result = run_md(
        atoms,  # type: ignore[arg-type]
        calculator,
        ensemble=ensemble,
        steps=cfg.steps,
        timestep_fs=cfg.timestep_fs,
        temperature_K=cfg.temperature_K,
        trajectory=cfg.trajectory,
        log=cfg.log,
        traj_interval=cfg.traj_interval,
        log_interval=cfg.log_interval,
        restart=cfg.restart,
        initial_temperature_K=cfg.initial_temperature_K,
        seed=cfg.seed,
        max_temperature_K=cfg.max_temperature_K,
        progress=cfg.progress,
        **options,
    )
    log.info("MD %s: %d steps done (last step %d); trajectory %s, log %s", ensemble,
             result.steps_done, result.last_step, result.trajectory, result.log)
    return result
