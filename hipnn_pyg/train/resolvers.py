r"""OmegaConf resolvers used by ``conf/`` and where the config folder lives."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def repo_root() -> Path:
    r"""The project root: ``$HIPNN_ROOT``, else the checkout that holds this package
    (editable install), else the current directory."""
    if "HIPNN_ROOT" in os.environ:
        return Path(os.environ["HIPNN_ROOT"]).resolve()
    checkout = _PACKAGE_DIR.parent
    if (checkout / "conf" / "train.yaml").is_file():
        return checkout
    return Path.cwd()


def conf_dir() -> Path:
    r"""The Hydra config folder: ``$HIPNN_CONF_DIR``, else ``<root>/conf``.

    With ``pip install -e .`` the checkout's ``conf/`` is found through the package
    location; a non-editable install needs ``HIPNN_CONF_DIR`` (or ``HIPNN_ROOT``), or a
    run from the checkout's root.
    """
    if "HIPNN_CONF_DIR" in os.environ:
        return Path(os.environ["HIPNN_CONF_DIR"]).resolve()
    return repo_root() / "conf"


def register_resolvers() -> None:
    r"""Registers ``${hipnn_root:}`` (the project root as a string); idempotent."""
    if not OmegaConf.has_resolver("hipnn_root"):
        OmegaConf.register_new_resolver("hipnn_root", lambda: str(repo_root()))


register_resolvers()
