r"""Build step that puts the top-level ``conf/`` and ``data/`` into the wheel.

``conf/`` stays the single source of the Hydra configs (lightning-hydra-template layout)
and ``data/`` holds the small shipped data sets. A wheel build copies them into the
package as ``hipnn_pyg/conf`` and ``hipnn_pyg/shipped_data``, where
``hipnn_pyg.train.resolvers`` finds them when there is no checkout. An editable install
(``pip install -e .``) copies nothing: it reads the checkout's folders, so edits take
effect at once. Everything else is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# top-level folder -> folder inside the installed package
BUNDLED = {"conf": "conf", "data": "shipped_data"}


def _skip(folder: str, names: list[str]) -> set[str]:
    r"""Leaves out caches and the git-ignored, machine-specific ``conf/local/*.yaml``."""
    skipped = {name for name in names if name == "__pycache__" or name.endswith(".pyc")}
    if Path(folder).name == "local":
        skipped |= {name for name in names if name.endswith(".yaml")}
    return skipped


class BuildPyWithConfigs(build_py):
    r"""``build_py`` that also copies :data:`BUNDLED` into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source, target in BUNDLED.items():
            destination = Path(self.build_lib) / "hipnn_pyg" / target
            # a fresh copy: no file deleted from conf/ or data/ survives in build/
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(ROOT / source, destination, ignore=_skip)


setup(cmdclass={"build_py": BuildPyWithConfigs})
