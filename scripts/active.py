r"""Active learning: ``python scripts/active.py [active=copper_emt] [selection=random] ...``.

The same program as the ``hipnn-active`` console script (``conf/active.yaml``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hipnn_pyg.active.app import active_main


@hydra.main(version_base="1.3", config_path="../conf", config_name="active")
def main(cfg: DictConfig) -> None:
    active_main(cfg)


if __name__ == "__main__":
    main()
