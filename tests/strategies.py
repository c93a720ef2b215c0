"""Hypothesis strategies for the geometry tests: random systems from the whole space a
user can build (every pbc pattern, triclinic and small cells, positions far outside the
cell), not from the unit box."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from hypothesis import assume
from hypothesis import strategies as st

#: Elements of the random systems (those of the test models).
ELEMENTS = (1, 6, 8)


@st.composite
def cells(draw: st.DrawFn, min_length: float = 2.0, max_length: float = 9.0) -> np.ndarray:
    r"""A triclinic cell (rows are lattice vectors) with lengths in the range and
    angles that keep it far from singular."""
    lengths = [draw(st.floats(min_length, max_length)) for _ in range(3)]
    shear = np.array([[draw(st.floats(-0.6, 0.6)) for _ in range(3)] for _ in range(3)])
    cell = np.eye(3) + shear - np.diag(np.diag(shear))
    cell = cell / np.linalg.norm(cell, axis=1, keepdims=True) * np.array(lengths)[:, None]
    volume = abs(np.linalg.det(cell))
    assume(volume / np.prod(lengths) > 0.3)
    return cell


@st.composite
def systems(
    draw: st.DrawFn,
    min_atoms: int = 2,
    max_atoms: int = 13,
    frac_range: tuple[float, float] = (-1.5, 2.5),
    min_separation: float = 0.0,
) -> Atoms:
    r"""A random system: a triclinic cell of 2-9 Å, each direction periodic with
    probability ½, fractional coordinates anywhere in ``frac_range`` (outside the cell
    along periodic and non-periodic directions alike), elements from :data:`ELEMENTS`."""
    cell = draw(cells())
    pbc = [draw(st.booleans()) for _ in range(3)]
    n = draw(st.integers(min_atoms, max_atoms))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    frac = rng.uniform(*frac_range, size=(n, 3))
    numbers = rng.choice(ELEMENTS, size=n)
    atoms = Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=pbc)
    if min_separation > 0:
        assume(_closest(atoms) > min_separation)
    return atoms


def _closest(atoms: Atoms) -> float:
    from ase.neighborlist import neighbor_list

    distances = neighbor_list("d", atoms, 1.0)
    return float(distances.min()) if distances.size else np.inf
