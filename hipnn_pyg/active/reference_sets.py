r"""Labelled reference sets that probe where an explorer goes: thermostatted MD with the
reference calculator over a temperature ladder, and relaxed torsion scans about a bond.
:mod:`scripts/bench_active.py` judges active learning on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixInternals
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.optimize import BFGS

from hipnn_pyg.active.structures import plain_copy
from hipnn_pyg.compat.ase import thermalize
from hipnn_pyg.md.dynamics import make_dynamics


def labelled(atoms: Atoms, calculator: Calculator, **info: object) -> Atoms:
    r"""A plain copy of ``atoms`` carrying ``calculator``'s energy and forces (and
    ``info``)."""
    work = plain_copy(atoms)
    work.constraints = []
    work.calc = calculator
    energy, forces = work.get_potential_energy(), work.get_forces()
    frame = plain_copy(atoms)
    frame.info.update(info)
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    return frame


def bonds(atoms: Atoms) -> set[tuple[int, int]]:
    r"""Covalent bonds ``(i, j)``, ``i < j``: atoms closer than 1.2 times the sum of
    their covalent radii (ASE's natural cutoffs; a C-H bond is 1.09 Å, the radii sum
    1.07 Å)."""
    first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    return {(int(i), int(j)) for i, j in zip(first, second, strict=True) if i < j}


def md_frames(start: Atoms, calculator: Calculator, temperature_K: float, frames: int,
              interval: int, equilibration: int, seed: int, timestep_fs: float = 0.5,
              friction_per_fs: float = 0.01) -> list[Atoms]:
    r"""``frames`` labelled frames ``interval`` steps apart from a Langevin trajectory at
    ``temperature_K`` after ``equilibration`` steps. Frames whose bonds differ from the
    start's (a broken or new bond) are left out."""
    atoms = plain_copy(start)
    atoms.info.clear()
    rng = np.random.default_rng(seed)
    thermalize(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.calc = calculator
    dynamics = make_dynamics(atoms, "nvt_langevin", timestep_fs, temperature_K,
                             friction_per_fs=friction_per_fs, seed=seed)
    reference = bonds(atoms)
    if equilibration > 0:
        dynamics.run(equilibration)
    out = []
    for k in range(frames):
        dynamics.run(interval)
        if bonds(atoms) == reference:
            out.append(labelled(atoms, calculator, temperature_K=float(temperature_K),
                                md_step=equilibration + (k + 1) * interval))
    return out


def rotor(atoms: Atoms, axis: tuple[int, int]) -> list[int]:
    r"""The atoms that turn with ``axis[1]`` when the molecule rotates about the bond
    ``axis``: those connected to ``axis[1]`` once that bond is cut."""
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(atoms))}
    for i, j in bonds(atoms):
        if {i, j} != set(axis):
            neighbours[i].add(j)
            neighbours[j].add(i)
    seen, stack = {axis[1]}, [axis[1]]
    while stack:
        for j in neighbours[stack.pop()] - seen:
            seen.add(j)
            stack.append(j)
    if axis[0] in seen:
        raise ValueError(f"bond {axis} is in a ring: no rotor")
    return sorted(seen - {axis[1]})


def torsion_scan(minimum: Atoms, calculator: Calculator, dihedral: Sequence[int],
                 angles_deg: Sequence[float], fmax: float = 0.05,
                 max_steps: int = 300) -> list[Atoms]:
    r"""A relaxed torsion scan: for each angle, the rotor of the bond
    ``dihedral[1]-dihedral[2]`` is turned to set the dihedral, and every other degree
    of freedom relaxed with the dihedral fixed; returns the labelled frames (``info``:
    ``dihedral_deg``)."""
    a, b, c, d = (int(i) for i in dihedral)
    moving = np.zeros(len(minimum), dtype=bool)
    moving[rotor(minimum, (b, c))] = True
    frames = []
    for angle in angles_deg:
        atoms = plain_copy(minimum)
        atoms.info.clear()
        atoms.set_dihedral(a, b, c, d, float(angle), mask=moving)
        atoms.set_constraint(FixInternals(dihedrals_deg=[[float(angle), [a, b, c, d]]]))
        atoms.calc = calculator
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=max_steps)
        frames.append(labelled(atoms, calculator, dihedral_deg=float(angle)))
    return frames
