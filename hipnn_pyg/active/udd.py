r"""Uncertainty-driven dynamics (UDD; Kulichenko et al., Nat. Comput. Sci. 3, 230, 2023):
molecular dynamics on the committee's mean energy plus a bias that lowers the energy
where the committee disagrees, so trajectories climb into uncertain regions (high
temperature's reach without its cost of melting everything else).

The bias depends on the variance of the members' energies,

.. math::
    E_\mathrm{bias} = A \left[\exp\!\left(-\frac{\sigma_E^2}{N B^2}\right) - 1\right],
    \qquad \sigma_E^2 = \frac1K \sum_k (E_k - o_k - \bar E)^2,

with each member's constant offset :math:`o_k` removed first (the offset-free measure
of :mod:`~hipnn_pyg.active.committee`; a constant offset would bias every structure
alike), :math:`N` atoms, height :math:`A` (eV) and width :math:`B` (eV/√atom). Its
force is :math:`-\nabla E_\mathrm{bias} = \frac{A}{N B^2} e^{-\sigma_E^2/(N B^2)}\,
\nabla\sigma_E^2`, where :math:`\nabla\sigma_E^2 = -\frac2K \sum_k (E_k - o_k - \bar E)
(F_k - \bar F)`.

Normalisation: the paper (and apax) write :math:`\sigma^2 = \tfrac12 \sum_k (E_k -
\bar E)^2` and divide by :math:`N_M N_A B^2` (members and atoms); the population
variance here divided by :math:`N B^2` makes the exponent twice theirs at equal
:math:`B`, so the paper's width :math:`B` is ``width`` :math:`= \sqrt2 B` here. By
default :math:`B` is a multiple of the committee's median offset-free ρ on its training
set, which sidesteps the convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from hipnn_pyg.active.committee import Committee
from hipnn_pyg.active.explore import LangevinExplorer


def uncertainty_bias(energies: np.ndarray, forces: np.ndarray, num_atoms: int,
                     height: float, width: float) -> tuple[float, np.ndarray]:
    r"""The UDD bias energy (eV) and its forces ``[num_atoms, 3]`` (eV/Å) from the
    members' offset-free energies ``[K]`` and forces ``[K, num_atoms, 3]`` (module
    docs)."""
    energies = np.asarray(energies, dtype=np.float64)
    forces = np.asarray(forces, dtype=np.float64)
    deviation = energies - energies.mean()
    variance = float(np.mean(deviation**2))
    scale = num_atoms * width**2
    damping = math.exp(-variance / scale)
    variance_gradient = -2.0 * np.einsum("k,kia->ia", deviation,
                                         forces - forces.mean(axis=0)) / len(energies)
    return height * (damping - 1.0), height / scale * damping * variance_gradient


class UncertaintyBiasedCommittee(Calculator):
    r"""The committee's mean energy and forces plus the UDD bias (module docs), as an
    ASE calculator for the explorer's dynamics.

    Args:
        committee (Committee): The committee (its offsets from
            :meth:`~hipnn_pyg.active.committee.Committee.fit_offsets`).
        height (float): :math:`A`, eV.
        width (float): :math:`B`, eV/√atom.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, committee: Committee, height: float, width: float) -> None:
        super().__init__()
        if height < 0 or width <= 0:
            raise ValueError(f"UDD needs height >= 0 and width > 0, got {height}, {width}")
        self.committee, self.height, self.width = committee, float(height), float(width)

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        self.committee.calculate(self.atoms, ["energy", "forces"])
        results = self.committee.results
        energy, forces = uncertainty_bias(
            np.asarray(results["energies_all"]) - self.committee.offsets(self.atoms.numbers),
            results["forces_all"], len(self.atoms), self.height, self.width)
        self.results = {"energy": float(results["energy"]) + energy,
                        "forces": np.asarray(results["forces"]) + forces,
                        "bias_energy": energy}


class UncertaintyDrivenExplorer(LangevinExplorer):
    r"""Langevin MD on the committee plus the UDD bias (module docs); candidates,
    stopping and cutting as :class:`~hipnn_pyg.active.explore.LangevinExplorer`, their
    verdict the committee's own (unbiased).

    Args:
        height (float): Bias height :math:`A`, eV. (default: :obj:`0.5`)
        width_relative (float): Bias width :math:`B` as a multiple of the committee's
            median offset-free ρ on its training set (so the bias acts where the
            committee is more uncertain than usual). (default: :obj:`2.0`)
        width (float, optional): An absolute width :math:`B`, eV/√atom, instead.
            (default: :obj:`None`)
        **kwargs: The arguments of
            :class:`~hipnn_pyg.active.explore.LangevinExplorer`.
    """

    name = "udd"

    def __init__(self, height: float = 0.5, width_relative: float = 2.0,
                 width: float | None = None, temperatures_K: Sequence[float] = (300.0,),
                 **kwargs: object) -> None:
        super().__init__(temperatures_K=temperatures_K, **kwargs)  # type: ignore[arg-type]
        self.height, self.width_relative, self.width = float(height), width_relative, width

    def bias_width(self, committee: Committee) -> float:
        r""":math:`B` for ``committee`` (eV/√atom)."""
        if self.width is not None:
            return float(self.width)
        median = getattr(committee, "training_disagreement", {}).get("energy_centred")
        if median is None or not median > 0:
            raise ValueError("UDD with a relative width needs the committee's training-set "
                             "disagreement (Committee.fit_offsets); give width instead")
        return float(self.width_relative) * float(median)

    def dynamics_calculator(self, committee: Committee) -> Calculator:
        return UncertaintyBiasedCommittee(committee, self.height, self.bias_width(committee))
