r"""The ``hipnn-md`` and ``hipnn-label`` programs behind ``scripts/md.py``,
``scripts/label.py`` and :mod:`hipnn_pyg.cli` (configs ``conf/md.yaml`` and
``conf/label.yaml``)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: Exit status of a run stopped by :class:`~hipnn_pyg.md.MDBlowUpError`.
EXIT_BLOW_UP = 2


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


def _fail(program: str, error: BaseException, message: str, status: int) -> NoReturn:
    r"""Prints a one-line error and exits with ``status``. The traceback is not lost:
    it goes to the log at debug level (``hydra.verbose=true``), and
    ``HYDRA_FULL_ERROR=1`` re-raises the error instead."""
    log.debug("%s failed", program, exc_info=error)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    log.error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", message)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_md_from_config(cfg: DictConfig) -> Any:
    r"""Builds the calculator and structure from ``cfg`` and runs
    :func:`hipnn_pyg.md.run_md`; returns its :class:`~hipnn_pyg.md.MDResult`."""
    import torch

    from hipnn_pyg.ase import HIPNNCalculator
    from hipnn_pyg.md.dynamics import run_md
    from hipnn_pyg.nn.validation import check_atoms

    dtype = getattr(torch, str(cfg.dtype))
    calculator = HIPNNCalculator(str(cfg.model_path), device=cfg.device, dtype=dtype,
                                 charge=cfg.charge)
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


def md_main(cfg: DictConfig) -> None:
    r"""Runs MD; a blow-up or bad input prints a one-line error and exits non-zero
    (2 for a blow-up), keeping the files written so far (a bad start structure is
    found before any file is touched). ``HYDRA_FULL_ERROR=1`` raises instead."""
    from hipnn_pyg.md.dynamics import MDBlowUpError

    try:
        run_md_from_config(cfg)
    except MDBlowUpError as error:
        _fail("hipnn-md", error, f"MD blew up: {error} (trajectory and log so far are kept)",
              EXIT_BLOW_UP)
    except (ValueError, OSError, KeyError, TypeError) as error:
        _fail("hipnn-md", error, str(error), 1)


def label_main(cfg: DictConfig) -> None:
    r"""Runs :func:`hipnn_pyg.label.label` from ``conf/label.yaml``."""
    from hipnn_pyg.label import label

    options = OmegaConf.to_container(cfg.calculator_options, resolve=True) or {}
    try:
        summary = label(cfg.input, cfg.output, cfg.calculator, options,  # type: ignore[arg-type]
                        index=str(cfg.index), progress=cfg.progress)
    except (ValueError, OSError, ImportError, RuntimeError) as error:
        _fail("hipnn-label", error, str(error), 1)
    log.info("labelled %d new frames (%d already done, %d total) -> %s", summary.labelled,
             summary.already_done, summary.total, summary.output)
    print(f"labelled {summary.labelled} new frames ({summary.already_done} already done, "
          f"{summary.total} total) -> {summary.output}")
