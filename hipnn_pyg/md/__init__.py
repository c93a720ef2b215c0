r"""Simulations with HIP-NN potentials: MD (NVE, Langevin NVT, NPT), IR spectra and
densities. See :func:`run_md`, :mod:`hipnn_pyg.md.ir` and :mod:`hipnn_pyg.md.density`."""

from hipnn_pyg.md.density import BlockAverage, block_average, density_g_cm3
from hipnn_pyg.md.dynamics import MDBlowUpError, MDResult, last_frame, make_dynamics, run_md
from hipnn_pyg.md.ir import HarmonicIR, Spectrum, harmonic_ir, ir_from_dipoles

__all__ = [
    "run_md",
    "make_dynamics",
    "last_frame",
    "MDResult",
    "MDBlowUpError",
    "density_g_cm3",
    "block_average",
    "BlockAverage",
    "ir_from_dipoles",
    "harmonic_ir",
    "Spectrum",
    "HarmonicIR",
]
