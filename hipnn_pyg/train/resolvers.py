r"""Where configs, shipped data, reference data and logs live, and the OmegaConf
resolvers that ``conf/paths/default.yaml`` reads them through.

Two layouts are supported:

* a **checkout** (``pip install -e .``, or ``PYTHONPATH=<checkout>``): the checkout's
  ``conf/`` and ``data/`` are used, so edits take effect at once;
* an **installed wheel** (``pip install .``): the build copies ``conf/`` and ``data/``
  into the package as ``hipnn_pyg/conf`` and ``hipnn_pyg/shipped_data`` (``setup.py``).

Nothing except the log folder of an installed package depends on the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Where the wheel build puts the top-level conf/ and data/ folders (see setup.py).
BUNDLED_CONF_DIR = _PACKAGE_DIR / "conf"
BUNDLED_DATA_DIR = _PACKAGE_DIR / "shipped_data"


def checkout_root() -> Path | None:
    r"""The source checkout: ``$HIPNN_ROOT`` if set, else the checkout that holds this
    package (editable install or ``PYTHONPATH``), else ``None`` (an installed wheel)."""
    if os.environ.get("HIPNN_ROOT"):
        return Path(os.environ["HIPNN_ROOT"]).expanduser().resolve()
    checkout = _PACKAGE_DIR.parent
    if (checkout / "conf" / "train.yaml").is_file() and (checkout / "pyproject.toml").is_file():
        return checkout
    return None


def repo_root() -> Path:
    r"""The project folder (``paths.root_dir``): the checkout (see :func:`checkout_root`),
    else, for an installed package, the current folder, which then holds ``logs/``."""
    return checkout_root() or Path.cwd()


def conf_dir() -> Path:
    r"""The Hydra config folder: ``$HIPNN_CONF_DIR``, else the checkout's ``conf/``,
    else the configs bundled in the installed package.

    Raises:
        FileNotFoundError: if none of them exists.
    """
    if os.environ.get("HIPNN_CONF_DIR"):
        return Path(os.environ["HIPNN_CONF_DIR"]).expanduser().resolve()
    checkout = checkout_root()
    if checkout is not None and (checkout / "conf").is_dir():
        return checkout / "conf"
    if BUNDLED_CONF_DIR.is_dir():
        return BUNDLED_CONF_DIR
    tried = [str(checkout / "conf")] if checkout is not None else []
    raise FileNotFoundError(
        f"no hipnn_pyg config folder: tried {', '.join([*tried, str(BUNDLED_CONF_DIR)])}; "
        "set HIPNN_CONF_DIR=<folder with train.yaml> or HIPNN_ROOT=<checkout>"
    )


def shipped_data_dir() -> Path:
    r"""The small data sets shipped with hipnn_pyg (``paths.repo_data_dir``): the
    checkout's ``data/``, else the copy bundled in the installed package."""
    checkout = checkout_root()
    if checkout is not None and (checkout / "data").is_dir():
        return checkout / "data"
    return BUNDLED_DATA_DIR


def reference_data_dir() -> Path:
    r"""The reference data folder (``paths.data_dir``: rMD17, QM9, ...):
    ``$HIPNN_DATA_DIR``, else ``../shared/data`` beside the checkout; never the current
    folder.

    Only called when a config reads ``paths.data_dir``, so a run on shipped data works
    without it.

    Raises:
        FileNotFoundError: naming the folder tried and how to point elsewhere.
    """
    how = "set HIPNN_DATA_DIR=<folder> or override paths.data_dir=<folder>"
    if os.environ.get("HIPNN_DATA_DIR"):
        folder = Path(os.environ["HIPNN_DATA_DIR"]).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"HIPNN_DATA_DIR={folder} is not a folder; {how}")
        return folder
    checkout = checkout_root()
    if checkout is None:
        raise FileNotFoundError(
            "this config needs reference data, but hipnn_pyg is installed outside a "
            f"checkout, so there is no default folder (../shared/data beside it); {how}"
        )
    folder = (checkout.parent / "shared" / "data").resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"this config needs reference data, looked for it in {folder} (../shared/data "
            f"beside the checkout {checkout}), which does not exist; {how}"
        )
    return folder


def register_resolvers() -> None:
    r"""Registers ``${hipnn_root:}``, ``${hipnn_shipped_data:}`` and ``${hipnn_data_dir:}``
    (paths as strings, see the functions above); idempotent."""
    resolvers = {
        "hipnn_root": repo_root,
        "hipnn_shipped_data": shipped_data_dir,
        "hipnn_data_dir": reference_data_dir,
    }
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, lambda f=function: str(f()))


register_resolvers()
