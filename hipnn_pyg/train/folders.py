r"""A training run never starts in a folder that holds another run's results.

Run folders are named to the microsecond (``conf/hydra/default.yaml``), so only a folder
given by hand (``hydra.run.dir=...``, a reused ``hydra.sweep.dir``) can already hold an
earlier run: its ``model.pt``, ``results.json`` and checkpoints would be overwritten by
the new run. :func:`refuse_used_folder` names them and stops, unless the run continues
that folder's own run (``resume=true``, or ``resume=``/``ckpt_path=`` pointing into its
``checkpoints/``). A checkpoint folder set outside the run folder
(``callbacks.model_checkpoint.dirpath=...``) that holds checkpoints is refused in the
same way, unless ``ckpt_path=`` continues from one of them. :class:`RefuseUsedFolder`
checks before Hydra writes the run's ``.hydra/`` config files (``conf/train.yaml`` and
``conf/eval.yaml`` register it), so those of the earlier run are kept too;
:func:`hipnn_pyg.train.run.train` and :func:`~hipnn_pyg.train.run.evaluate` check again
for configs composed without Hydra's launcher. ``hipnn-eval`` never continues a run: it
refuses any used folder (it would overwrite ``results.json``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: a finished run's files, which no new run may overwrite
FINISHED = ("model.pt", "results.json")


def used_files(folder: Path) -> list[str]:
    r"""The trained files of an earlier run in ``folder``, relative to it."""
    found = [name for name in FINISHED if (folder / name).exists()]
    return found + [f"checkpoints/{path.name}"
                    for path in sorted((folder / "checkpoints").glob("*.ckpt"))]


def resume_requested(cfg: DictConfig) -> bool:
    r"""Whether ``cfg`` says ``resume=true``: continue this run folder's own run."""
    return str(cfg.get("resume")).lower() == "true"


