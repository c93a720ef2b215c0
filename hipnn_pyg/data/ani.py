r"""ANI-style HDF5 files (pyanitools layout: ANI-1, COMP6, and ANI-1x-like files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import h5py
import numpy as np
from ase.data import atomic_numbers
from torch_geometric.data import Data

from hipnn_pyg.data.base import AtomsDataset, DataFormatError, Frames, PathLike
from hipnn_pyg.data.units import HARTREE_TO_EV


def _molecule_groups(group: h5py.Group, coordinates_key: str) -> Iterator[h5py.Group]:
    r"""Groups holding ``coordinates_key``, depth first in h5py's (name) order."""
    if coordinates_key in group and isinstance(group[coordinates_key], h5py.Dataset):
        yield group
        return
    for child in group.values():
        if isinstance(child, h5py.Group):
            yield from _molecule_groups(child, coordinates_key)


def _atomic_numbers(group: h5py.Group, path: str) -> np.ndarray:
    if "atomic_numbers" in group:
        return np.asarray(group["atomic_numbers"][()], dtype=np.int64).reshape(-1)
    if "species" in group:
        symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in group["species"][()]]
        try:
            return np.array([atomic_numbers[s.strip()] for s in symbols], dtype=np.int64)
        except KeyError as exc:
            raise DataFormatError(f"{path}: {group.name}: unknown element {exc}") from exc
    raise DataFormatError(f"{path}: {group.name}: neither 'species' nor 'atomic_numbers'")


class ANIDataset(AtomsDataset):
    r"""Conformers from an ANI-layout HDF5 file, in eV, Å and e.

    Every group that holds ``coordinates [C, N, 3]`` (Å) is one molecule, with
    ``species [N]`` (element symbols as bytes) or ``atomic_numbers [N]`` and
    ``energies [C]`` in Hartree (converted with 1 Ha = 27.211386 eV). Groups are read
    depth first in HDF5 name order; ``idx`` is the running conformer index in that
    order.

    Forces: in COMP6 files the field ``forces`` holds the **gradient** dE/dR in Ha/Å,
    the negative of the force, so with ``forces_are_gradients=True`` (the default, for
    the pyanitools/COMP6 layout) it is negated. Files whose forces are true forces
    (e.g. the ANI-1x release, key ``wb97x_dz.forces``) need
    ``forces_are_gradients=False``.

    Atomic charges (``charges_key``, e.g. ``"hirshfeld"`` or ``"cm5"`` in COMP6) are
    optional; COMP6 stores ``N + 1`` values per conformer, the last being their sum,
    which is dropped. The total charge is 0.

    Args:
        path: the HDF5 file.
        energy_key: energies, Hartree.
        forces_key: forces or gradients, Ha/Å; ``None`` to skip.
        forces_are_gradients: negate ``forces_key`` (True for COMP6).
        charges_key: atomic charges, e; ``None`` to skip.
        coordinates_key: coordinates, Å.
        transform: optional PyG transform applied on access.
    """

    def __init__(
        self,
        path: PathLike,
        energy_key: str = "energies",
        forces_key: str | None = "forces",
        forces_are_gradients: bool = True,
        charges_key: str | None = None,
        coordinates_key: str = "coordinates",
        transform: Callable[[Data], Data] | None = None,
    ) -> None:
        self.forces_are_gradients = forces_are_gradients
        self.coordinates_key = coordinates_key
        self.source_keys = {"energy": energy_key, "forces": forces_key, "charges": charges_key}
        super().__init__(path, transform=transform)

    def read(self) -> Frames:
        try:
            handle = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataFormatError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        with handle:
            try:
                groups = _molecule_groups(handle, self.coordinates_key)
                parts = [self._read_group(group) for group in groups]
            except (OSError, KeyError, RuntimeError) as exc:
                raise DataFormatError(f"{self.path}: damaged HDF5 data ({exc})") from exc
        if not parts:
            raise DataFormatError(f"{self.path}: no group with '{self.coordinates_key}'")
        frames = Frames(
            z=np.concatenate([p["z"] for p in parts]),
            pos=np.concatenate([p["pos"] for p in parts]),
            offsets=np.concatenate(
                [[0], np.cumsum(np.concatenate([np.full(p["count"], p["size"]) for p in parts]))]
            ),
        )
        for field in ("energy", "forces", "charges"):
            present = [field in p for p in parts]
            if any(present) and not all(present):
                raise DataFormatError(
                    f"{self.path}: '{self.source_keys[field]}' present in only "
                    f"{sum(present)} of {len(parts)} molecule groups"
                )
            if all(present):
                setattr(frames, field, np.concatenate([p[field] for p in parts]))
        return frames

    def _read_group(self, group: h5py.Group) -> dict[str, np.ndarray]:
        z = _atomic_numbers(group, str(self.path))
        coords = np.asarray(group[self.coordinates_key][()], dtype=np.float64)
        count, size = (coords.shape[0], len(z)) if coords.ndim == 3 else (0, len(z))
        if coords.shape != (count, size, 3):
            raise DataFormatError(
                f"{self.path}: {group.name}/{self.coordinates_key} has shape "
                f"{list(coords.shape)}, expected [conformers, {size}, 3]"
            )
        part = {"count": count, "size": size, "z": np.tile(z, count), "pos": coords.reshape(-1, 3)}
        energy_key, forces_key, charges_key = (
            self.source_keys[k] for k in ("energy", "forces", "charges")
        )
        if energy_key in group:
            energy = np.asarray(group[energy_key][()], dtype=np.float64).reshape(-1)
            self._check(group, energy_key, energy.shape, (count,))
            part["energy"] = energy * HARTREE_TO_EV
        if forces_key is not None and forces_key in group:
            forces = np.asarray(group[forces_key][()], dtype=np.float64)
            self._check(group, forces_key, forces.shape, coords.shape)
            sign = -1.0 if self.forces_are_gradients else 1.0
            part["forces"] = sign * HARTREE_TO_EV * forces.reshape(-1, 3)
        if charges_key is not None and charges_key in group:
            charges = np.asarray(group[charges_key][()], dtype=np.float64)
            if charges.ndim == 2 and charges.shape[1] == size + 1:
                charges = charges[:, :size]  # COMP6: trailing column is the sum
            self._check(group, charges_key, charges.shape, (count, size))
            part["charges"] = charges.reshape(-1)
        return part

    def _check(
        self, group: h5py.Group, key: str, shape: tuple[int, ...], expected: tuple[int, ...]
    ) -> None:
        if tuple(shape) != tuple(expected):
            raise DataFormatError(
                f"{self.path}: {group.name}/{key} has shape {list(shape)}, expected "
                f"{list(expected)}"
            )
