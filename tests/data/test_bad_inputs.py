"""Bad-input corpus, data side: broken or foreign data files name the file and what is
wrong; a data set with an element the model lacks is refused before training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from hipnn_pyg.data import ASEDataset, AtomsLoader, DataFormatError, RMD17Dataset, load_dataset
from hipnn_pyg.train import fit_self_energies


def _frames(count: int = 3) -> list[Atoms]:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        atoms.positions += rng.normal(scale=0.02, size=(3, 3))
        atoms.calc = SinglePointCalculator(atoms, energy=-10.0, forces=np.zeros((3, 3)))
        frames.append(atoms)
    return frames


def _extxyz_cut_mid_frame(folder: Path) -> Path:
    path = folder / "cut.extxyz"
    write(path, _frames(), format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))  # the last frame loses two of its atoms
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.extxyz"
    path.write_text("")
    return path


def _npz_without_coords(folder: Path) -> Path:
    path = folder / "nocoords.npz"
    np.savez(path, nuclear_charges=np.array([8, 1, 1]), energies=np.zeros(2))
    return path


def _npz_wrong_atom_count(folder: Path) -> Path:
    path = folder / "short.npz"
    np.savez(path, nuclear_charges=np.array([8, 1, 1]), coords=np.zeros((2, 2, 3)),
             energies=np.zeros(2), forces=np.zeros((2, 2, 3)))
    return path


def _text_named_npz(folder: Path) -> Path:
    path = folder / "notes.npz"
    path.write_text("energies: 1, 2, 3\n")
    return path


# (id, file maker, reader, what the message must say)
CASES: list[tuple[str, Callable[[Path], Path], Callable[[Path], object], str]] = [
    ("extxyz-cut-mid-frame", _extxyz_cut_mid_frame, ASEDataset, r"cut\.extxyz"),
    ("empty-file", _empty, load_dataset, r"empty\.extxyz"),
    ("npz-missing-coords", _npz_without_coords, RMD17Dataset,
     r"nocoords\.npz: not an \(r\)MD17 file: needs 'nuclear_charges' and 'coords'"),
    ("npz-wrong-atom-count", _npz_wrong_atom_count, RMD17Dataset,
     r"short\.npz: 'coords' has shape \[2, 2, 3\], expected \[configurations, 3, 3\]"),
    ("text-named-npz", _text_named_npz, load_dataset, r"notes\.npz"),
]


@pytest.mark.parametrize(("make", "read", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_broken_data_files_name_the_file(tmp_path: Path, make, read, message: str) -> None:
    path = make(tmp_path)
    before = path.read_bytes()
    with pytest.raises(DataFormatError, match=message):
        read(path)
    assert path.read_bytes() == before


def test_an_element_the_model_lacks_is_named(tmp_path: Path) -> None:
    write(tmp_path / "water.extxyz", _frames(), format="extxyz")
    dataset = ASEDataset(tmp_path / "water.extxyz")
    with pytest.raises(ValueError, match=r"elements \[8\] that are not in species \[1, 6\]"):
        fit_self_energies(dataset, [1, 6])


def test_loader_refuses_a_collate_fn_it_would_ignore(tmp_path: Path) -> None:
    write(tmp_path / "water.extxyz", _frames(), format="extxyz")
    dataset = ASEDataset(tmp_path / "water.extxyz")
    with pytest.raises(ValueError, match=r"cannot use collate_fn=.*torch_geometric\.loader"):
        AtomsLoader(dataset, batch_size=2, collate_fn=list)
    loader = AtomsLoader(dataset, batch_size=2, collate_fn=dataset.gather)  # Lightning's copy
    assert next(iter(loader)).num_graphs == 2
