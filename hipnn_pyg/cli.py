r"""Console entry points ``hipnn-train``, ``hipnn-eval``, ``hipnn-md``, ``hipnn-label``,
``hipnn-active`` and ``hipnn-export`` (see ``pyproject.toml``).

They take the same Hydra overrides as ``scripts/train.py`` and ``scripts/eval.py`` and
work from any folder. This is the one entry layer: the ``hydra.main`` wrappers and the
one-line errors with exit codes live here; ``scripts/*.py`` only call these functions,
and the programs behind them raise. The config folder is ``$HIPNN_CONF_DIR`` if set, else the
checkout's ``conf/`` (``pip install -e .``), else the configs bundled in the installed
package (``pip install .``); see :func:`hipnn_pyg.train.resolvers.conf_dir`. Hydra's
``--config-dir <folder>`` adds a folder of extra or replacement configs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from hipnn_pyg.train.resolvers import conf_dir

log = logging.getLogger(__name__)

#: Exit status of ``hipnn-md`` stopped by :class:`~hipnn_pyg.md.MDBlowUpError`.
EXIT_BLOW_UP = 2


def fail(program: str, error: BaseException, message: str, status: int) -> NoReturn:
    r"""Prints a one-line error and exits with ``status``. The traceback is not lost:
    it goes to the log at debug level (``hydra.verbose=true``), and
    ``HYDRA_FULL_ERROR=1`` re-raises the error instead."""
    log.debug("%s failed", program, exc_info=error)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    log.error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", message)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def _run_hydra(task: Callable[[DictConfig], Any], config_name: str) -> None:
    r"""Runs ``task`` under Hydra with ``<conf_dir>/<config_name>.yaml``."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(task)()


def _train(cfg: DictConfig) -> float | None:
    from hipnn_pyg.train.run import train as run_train

    return run_train(cfg)


def _evaluate(cfg: DictConfig) -> None:
    from hipnn_pyg.train.run import evaluate as run_evaluate

    run_evaluate(cfg)


def md_task(cfg: DictConfig) -> None:
    r"""Runs MD from ``conf/md.yaml``; a blow-up or bad input prints a one-line error
    and exits non-zero (:data:`EXIT_BLOW_UP` for a blow-up), keeping the files written
    so far (a bad start structure is found before any file is touched)."""
    from hipnn_pyg.md.app import run_md_from_config
    from hipnn_pyg.md.dynamics import MDBlowUpError

    try:
        run_md_from_config(cfg)
    except MDBlowUpError as error:
        fail("hipnn-md", error, f"MD blew up: {error} (trajectory and log so far are kept)",
             EXIT_BLOW_UP)
    except (ValueError, OSError, KeyError, TypeError) as error:
        fail("hipnn-md", error, str(error), 1)


def label_task(cfg: DictConfig) -> None:
    r"""Runs :func:`hipnn_pyg.label.label` from ``conf/label.yaml``."""
    from hipnn_pyg.label import label

    options = (OmegaConf.to_container(cfg.calculator_options, resolve=True)
               if cfg.calculator_options is not None else {})
    try:
        summary = label(cfg.input, cfg.output, cfg.calculator, options,  # type: ignore[arg-type]
                        index=str(cfg.index), progress=cfg.progress)
    except (ValueError, OSError, ImportError, RuntimeError) as error:
        fail("hipnn-label", error, str(error), 1)
    log.info("labelled %d new frames (%d already done, %d total) -> %s", summary.labelled,
             summary.already_done, summary.total, summary.output)
    print(f"labelled {summary.labelled} new frames ({summary.already_done} already done, "
          f"{summary.total} total) -> {summary.output}")


def active_task(cfg: DictConfig) -> None:
    r"""Runs :func:`~hipnn_pyg.active.loop.run_active` from ``conf/active.yaml``; a bad
    input or setting prints a one-line error and exits with status 1 (the run folder is
    kept: fix and rerun)."""
    from hipnn_pyg.active.loop import run_active

    try:
        run_active(cfg)
    except (ValueError, FileNotFoundError, ImportError) as error:
        fail("hipnn-active", error, str(error), 1)


def export_task(cfg: DictConfig) -> None:
    r"""Exports a model from ``conf/export.yaml`` (:mod:`hipnn_pyg.export`)."""
    import torch

    from hipnn_pyg.export import export_energy_forces
    from hipnn_pyg.serialization import load_model

    try:
        model = load_model(cfg.model_path)
        if cfg.dtype is not None:
            model = model.to(getattr(torch, str(cfg.dtype)))
        program = export_energy_forces(model, cfg.output)
        if cfg.aoti_output is not None:
            from hipnn_pyg.export import EnergyForces, compile_aoti, export_metadata

            compile_aoti(program, cfg.aoti_output,
                         export_metadata(model, EnergyForces(model)))
    except (ValueError, OSError, TypeError, AttributeError) as error:
        fail("hipnn-export", error, str(error), 1)
    written = [str(cfg.output)] + ([str(cfg.aoti_output)] if cfg.aoti_output else [])
    print(f"exported {cfg.model_path} -> {', '.join(written)}")


def train() -> None:
    r"""``hipnn-train [overrides]``: trains a model (``conf/train.yaml``)."""
    _run_hydra(_train, "train")


def evaluate() -> None:
    r"""``hipnn-eval ckpt_path=... [overrides]``: evaluates a model (``conf/eval.yaml``)."""
    _run_hydra(_evaluate, "eval")


def md() -> None:
    r"""``hipnn-md model_path=... structure=... [md=nve|nvt_langevin|npt]``: molecular
    dynamics (``conf/md.yaml``); exits 2 when the simulation blows up."""
    _run_hydra(md_task, "md")


def label() -> None:
    r"""``hipnn-label input=... output=... [calculator=gfn2|pyscf|emt]``: resumable
    labelling with a reference calculator (``conf/label.yaml``)."""
    _run_hydra(label_task, "label")


def active() -> None:
    r"""``hipnn-active [active=copper_emt|ethanol_gfn2] [selection=qbc|random]``: the
    active-learning loop (``conf/active.yaml``); rerun the same command to continue."""
    _run_hydra(active_task, "active")


def lammps_build() -> None:
    r"""``hipnn-lammps-build [folder]``: compiles LAMMPS's ``pair_style hipnn`` plugin
    (:mod:`hipnn_pyg.lammps`) and prints its path."""
    import argparse

    from hipnn_pyg.lammps import PluginBuildError, build_plugin

    parser = argparse.ArgumentParser(prog="hipnn-lammps-build", description=lammps_build.__doc__)
    parser.add_argument("folder", nargs="?", default=None,
                        help="where to write hipnn_lammps.so (default: the kernel cache)")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command")
    args = parser.parse_args()
    try:
        print(build_plugin(args.folder, verbose=args.verbose))
    except PluginBuildError as error:
        print(f"hipnn-lammps-build: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def export() -> None:
    r"""``hipnn-export model_path=... output=model.pt2 [dtype=float32]``: energy and
    forces as a ``torch.export`` program for MD codes (``conf/export.yaml``)."""
    _run_hydra(export_task, "export")
