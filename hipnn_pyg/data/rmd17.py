r"""Revised MD17 (and original MD17) trajectories stored as ``.npz``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch_geometric.data import Data

from hipnn_pyg.data.base import AtomsDataset, DataFormatError, Frames, PathLike
from hipnn_pyg.data.npz import read_npz
from hipnn_pyg.data.units import KCAL_MOL_TO_EV

#: Key names of the two layouts: rMD17 (Christensen & von Lilienfeld) and sGDML's MD17.
_LAYOUTS: dict[str, dict[str, str]] = {
    "rmd17": {"z": "nuclear_charges", "pos": "coords", "energy": "energies", "forces": "forces"},
    "md17": {"z": "z", "pos": "R", "energy": "E", "forces": "F"},
}


class RMD17Dataset(AtomsDataset):
    r"""An rMD17 or MD17 trajectory of one molecule, in eV and Å.

    Reads npz files with ``nuclear_charges [N]``, ``coords [C, N, 3]`` (Å),
    ``energies [C]`` (kcal/mol) and ``forces [C, N, 3]`` (kcal/mol/Å), the layout of
    rMD17 (arXiv:2007.09593), or the original MD17 keys ``z``, ``R``, ``E``, ``F`` with
    the same units. Energies become eV (1 kcal/mol = 43.364 meV) and forces eV/Å.
    The official rMD17 splits are separate ``*_train_NN.npz`` and ``*_test_NN.npz``
    files; load each with this class (see :func:`~hipnn_pyg.data.rmd17_split_files`).

    Each :class:`~torch_geometric.data.Data` carries ``z``, ``pos``, ``energy``
    (float64), ``forces``, ``cell`` (zeros), ``pbc`` (False), ``charge`` (0) and
    ``idx`` (the frame's row in the file).

    Args:
        path: the npz file.
        use_old: read ``old_energies`` and ``old_forces``, the original MD17 labels
            (PBE+vdW-TS) kept in rMD17 files, instead of the recomputed ones.
        max_frames: keep only the first ``max_frames`` frames (quick runs).
        transform: optional PyG transform applied on access.
    """

    def __init__(
        self,
        path: PathLike,
        use_old: bool = False,
        max_frames: int | None = None,
        transform: Callable[[Data], Data] | None = None,
    ) -> None:
        self.use_old = use_old
        self.max_frames = max_frames
        super().__init__(path, transform=transform)

    def read(self) -> Frames:
        raw = read_npz(self.path)
        layout = next((k for k, v in _LAYOUTS.items() if v["z"] in raw and v["pos"] in raw), None)
        if layout is None:
            raise DataFormatError(
                f"{self.path}: not an (r)MD17 file: needs 'nuclear_charges' and 'coords' "
                f"(or 'z' and 'R'); found {sorted(raw)}"
            )
        keys = dict(_LAYOUTS[layout])
        if self.use_old:
            if "old_energies" not in raw:
                raise DataFormatError(f"{self.path}: use_old=True but no 'old_energies' key")
            keys.update(energy="old_energies", forces="old_forces")
        self.source_keys = keys

        z = np.asarray(raw[keys["z"]]).reshape(-1).astype(np.int64)
        coords = np.asarray(raw[keys["pos"]], dtype=np.float64)
        if coords.ndim != 3 or coords.shape[1:] != (len(z), 3):
            raise DataFormatError(
                f"{self.path}: '{keys['pos']}' has shape {list(coords.shape)}, expected "
                f"[configurations, {len(z)}, 3]"
            )
        stop = len(coords) if self.max_frames is None else min(self.max_frames, len(coords))
        num_frames, num_atoms = stop, len(z)
        frames = Frames(
            z=np.tile(z, num_frames),
            pos=coords[:stop].reshape(-1, 3),
            offsets=np.arange(num_frames + 1) * num_atoms,
        )
        if keys["energy"] in raw:
            energy = np.asarray(raw[keys["energy"]], dtype=np.float64)
            if energy.shape not in ((len(coords),), (len(coords), 1)):
                raise DataFormatError(
                    f"{self.path}: '{keys['energy']}' has shape {list(energy.shape)}, "
                    f"expected [{len(coords)}]"
                )
            frames.energy = energy.reshape(-1)[:stop] * KCAL_MOL_TO_EV
        if keys["forces"] in raw:
            forces = np.asarray(raw[keys["forces"]], dtype=np.float64)
            if forces.shape != coords.shape:
                raise DataFormatError(
                    f"{self.path}: '{keys['forces']}' has shape {list(forces.shape)}, "
                    f"expected {list(coords.shape)} like '{keys['pos']}'"
                )
            frames.forces = forces[:stop].reshape(-1, 3) * KCAL_MOL_TO_EV
        return frames


def rmd17_split_files(data_dir: PathLike, molecule: str, split: int = 1) -> tuple[Path, Path]:
    r"""Paths of an official rMD17 split, ``rmd17_<molecule>_{train,test}_<NN>.npz``.

    Args:
        data_dir: folder holding the files.
        molecule: e.g. ``"ethanol"``.
        split: split number (1-5).

    Raises:
        FileNotFoundError: if either file is absent.
    """
    paths = tuple(
        Path(data_dir) / f"rmd17_{molecule}_{part}_{split:02d}.npz" for part in ("train", "test")
    )
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"rMD17 split file not found: {path}")
    return paths  # type: ignore[return-value]
