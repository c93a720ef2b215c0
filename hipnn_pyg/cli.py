r"""Console entry points ``hipnn-train``, ``hipnn-eval``, ``hipnn-md``, ``hipnn-label`` and
``hipnn-active`` (see ``pyproject.toml``).

They take the same Hydra overrides as ``scripts/train.py`` and ``scripts/eval.py`` and
work from any folder. The config folder is ``$HIPNN_CONF_DIR`` if set, else the
checkout's ``conf/`` (``pip install -e .``), else the configs bundled in the installed
package (``pip install .``); see :func:`hipnn_pyg.train.resolvers.conf_dir`. Hydra's
``--config-dir <folder>`` adds a folder of extra or replacement configs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from hipnn_pyg.train.resolvers import conf_dir


def _run_hydra(task: Callable[[DictConfig], Any], config_name: str) -> None:
    r"""Runs ``task`` under Hydra with ``<conf_dir>/<config_name>.yaml``."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(task)()


def _train(cfg: DictConfig) -> float | None:
    from hipnn_pyg.train.run import train as run_train

    return run_train(cfg)


def _evaluate(cfg: DictConfig) -> None:
    from hipnn_pyg.train.run import evaluate as run_evaluate

    run_evaluate(cfg)


def _md(cfg: DictConfig) -> None:
    from hipnn_pyg.md.app import md_main

    md_main(cfg)


def _label(cfg: DictConfig) -> None:
    from hipnn_pyg.md.app import label_main

    label_main(cfg)


def train() -> None:
    r"""``hipnn-train [overrides]``: trains a model (``conf/train.yaml``)."""
    _run_hydra(_train, "train")


def evaluate() -> None:
    r"""``hipnn-eval ckpt_path=... [overrides]``: evaluates a model (``conf/eval.yaml``)."""
    _run_hydra(_evaluate, "eval")


def md() -> None:
    r"""``hipnn-md model_path=... structure=... [md=nve|nvt_langevin|npt]``: molecular
    dynamics (``conf/md.yaml``); exits 2 when the simulation blows up."""
    _run_hydra(_md, "md")


def label() -> None:
    r"""``hipnn-label input=... output=... [calculator=gfn2|pyscf|emt]``: resumable
    labelling with a reference calculator (``conf/label.yaml``)."""
    _run_hydra(_label, "label")


def _active(cfg: DictConfig) -> None:
    from hipnn_pyg.active.app import active_main

    active_main(cfg)


def active() -> None:
    r"""``hipnn-active [active=copper_emt|ethanol_gfn2] [selection=qbc|random]``: the
    active-learning loop (``conf/active.yaml``); rerun the same command to continue."""
    _run_hydra(_active, "active")