def named_checkpoint(cfg: DictConfig) -> tuple[str, Path] | None:
    r"""The checkpoint file that ``cfg`` names, with the setting that names it:
    ``ckpt_path=`` or ``resume=`` a ``.ckpt`` file or a run folder (meaning its
    ``checkpoints/last.ckpt``); :obj:`None` for ``resume=true``/``false`` or neither
    (``ckpt_path`` wins when both are given). Whether the file exists is the caller's
    question.

    Raises:
        ValueError: ``resume`` or ``ckpt_path`` is a number (``resume=0``, as Hydra
            reads it) or empty (``resume=$UNSET_VARIABLE``, which would read as the
            working directory), which names neither a switch nor a checkpoint.
    """
    for key in ("ckpt_path", "resume"):
        value = cfg.get(key)
        wanted = "give a .ckpt file or a run folder" + (", or true/false"
                                                          if key == "resume" else "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"{key}={value}: {wanted}")
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{key}={value!r} is empty: {wanted}")
    if cfg.get("ckpt_path"):
        key, given = "ckpt_path", cfg.ckpt_path
    else:
        key, given = "resume", cfg.get("resume")
        if given is None or str(given).lower() in ("true", "false"):
            return None
    path = as_lightning_reads(given)
    return f"{key}={given}", path / "checkpoints" / "last.ckpt" if path.is_dir() else path


def as_lightning_reads(setting: Any) -> Path:
    r"""A path setting as Lightning opens it: ``~`` expanded, nothing else resolved."""
    return Path(os.path.expanduser(str(setting)))


def _names_checkpoint_in(cfg: DictConfig, checkpoints: Path) -> bool:
    r"""Whether ``cfg`` continues from a checkpoint file in the folder ``checkpoints``
    (resolved)."""
    named = named_checkpoint(cfg)
    return named is not None and named[1].absolute().parent.resolve() == checkpoints


def is_rank_zero() -> bool:
    r"""Whether this is the process that owns the run folder: DDP's other ranks are
    started by Lightning in rank 0's folder."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def _continues_folder(cfg: DictConfig, folder: Path, found: list[str]) -> bool:
    r"""Whether the run ``cfg`` describes continues the run already in ``folder``."""
    if not cfg.get("train", True):
        return False  # a test-only run would write its own model.pt over the trained one
    checkpoints = (folder / "checkpoints").resolve()
    if named_checkpoint(cfg) is not None:
        return _names_checkpoint_in(cfg, checkpoints)
    if resume_requested(cfg):
        # its last.ckpt, or an unfinished run killed before writing one (it starts again)
        return (checkpoints / "last.ckpt").is_file() or not any(
            name in FINISHED for name in found)
    return False


def refuse_used_folder(folder: Path, cfg: DictConfig, resumable: bool = True) -> None:
    r"""Raises ``FileExistsError`` if ``folder`` holds another run's trained files that
    the run ``cfg`` describes would overwrite (see the module docs).

    Args:
        folder: the run's output folder.
        cfg: the run's config (``train``, ``resume``, ``ckpt_path``).
        resumable: ``False`` for runs that never continue another (``hipnn-eval``,
            whose ``ckpt_path`` is the model it reads).
    """
    found = used_files(folder)
    if found and not (resumable and _continues_folder(cfg, folder, found)):
        raise FileExistsError(
            f"output folder {folder} already holds another run's {', '.join(found)}, "
            "which this run would overwrite: give a new folder (hydra.run.dir=...), "
            "resume=true to continue that run, or move its files away")
    _refuse_used_checkpoint_dir(folder, cfg, resumable)


def _refuse_used_checkpoint_dir(folder: Path, cfg: DictConfig, resumable: bool) -> None:
    # callbacks.model_checkpoint.dirpath outside the run folder: Lightning only warns
    # before writing its last.ckpt and best checkpoint over an earlier run's. The default,
    # ${paths.output_dir}/checkpoints, resolves only once Hydra has named the run folder
    # (not yet in RefuseUsedFolder): None then, and the run folder's own check covers it.
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None,
                               throw_on_resolution_failure=False)
    if not dirpath or not cfg.get("train", True):
        return
    checkpoints = as_lightning_reads(dirpath).resolve()
    if checkpoints == (folder / "checkpoints").resolve():
        return  # the run folder's own, checked above
    found = sorted(path.name for path in checkpoints.glob("*.ckpt"))
    if not found or (resumable and _names_checkpoint_in(cfg, checkpoints)):
        return
    latest = "last.ckpt" if "last.ckpt" in found else max(
        found, key=lambda name: (checkpoints / name).stat().st_mtime)
    raise FileExistsError(
        f"callbacks.model_checkpoint.dirpath={dirpath} already holds another run's "
        f"{', '.join(found)}, which this run would overwrite: give an empty folder, "
        f"ckpt_path={checkpoints / latest} to continue that run, or move its files away")


class RefuseUsedFolder(Callback):
    r"""Hydra callback: :func:`refuse_used_folder` before the run's folder is written;
    exits with status 1 if it refuses.

    Args:
        program: the command named in the message.
        resumable: as :func:`refuse_used_folder`'s.
    """

    def __init__(self, program: str = "hipnn-train", resumable: bool = True) -> None:
        self.program = program
        self.resumable = resumable

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_rank_zero():
            self._exit_if_used([Path(str(config.hydra.run.dir))], config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # every job folder of a reused sweep folder (the jobs' own names are known only
        # when each starts, after Hydra has written its config there)
        sweep = Path(str(config.hydra.sweep.dir))
        self._exit_if_used(sorted(path for path in sweep.glob("*") if path.is_dir()), config,
                           sweep)

    def _exit_if_used(self, folders: list[Path], config: DictConfig,
                      sweep: Path | None = None) -> None:
        try:
            for folder in folders:
                refuse_used_folder(folder, config, self.resumable)
            if sweep is not None:  # a new sweep has no job folders yet
                _refuse_used_checkpoint_dir(sweep, config, self.resumable)
        except (FileExistsError, ValueError) as error:  # a used folder, resume=0
            # Hydra turns a callback's exception into a warning and runs the job: exit
            # instead (logging is not set up yet, so the message goes to stderr)
            print(f"{self.program}: error: {error}", file=sys.stderr)
            raise SystemExit(1) from error
