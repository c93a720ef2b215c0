r"""Trains HIP-NN from the Hydra config in ``conf/train.yaml``.

Examples::

    python scripts/train.py experiment=rmd17_ethanol_quick
    python scripts/train.py experiment=rmd17_ethanol trainer=gpu
    python scripts/train.py -m experiment=rmd17_ethanol_quick \
        model.representation.hidden_channels=32,64
    python scripts/train.py experiment=rmd17_ethanol resume=true hydra.run.dir=<old run>
"""

from hipnn_pyg.cli import train

if __name__ == "__main__":
    train()
