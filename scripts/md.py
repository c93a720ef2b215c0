r"""Molecular dynamics with a trained HIP-NN (config ``conf/md.yaml``, group ``conf/md/``).

Examples::

    python scripts/md.py model_path=model.pt structure=data/ethanol_gfn2/ethanol_gfn2.extxyz
    python scripts/md.py md=nvt_langevin model_path=model.pt structure=start.xyz steps=20000
    python scripts/md.py md=npt model_path=water.pt structure=water.extxyz md.barostat=berendsen
    python scripts/md.py model_path=model.pt restart=true trajectory=<old>/trajectory.extxyz \
        log=<old>/md_log.csv steps=40000

Exits with status 2 (files kept) when the simulation blows up.
"""

from hipnn_pyg.cli import md

if __name__ == "__main__":
    md()
