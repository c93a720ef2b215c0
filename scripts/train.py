r"""Trains HIP-NN from the Hydra config in ``conf/train.yaml``.

Examples::

    python scripts/train.py experiment=rmd17_ethanol_quick
    python scripts/train.py experiment=rmd17_ethanol trainer=gpu
    python scripts/train.py -m experiment=rmd17_ethanol_quick \
        model.representation.hidden_channels=32,64
    python scripts/train.py experiment=rmd17_ethanol resume=true hydra.run.dir=<old run>
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hipnn_pyg.train.run import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
