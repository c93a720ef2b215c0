r"""Configurations from any file :func:`ase.io.read` handles, and ASE databases."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.io.formats import filetype, string2index
from torch_geometric.data import Data

from hipnn_pyg.data.base import AtomsDataset, DataFormatError, Frames, PathLike
from hipnn_pyg.data.units import KBAR_TO_EV_PER_A3

#: Voigt order of VASP's OUTCAR stress line (``in kB``), used by mlearn's Si and Ge files.
VASP_VOIGT_ORDER = "xx yy zz xy yz zx"
_AXIS = {"x": 0, "y": 1, "z": 2}
_DECOMPRESS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def voigt_to_matrix(values: np.ndarray, order: str) -> np.ndarray:
    r"""Symmetric ``[3, 3]`` tensor from six components named in ``order``.

    Args:
        values: six numbers.
        order: six space-separated component names, e.g. ``"xx yy zz yz xz xy"``.
    """
    names = order.split()
    if len(names) != 6 or len(values) != 6:
        raise ValueError(f"need six Voigt components and six names, got {order!r}")
    out = np.zeros((3, 3))
    for name, value in zip(names, values, strict=True):
        i, j = _AXIS[name[0]], _AXIS[name[1]]
        out[i, j] = out[j, i] = value
    return out


def _tensor(value: np.ndarray, voigt_order: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    if value.size == 9:
        return value.reshape(3, 3)
    if value.size == 6:
        return voigt_to_matrix(value, voigt_order)
    raise ValueError(f"expected 6 or 9 components, got {value.size}")


def _read_images(path: Path, index: str | int, format: str | None) -> Atoms | list[Atoms]:
    r""":func:`ase.io.read`, decompressing ``.gz``/``.bz2``/``.xz`` into memory first:
    ASE seeks back to each frame's start, which re-decompresses a compressed stream
    from the beginning every time (quadratic; 14 s instead of 0.5 s for 400 frames)."""
    opener = _DECOMPRESS.get(path.suffix)
    if opener is None:
        return ase.io.read(str(path), index=index, format=format)
    format = format or filetype(str(path), guess=False)
    with opener(path, "rt") as stream:
        text = stream.read()
    return ase.io.read(io.StringIO(text), index=index, format=format)


def _lookup(atoms: Atoms, key: str | None) -> Any:
    r"""``key`` from info, database key-value pairs and data, arrays, then calculator."""
    if key is None:
        return None
    sources = [
        atoms.info,
        atoms.info.get("key_value_pairs", {}),
        atoms.info.get("data", {}),
        atoms.arrays,
    ]
    if atoms.calc is not None:
        sources.append(getattr(atoms.calc, "results", {}))
    for source in sources:
        if key in source:
            return source[key]
    return None


class ASEDataset(AtomsDataset):
    r"""Configurations read with ASE: extended XYZ (also ``.gz``), ASE databases
    (``.db``) and any other format :func:`ase.io.read` understands; in eV, Å and e.

    Labels are looked up by key, in order, in ``atoms.info``, a database row's
    key-value pairs and ``data``, ``atoms.arrays``, then the calculator's results
    (where ASE puts ``energy``, ``forces``, ``stress`` from extxyz comment lines).
    Units are assumed to be ASE's (eV, Å, e); stress is converted to eV/Å³ in ASE's
    sign convention (:math:`\sigma = V^{-1}\,\partial E/\partial\varepsilon`, negative
    under compression) from the first of:

    * ``stress_key``: eV/Å³, ASE sign; six components in ASE Voigt order
      (xx yy zz yz xz xy) or nine.
    * ``virial_key``: virial in eV, extxyz/QUIP convention
      :math:`W = -V\sigma`, so :math:`\sigma = -W / V`.
    * ``virial_stress_key``: VASP-style stress in kbar, positive under compression
      (the ``in kB`` line; mlearn's ``virial_stress``), so
      :math:`\sigma = -s / 1602.1766` eV/Å³, components in ``virial_stress_order``.

    The mlearn files store it as ``virial_stress_source``. Checked against their
    sheared ``Elastic`` cells, Si and Ge use VASP's order ``"xx yy zz xy yz zx"`` (the
    default) while Mo, Cu and Ni use ``"xx yy zz xy xz yz"``; Li has no shears to tell.

    Frames without any periodic direction get a zero ``cell`` (e.g. the 50 Å boxes of
    the BOTNet files). A label must be present in all frames or in none.

    Args:
        path: the file.
        index: frames to read, an ASE index string (``":"``, ``"-10:"``) or int.
        format: ASE format name; guessed from the file name when ``None``.
        energy_key: total energy, eV.
        forces_key: forces, eV/Å.
        stress_key: stress, eV/Å³ (ASE convention).
        virial_key: virial, eV.
        virial_stress_key: VASP-convention stress in kbar; a sequence is tried in order.
        virial_stress_order: component order of ``virial_stress_key``.
        dipole_key: dipole, e·Å.
        quadrupole_key: quadrupole, e·Å².
        charges_key: atomic partial charges, e.
        charge_key: total charge, e (0 where absent).
        transform: optional PyG transform applied on access.
    """

    def __init__(
        self,
        path: PathLike,
        index: str | int = ":",
        format: str | None = None,
        energy_key: str | None = "energy",
        forces_key: str | None = "forces",
        stress_key: str | None = "stress",
        virial_key: str | None = "virial",
        virial_stress_key: str | Sequence[str] | None = ("virial_stress", "virial_stress_source"),
        virial_stress_order: str = VASP_VOIGT_ORDER,
        dipole_key: str | None = "dipole",
        quadrupole_key: str | None = "quadrupole",
        charges_key: str | None = "charges",
        charge_key: str | None = "charge",
        transform: Callable[[Data], Data] | None = None,
    ) -> None:
        self.index = index
        self.format = format
        if isinstance(virial_stress_key, str):
            virial_stress_key = (virial_stress_key,)
        self.virial_stress_keys = tuple(virial_stress_key or ())
        self.virial_stress_order = virial_stress_order
        voigt_to_matrix(np.zeros(6), virial_stress_order)  # validate early
        self.source_keys = {
            "energy": energy_key,
            "forces": forces_key,
            "stress": stress_key,
            "virial": virial_key,
            "dipole": dipole_key,
            "quadrupole": quadrupole_key,
            "charges": charges_key,
            "charge": charge_key,
        }
        super().__init__(path, transform=transform)

    def _read_atoms(self) -> list[Atoms]:
        path = self.path
        try:
            if self.format == "db" or (self.format is None and path.suffix == ".db"):
                with ase.db.connect(str(path)) as db:
                    rows = list(db.select())
                index = string2index(self.index) if isinstance(self.index, str) else self.index
                rows = rows[index] if isinstance(index, slice) else [rows[index]]
                return [row.toatoms(add_additional_information=True) for row in rows]
            images = _read_images(path, self.index, self.format)
        except FileNotFoundError:
            raise
        except Exception as exc:  # ASE raises many types for malformed files
            raise DataFormatError(
                f"{path}: cannot read with ASE ({type(exc).__name__}: {exc})"
            ) from exc
        return images if isinstance(images, list) else [images]

    def read(self) -> Frames:
        images = self._read_atoms()
        if not images:
            raise DataFormatError(f"{self.path}: no configurations")
        sizes = np.array([len(atoms) for atoms in images])
        frames = Frames(
            z=np.concatenate([atoms.numbers for atoms in images]).astype(np.int64),
            pos=np.concatenate([atoms.positions for atoms in images]),
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            cell=np.stack([atoms.cell.array for atoms in images]),
            pbc=np.stack([atoms.pbc for atoms in images]),
        )
        frames.idx = self._file_positions(len(images))
        keys = self.source_keys

        def collect(field: str, key: str | None, convert: Callable[[Any], Any]) -> Any:
            values = [_lookup(atoms, key) for atoms in images]
            present = [value is not None for value in values]
            if not any(present):
                return None
            if not all(present):
                first = present.index(False)
                raise DataFormatError(
                    f"{self.path}: '{key}' present in {sum(present)} of {len(values)} "
                    f"configurations (missing in configuration {first}); {field} must be "
                    f"given for all or none"
                )
            try:
                return [convert(value) for value in values]
            except (ValueError, TypeError) as exc:
                raise DataFormatError(f"{self.path}: bad '{key}' values ({exc})") from exc

        energy = collect("energy", keys["energy"], float)
        if energy is not None:
            frames.energy = np.array(energy, dtype=np.float64)
        forces = collect("forces", keys["forces"], lambda v: np.asarray(v, dtype=np.float64))
        if forces is not None:
            frames.forces = self._concat_atoms("forces", keys["forces"], forces, sizes)
        charges = collect("charges", keys["charges"], lambda v: np.asarray(v, dtype=np.float64))
        if charges is not None:
            frames.charges = self._concat_atoms("charges", keys["charges"], charges, sizes)
        charge = collect("charge", keys["charge"], float)
        if charge is not None:
            frames.charge = np.array(charge)
        dipole = collect("dipole", keys["dipole"], lambda v: np.asarray(v, float).reshape(3))
        if dipole is not None:
            frames.dipole = np.stack(dipole)
        quadrupole = collect(
            "quadrupole", keys["quadrupole"], lambda v: _tensor(v, "xx yy zz yz xz xy")
        )
        if quadrupole is not None:
            frames.quadrupole = np.stack(quadrupole)
        frames.stress = self._read_stress(images, collect)
        return frames

    def _read_stress(self, images: list[Atoms], collect: Callable[..., Any]) -> Any:
        stress = collect(
            "stress", self.source_keys["stress"], lambda v: _tensor(v, "xx yy zz yz xz xy")
        )
        if stress is not None:
            return np.stack(stress)
        virial = collect(
            "stress", self.source_keys["virial"], lambda v: _tensor(v, "xx yy zz yz xz xy")
        )
        if virial is not None:
            volumes = np.array([abs(atoms.cell.volume) for atoms in images])
            if np.any(volumes <= 0):
                raise DataFormatError(f"{self.path}: virial given for a cell of zero volume")
            return -np.stack(virial) / volumes[:, None, None]
        for key in self.virial_stress_keys:
            if all(_lookup(atoms, key) is None for atoms in images):
                continue
            self.source_keys = {**self.source_keys, "stress": key}
            kbar = collect("stress", key, lambda v: _tensor(v, self.virial_stress_order))
            return -np.stack(kbar) * KBAR_TO_EV_PER_A3
        return None

    def _concat_atoms(
        self, field: str, key: str | None, values: list[np.ndarray], sizes: np.ndarray
    ) -> np.ndarray:
        trailing = (3,) if field == "forces" else ()
        for i, (value, size) in enumerate(zip(values, sizes, strict=True)):
            if value.shape != (size, *trailing):
                raise DataFormatError(
                    f"{self.path}: '{key}' of configuration {i} has shape {list(value.shape)}, "
                    f"expected {[int(size), *trailing]}"
                )
        return np.concatenate(values)

    def _file_positions(self, num_read: int) -> np.ndarray:
        r"""Positions in the file of the frames read with :attr:`index`."""
        index = string2index(self.index) if isinstance(self.index, str) else self.index
        if isinstance(index, int):
            return np.array([index if index >= 0 else self._count_frames() + index])
        start, step = index.start or 0, index.step or 1
        if start >= 0 and step > 0 and (index.stop is None or index.stop >= 0):
            return start + step * np.arange(num_read)
        return np.arange(*index.indices(self._count_frames()))[:num_read]

    def _count_frames(self) -> int:
        r"""Number of frames in the file (only needed to map negative indices)."""
        if self.path.suffix == ".db" or self.format == "db":
            with ase.db.connect(str(self.path)) as db:
                return db.count()
        return len(_read_images(self.path, ":", self.format))


def is_ase_readable(path: PathLike) -> bool:
    r"""Whether ASE recognises the file's format from its name or content."""
    path = Path(path)
    if path.suffix == ".db":
        return True
    try:
        return bool(filetype(str(path), guess=False))
    except Exception:
        return False
