r"""Structures for the active-learning loop: where the start data come from, frame
identities, species checks and atomic extxyz writes.

The ``initial`` node of an ``active/`` config builds its structures with one of the
functions here (``_target_: hipnn_pyg.active.structures.read`` or ``rattled_bulk``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from hipnn_pyg.atomic import atomic_write
from hipnn_pyg.extxyz import PathLike, frame_text
from hipnn_pyg.label import read_structures
from hipnn_pyg.nn.checks import check_atoms

log = logging.getLogger(__name__)

#: ``info`` key of a frame's identity in the run (unique across rounds, e.g. ``md:...``).
ID_KEY = "active_id"


def read(path: PathLike, index: str = ":") -> list[Atoms]:
    r"""Structures from a file (any format :func:`ase.io.read` knows, or an
    rMD17-style ``.npz``), labelled (energies, forces) or not.

    Args:
        path: The file.
        index (str): Frames to take, an ASE slice string such as ``"::10"``.
            (default: :obj:`":"`)
    """
    return read_structures(path, index)


def rattled_bulk(symbol: str = "Cu", size: Sequence[int] = (2, 2, 2), count: int = 8,
                 stdev: float = 0.05, strain: float = 0.02, cubic: bool = False,
                 seed: int = 0) -> list[Atoms]:
    r"""Randomly displaced and strained copies of a bulk crystal (:func:`ase.build.bulk`),
    a quick start set for metals.

    Args:
        symbol (str): Element. (default: :obj:`"Cu"`)
        size (Sequence[int]): Repetitions of the primitive (or cubic) cell.
            (default: :obj:`(2, 2, 2)`)
        count (int): Number of structures. (default: :obj:`8`)
        stdev (float): Standard deviation of the atomic displacements, Å.
            (default: :obj:`0.05`)
        strain (float): Largest isotropic strain, uniform in ±``strain``.
            (default: :obj:`0.02`)
        cubic (bool): Start from the conventional cubic cell. (default: :obj:`False`)
        seed (int): Random seed. (default: :obj:`0`)
    """
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    base = bulk(symbol, cubic=cubic).repeat(tuple(int(n) for n in size))
    frames = []
    for _ in range(count):
        atoms = base.copy()
        atoms.set_cell(atoms.cell * (1.0 + rng.uniform(-strain, strain)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, stdev, atoms.positions.shape)
        frames.append(atoms)
    return frames


def check_frames(frames: Iterable[Atoms], species: Iterable[int], source: str) -> None:
    r"""Checks every frame of ``frames`` before any time is spent on it: elements the
    models know (``species``), then finite positions, a sane cell and no overlapping
    atoms, with the messages of :func:`hipnn_pyg.nn.checks.check_atoms`.

    Raises:
        ValueError: naming ``source``, the frame and the problem.
    """
    known = {int(z) for z in species}
    for index, atoms in enumerate(frames):
        unknown = sorted(set(int(z) for z in atoms.numbers) - known)
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            raise ValueError(
                f"{source}: frame {index} holds {names}, unknown to the ensemble "
                f"(model.representation.species={sorted(known)}); add it to "
                f"model.representation.species or drop the frame"
            )
        check_atoms(atoms, name=f"{source}: frame {index}")


def plain_copy(atoms: Atoms) -> Atoms:
    r"""Numbers, positions, cell and pbc of ``atoms``, with its ``info`` but without
    momenta, constraints or results."""
    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                 pbc=atoms.pbc)
    copy.info.update(atoms.info)
    return copy


def write_frames(path: PathLike, frames: Sequence[Atoms]) -> Path:
    r"""Writes ``frames`` as one extxyz file atomically (temporary file, ``fsync``,
    rename): a kill leaves the old file or the new one, never half of it."""
    path = Path(path)
    with atomic_write(path, "w") as stream:
        for atoms in frames:
            stream.write(frame_text(atoms))
    return path


def common_labels(frames: Sequence[Atoms]) -> list[Atoms]:
    r"""``frames`` with only the labels every one of them has: a data set mixing the
    start frames' extra results (GFN2's charges, say) with an oracle's energies and
    forces alone would be refused by the loader ("present in some configurations").
    Frames that lose nothing are returned as they are."""
    from ase.calculators.singlepoint import SinglePointCalculator

    keys = [set(a.calc.results) if a.calc is not None else set() for a in frames]
    common = set.intersection(*keys) if keys else set()
    dropped = sorted(set().union(*keys) - common) if keys else []
    if dropped:
        log.warning("the training set keeps the labels every frame has: %s dropped (some "
                    "frames lack them)", dropped)
    out = []
    for atoms, own in zip(frames, keys, strict=True):
        if own == common:
            out.append(atoms)
            continue
        copy = plain_copy(atoms)
        assert atoms.calc is not None
        copy.calc = SinglePointCalculator(copy, **{k: atoms.calc.results[k] for k in common})
        out.append(copy)
    return out


def has_labels(atoms: Atoms) -> bool:
    r"""Whether ``atoms`` carries an energy (from its calculator or ``info``)."""
    if atoms.calc is not None and "energy" in atoms.calc.results:
        return True
    return "energy" in atoms.info
