r"""Labels structures with a reference calculator (config ``conf/label.yaml``).

Examples::

    python scripts/label.py input=../shared/data/rmd17/rmd17_ethanol_train_01.npz \
        index="::4" output=ethanol_gfn2.extxyz
    python scripts/label.py input=cells.extxyz output=cells_emt.extxyz calculator=emt
    python scripts/label.py input=mols.xyz output=mols_pbe.extxyz calculator=pyscf \
        calculator_options.xc=PBE calculator_options.basis=def2-SVP

Rerun the same command after a kill: finished frames are kept and skipped.
"""

from hipnn_pyg.cli import label

if __name__ == "__main__":
    label()
