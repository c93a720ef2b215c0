r"""Exports a trained HIP-NN's energy and forces for production MD (config
``conf/export.yaml``; see :mod:`hipnn_pyg.export`).

Examples::

    python scripts/export.py model_path=model.pt output=model.pt2
    python scripts/export.py model_path=logs/train/runs/<run>/checkpoints/last.ckpt \
        output=model.pt2 dtype=float32 aoti_output=model_aoti.pt2
"""

from hipnn_pyg.cli import export

if __name__ == "__main__":
    export()
