r"""Evaluates a trained model: MAE/RMSE per target and parity plots.

Examples::

    python scripts/eval.py ckpt_path=logs/train/runs/<run>/model.pt
    python scripts/eval.py ckpt_path=<run>/checkpoints/last.ckpt data=rmd17 split=test
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hipnn_pyg.train.run import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
