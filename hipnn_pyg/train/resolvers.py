r"""Where configs, shipped data, reference data and logs live, and the OmegaConf
resolvers that ``conf/paths/default.yaml`` reads them through.

Two layouts are supported:

* a **checkout** (``pip install -e .``, or ``PYTHONPATH=<checkout>``): the checkout's
  ``conf/`` and ``data/`` are used, so edits take effect at once;
* an **installed wheel** (``pip install .``): the build copies ``conf/`` and ``data/``
  into the package as ``hipnn_pyg/conf`` and ``hipnn_pyg/shipped_data`` (``setup.py``).

Nothing except the log folder of an installed package depends on the current folder.
:func:`check_data_paths` turns a missing data file into an error that says where it
was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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


# paths.data_dir of an installed package without $HIPNN_DATA_DIR: no folder of that
# name exists, so nothing is read from an unintended place and any error names the cause.
DATA_DIR_UNSET = "/HIPNN_DATA_DIR-not-set"
_HOW_TO_SET = "set HIPNN_DATA_DIR=<folder> or override paths.data_dir=<folder>"


def reference_data_dir() -> Path:
    r"""The reference data folder (``paths.data_dir``: rMD17, QM9, ...):
    ``$HIPNN_DATA_DIR``, else ``../shared/data`` beside the checkout, else (installed
    package) the placeholder :data:`DATA_DIR_UNSET`; never the current folder.

    The folder need not exist: a run on shipped data does not read it, and
    :func:`check_data_paths` says what was tried when a run needs a missing file.
    """
    if os.environ.get("HIPNN_DATA_DIR"):
        return Path(os.environ["HIPNN_DATA_DIR"]).expanduser().resolve()
    checkout = checkout_root()
    if checkout is None:
        return Path(DATA_DIR_UNSET)
    return (checkout.parent / "shared" / "data").resolve()


def _data_dir_origin() -> str:
    r"""How :func:`reference_data_dir` chose its folder, for error messages."""
    if os.environ.get("HIPNN_DATA_DIR"):
        return "$HIPNN_DATA_DIR"
    checkout = checkout_root()
    if checkout is None:
        return "hipnn_pyg is installed outside a checkout and $HIPNN_DATA_DIR is not set"
    return f"the default: ../shared/data beside the checkout {checkout}"


def check_data_paths(cfg: DictConfig) -> None:
    r"""Checks that ``cfg.data.path`` and ``cfg.data.test_path`` (where given) exist.

    Args:
        cfg: a composed config (``train.yaml``, ``eval.yaml``); one without ``data`` passes.

    Raises:
        FileNotFoundError: naming the key and file, and for a file under
            ``paths.data_dir`` the folder tried, why, and how to point elsewhere.
    """
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return
    for key in ("path", "test_path"):
        if key not in data or OmegaConf.is_missing(data, key) or data[key] is None:
            continue
        path = Path(str(data[key])).expanduser()
        if path.exists():
            continue
        message = f"data.{key}={path} not found"
        data_dir = Path(str(cfg.paths.data_dir)) if "paths" in cfg else None
        if data_dir is not None and path.is_relative_to(data_dir):
            default = data_dir == reference_data_dir()
            origin = _data_dir_origin() if default else "set in the config or on the command line"
            message += (f"; reference data folder paths.data_dir={data_dir} ({origin}); "
                        f"{_HOW_TO_SET}")
        raise FileNotFoundError(message)


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
