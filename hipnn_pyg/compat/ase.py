r"""ASE across the versions this package allows (``ase>=3.23``)."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    r"""Maxwell-Boltzmann momenta at ``temperature_K``: ASE 3.29's
    ``thermalize_momenta`` (the same draws as the ``MaxwellBoltzmannDistribution`` it
    deprecates), or that function on older ASE."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)
