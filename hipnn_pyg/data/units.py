r"""Unit conversions into the package's one unit system: eV, Å, e.

All loaders return energies in eV, lengths in Å, forces in eV/Å, charges in e,
dipoles in e·Å, quadrupoles in e·Å² and stress in eV/Å³ (ASE sign convention:
:math:`\sigma = \frac{1}{V}\,\partial E/\partial\varepsilon`, negative under compression).
The factors are CODATA 2018 values.
"""

from __future__ import annotations

#: Hartree in eV.
HARTREE_TO_EV: float = 27.211386245988
#: kcal/mol in eV (43.364 meV).
KCAL_MOL_TO_EV: float = 0.0433641043
#: Bohr radius in Å.
BOHR_TO_ANGSTROM: float = 0.529177210903
#: Debye in e·Å.
DEBYE_TO_E_ANGSTROM: float = 0.20819433
#: 1 eV/Å³ in GPa.
EV_PER_A3_IN_GPA: float = 160.21766208
#: 1 kbar in eV/Å³ (1 kbar = 0.1 GPa).
KBAR_TO_EV_PER_A3: float = 0.1 / EV_PER_A3_IN_GPA
