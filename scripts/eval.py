r"""Evaluates a trained model: MAE/RMSE per target and parity plots.

Examples::

    python scripts/eval.py ckpt_path=logs/train/runs/<run>/model.pt
    python scripts/eval.py ckpt_path=<run>/checkpoints/last.ckpt data=rmd17 split=test
"""

from hipnn_pyg.cli import evaluate

if __name__ == "__main__":
    evaluate()
