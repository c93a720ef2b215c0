r"""Console entry points ``hipnn-train``, ``hipnn-eval``, ``hipnn-md`` and ``hipnn-label``
(see ``pyproject.toml``).

They take the same Hydra overrides as ``scripts/train.py`` and ``scripts/eval.py``.
The config folder is ``$HIPNN_CONF_DIR`` if set, else the ``conf/`` of the checkout
that holds the package (``pip install -e .``; a non-editable install needs
``HIPNN_CONF_DIR``, ``HIPNN_ROOT`` or Hydra's ``--config-dir``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hipnn_pyg.train.resolvers import conf_dir


def _train(cfg: DictConfig) -> float | None:
    from hipnn_pyg.train.run import train as run_train

    return run_train(cfg)


def _evaluate(cfg: DictConfig) -> None:
    from hipnn_pyg.train.run import evaluate as run_evaluate

    run_evaluate(cfg)


def train() -> None:
    r"""``hipnn-train [overrides]``: trains a model (``conf/train.yaml``)."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")(_train)()


def evaluate() -> None:
    r"""``hipnn-eval ckpt_path=... [overrides]``: evaluates a model (``conf/eval.yaml``)."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="eval")(
        _evaluate
    )()


def _md(cfg: DictConfig) -> None:
    from hipnn_pyg.md.app import md_main

    md_main(cfg)


def _label(cfg: DictConfig) -> None:
    from hipnn_pyg.md.app import label_main

    label_main(cfg)


def md() -> None:
    r"""``hipnn-md model_path=... structure=... [md=nve|nvt_langevin|npt]``: molecular
    dynamics (``conf/md.yaml``); exits 2 when the simulation blows up."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="md")(_md)()


def label() -> None:
    r"""``hipnn-label input=... output=... [calculator=gfn2|pyscf|emt]``: resumable
    labelling with a reference calculator (``conf/label.yaml``)."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="label")(_label)()


def _active(cfg: DictConfig) -> None:
    from hipnn_pyg.active.app import active_main

    active_main(cfg)


def active() -> None:
    r"""``hipnn-active [active=copper_emt|ethanol_gfn2] [selection=qbc|random]``: the
    active-learning loop (``conf/active.yaml``); rerun the same command to continue."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="active")(
        _active
    )()
