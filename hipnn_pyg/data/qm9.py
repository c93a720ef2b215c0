r"""QM9 from the ragged npz layout (``qm9_qm9pack_130831.npz``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch_geometric.data import Data

from hipnn_pyg.data.base import AtomsDataset, DataFormatError, Frames, PathLike
from hipnn_pyg.data.npz import read_npz
from hipnn_pyg.data.units import DEBYE_TO_E_ANGSTROM, HARTREE_TO_EV

#: Selectable energy targets and their keys in the file (Hartree).
QM9_TARGETS: dict[str, str] = {
    "U0": "U0_Ha",
    "U": "U_Ha",
    "H": "H_Ha",
    "G": "G_Ha",
    "U0_atomization": "U0_atomization_Ha",
}


class QM9Dataset(AtomsDataset):
    r"""QM9 molecules (B3LYP/6-31G(2df,p) equilibrium geometries) in eV, Å and e.

    Reads the ragged npz layout: atoms of molecule ``i`` are
    ``offsets[i]:offsets[i + 1]`` of ``Z`` and ``R_ang`` (Å); per-molecule energies in
    Hartree (``U0_Ha``, ``U_Ha``, ``H_Ha``, ``G_Ha``, ``U0_atomization_Ha``) and the
    dipole magnitude ``mu_D`` in Debye. Loading is vectorised (0.4 s for all 130,831
    molecules, 1.15× numpy's read of the file: ``scripts/bench_data.py``).

    Each :class:`~torch_geometric.data.Data` carries ``z``, ``pos``, ``energy`` (the
    chosen target in eV, float64), ``dipole_magnitude`` (e·Å; 1 D = 0.2081943 e·Å),
    ``charges`` (Mulliken charges, e) when ``mulliken=True``, ``cell`` (zeros),
    ``pbc`` (False), ``charge`` (0) and ``idx`` (row in the file). QM9 has no forces.

    Args:
        path: the npz file.
        target: energy target, one of ``"U0"``, ``"U"``, ``"H"``, ``"G"``,
            ``"U0_atomization"``.
        subset: keep only these molecules (row indices into the file).
        max_molecules: keep only the first ``max_molecules`` (after ``subset``).
        mulliken: include the Mulliken atomic charges as ``charges``.
        transform: optional PyG transform applied on access.
    """

    def __init__(
        self,
        path: PathLike,
        target: str = "U0",
        subset: Sequence[int] | np.ndarray | None = None,
        max_molecules: int | None = None,
        mulliken: bool = True,
        transform: Callable[[Data], Data] | None = None,
    ) -> None:
        if target not in QM9_TARGETS:
            raise ValueError(f"unknown QM9 target '{target}'; choose from {list(QM9_TARGETS)}")
        self.target = target
        self.subset = None if subset is None else np.asarray(subset, dtype=np.int64)
        self.max_molecules = max_molecules
        self.mulliken = mulliken
        super().__init__(path, transform=transform)

    def read(self) -> Frames:
        energy_key = QM9_TARGETS[self.target]
        keys = ["offsets", "Z", "R_ang", energy_key, "mu_D"] + (["mulliken_e"] * self.mulliken)
        raw = read_npz(self.path, keys)
        for key in ("offsets", "Z", "R_ang", energy_key):
            if key not in raw:
                raise DataFormatError(f"{self.path}: not a QM9 ragged npz, key '{key}' missing")
        self.source_keys = {
            "energy": energy_key,
            "dipole_magnitude": "mu_D",
            "charges": "mulliken_e",
        }
        offsets = raw["offsets"].astype(np.int64)
        num = len(offsets) - 1
        if raw["R_ang"].shape != (int(offsets[-1]), 3) or raw["Z"].shape != (int(offsets[-1]),):
            raise DataFormatError(
                f"{self.path}: 'Z' {list(raw['Z'].shape)} and 'R_ang' "
                f"{list(raw['R_ang'].shape)} do not match offsets ({offsets[-1]} atoms)"
            )
        if "mulliken_e" in raw and raw["mulliken_e"].shape != raw["Z"].shape:
            raise DataFormatError(
                f"{self.path}: 'mulliken_e' has shape {list(raw['mulliken_e'].shape)}, "
                f"expected {list(raw['Z'].shape)} like 'Z'"
            )
        rows = np.arange(num) if self.subset is None else self.subset
        if rows.size and (rows.min() < 0 or rows.max() >= num):
            raise IndexError(f"{self.path}: subset indices outside 0..{num - 1}")
        if self.max_molecules is not None:
            rows = rows[: self.max_molecules]

        sizes = offsets[rows + 1] - offsets[rows]
        new_offsets = np.concatenate([[0], np.cumsum(sizes)])
        # Gather atom rows of the selected molecules without a Python loop.
        atoms = np.repeat(offsets[rows] - new_offsets[:-1], sizes) + np.arange(new_offsets[-1])
        molecule = {key: raw[key] for key in (energy_key, "mu_D") if key in raw}
        for key, value in molecule.items():
            if value.shape != (num,):
                raise DataFormatError(
                    f"{self.path}: '{key}' has shape {list(value.shape)}, expected [{num}]"
                )
        frames = Frames(
            z=raw["Z"][atoms].astype(np.int64),
            pos=raw["R_ang"][atoms],
            offsets=new_offsets,
            energy=raw[energy_key][rows].astype(np.float64) * HARTREE_TO_EV,
            idx=rows,
        )
        if "mu_D" in raw:
            frames.dipole_magnitude = raw["mu_D"][rows] * DEBYE_TO_E_ANGSTROM
        if self.mulliken and "mulliken_e" in raw:
            frames.charges = raw["mulliken_e"][atoms]
        return frames
