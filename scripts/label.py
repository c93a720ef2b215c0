r"""Labels structures with a reference calculator (config ``conf/label.yaml``).

Examples::

    python scripts/label.py input=../shared/data/rmd17/rmd17_ethanol_train_01.npz \
        index="::4" output=ethanol_gfn2.extxyz
    python scripts/label.py input=cells.extxyz output=cells_emt.extxyz calculator=emt
    python scripts/label.py input=mols.xyz output=mols_pbe.extxyz calculator=pyscf \
        calculator_options.xc=PBE calculator_options.basis=def2-SVP

Rerun the same command after a kill: finished frames are kept and skipped.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hipnn_pyg.md.app import label_main


@hydra.main(version_base="1.3", config_path="../conf", config_name="label")
def main(cfg: DictConfig) -> None:
    label_main(cfg)


if __name__ == "__main__":
    main()
