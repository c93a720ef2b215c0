"""hipnn-label: labels, units, resumption after a kill, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from hipnn_pyg.data.ase_dataset import ASEDataset
from hipnn_pyg.extxyz import complete_frames_size, read_frames
from hipnn_pyg.label import label, label_one, make_calculator, read_structures
from tests.conftest import REPO

ETHANOL_NPZ = REPO / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz"


def copper_cells(path: Path, count: int = 4, rattle: float = 0.05) -> Path:
    rng = np.random.default_rng(0)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(rattle, rng=rng)
        cells.append(atoms)
    ase.io.write(path, cells, format="extxyz")
    return path


def test_emt_labels_periodic_cells_with_stress(tmp_path) -> None:
    source = copper_cells(tmp_path / "cu.extxyz")
    summary = label(source, tmp_path / "out.extxyz", "emt", progress=False)
    assert (summary.total, summary.labelled) == (4, 4)
    data = ASEDataset(tmp_path / "out.extxyz")
    assert len(data) == 4 and data[0].stress.shape == (1, 3, 3)
    frames = read_frames(tmp_path / "out.extxyz")
    reference = bulk("Cu", "fcc", a=3.6, cubic=True)
    reference.positions = frames[2].positions
    reference.calc = make_calculator("emt")
    assert frames[2].get_potential_energy() == pytest.approx(reference.get_potential_energy())


def test_gfn2_labels_have_dipoles_in_e_angstrom(tmp_path) -> None:
    pytest.importorskip("tblite")
    if not ETHANOL_NPZ.is_file():
        pytest.skip("shipped rMD17 ethanol missing")
    label(ETHANOL_NPZ, tmp_path / "eth.extxyz", index=":3", progress=False)
    data = ASEDataset(tmp_path / "eth.extxyz")
    assert len(data) == 3 and data[0].dipole.shape == (1, 3)
    assert abs(float(data[0].charges.sum())) < 1e-4
    # GFN2 ethanol: about 2 D = 0.42 e·Å (a Debye value would be ~5x larger)
    assert 0.2 < float(data[0].dipole.norm()) < 0.7
    assert read_frames(tmp_path / "eth.extxyz")[2].info["source_index"] == 2


def test_charged_dipole_is_about_the_centre_of_mass(tmp_path) -> None:
    pytest.importorskip("tblite")
    cation = molecule("H2O")
    cation.info["charge"] = 1.0
    shifted = cation.copy()
    shifted.positions += [1.0, -2.0, 3.0]
    ase.io.write(tmp_path / "in.extxyz", [cation, shifted], format="extxyz")
    label(tmp_path / "in.extxyz", tmp_path / "out.extxyz", "gfn2",
          {"multiplicity": 2}, progress=False)
    a, b = read_frames(tmp_path / "out.extxyz")
    assert a.get_charges().sum() == pytest.approx(1.0, abs=1e-6)
    # uncorrected, the shift would move the dipole by Q·(1, -2, 3) e·Å
    np.testing.assert_allclose(a.get_dipole_moment(), b.get_dipole_moment(), atol=1e-4)


def test_resume_truncates_a_torn_tail_without_duplicates(tmp_path) -> None:
    source = copper_cells(tmp_path / "cu.extxyz", count=5)
    out = tmp_path / "out.extxyz"
    label(source, out, "emt", index=":3", progress=False)
    complete = out.read_bytes()
    with open(out, "ab") as stream:  # a kill in the middle of frame 4
        stream.write(complete[: len(complete) // 3 // 2])
    summary = label(source, out, "emt", progress=False)
    assert (summary.already_done, summary.labelled) == (3, 2)
    assert out.read_bytes().startswith(complete)
    frames = read_frames(out)
    assert [f.info["label_index"] for f in frames] == [0, 1, 2, 3, 4]
    assert complete_frames_size(out) == (out.stat().st_size, 5)
    assert label(source, out, "emt", progress=False).labelled == 0


KILLABLE = """
import sys, time
from hipnn_pyg.label import label
label(sys.argv[1], sys.argv[2], "emt", progress=False, callback=lambda i: time.sleep(0.5))
"""


def test_resume_after_a_real_kill(tmp_path) -> None:
    source = copper_cells(tmp_path / "cu.extxyz", count=12)
    out = tmp_path / "out.extxyz"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(source), str(out)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if out.exists() and complete_frames_size(out)[1] >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("labelling subprocess produced no frames")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = complete_frames_size(out)[1]
    assert 3 <= done < 12
    before = read_frames(out)
    summary = label(source, out, "emt", progress=False)
    assert summary.already_done == done and summary.labelled == 12 - done
    frames = read_frames(out)
    assert sorted(f.info["label_index"] for f in frames) == list(range(12))
    for old, new in zip(before, frames, strict=False):
        assert old.get_potential_energy() == new.get_potential_energy()


def test_clear_errors(tmp_path) -> None:
    source = copper_cells(tmp_path / "cu.extxyz", count=2)
    other = copper_cells(tmp_path / "other.extxyz", count=3)
    ase.io.write(other, [bulk("Cu", "fcc", a=3.7, cubic=True)] * 3, format="extxyz")
    label(source, tmp_path / "out.extxyz", "emt", progress=False)
    with pytest.raises(ValueError, match="does not match the input"):
        label(other, tmp_path / "out.extxyz", "emt", progress=False)
    with pytest.raises(ValueError, match="unknown calculator"):
        make_calculator("dftb")
    with pytest.raises(FileNotFoundError, match="structure file not found"):
        read_structures(tmp_path / "missing.xyz")
    charged = bulk("Cu", "fcc", a=3.6, cubic=True)
    charged.info["charge"] = 1.0
    ase.io.write(tmp_path / "charged.extxyz", charged, format="extxyz")
    with pytest.raises(RuntimeError, match="cannot label a structure of total charge"):
        label(tmp_path / "charged.extxyz", tmp_path / "c.extxyz", "emt", progress=False)


def test_pyscf_missing_says_how_to_install() -> None:
    try:
        import pyscf  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pyscf"):
            make_calculator("pyscf")
    else:
        assert make_calculator("pyscf").parameters["xc"] == "PBE"


def test_pyscf_ccsd_t_gives_the_h2_full_ci_energy_and_no_forces(tmp_path) -> None:
    pytest.importorskip("pyscf")
    from ase.units import Bohr, Hartree
    from pyscf import fci, gto, scf

    # For two electrons CCSD is exact, so CCSD(T) must equal full CI: H2/STO-3G at
    # R = 1.4 bohr, -1.1373 Eh in Szabo & Ostlund's textbook.
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1.4 * Bohr]])
    calc = make_calculator("pyscf", method="ccsd_t", basis="sto-3g")
    energy = label_one(h2, calc).get_potential_energy() / Hartree
    mol = gto.M(atom="H 0 0 0; H 0 0 1.4", unit="Bohr", basis="sto-3g", verbose=0)
    full_ci = fci.FCI(scf.RHF(mol).run()).kernel()[0]
    assert energy == pytest.approx(full_ci, abs=1e-8)
    assert energy == pytest.approx(-1.1373, abs=5e-5)
    labelled = label_one(h2, calc)
    assert "forces" not in labelled.calc.results  # CCSD(T) labels carry energies only
    with pytest.raises(ValueError, match="unknown PySCF method 'ccsdtq'"):
        make_calculator("pyscf", method="ccsdtq")


def test_pyscf_frozen_core_lowers_the_correlation_energy_magnitude() -> None:
    pytest.importorskip("pyscf")
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    energies = {}
    for frozen in (True, False):
        calc = make_calculator("pyscf", method="mp2", basis="sto-3g", frozen_core=frozen)
        energies[frozen] = label_one(water, calc).get_potential_energy()
    # correlating the O 1s pair can only lower the MP2 energy
    assert energies[False] < energies[True] < energies[False] + 1.0


@pytest.mark.parametrize("method", ["ccsd_t", "ccsd", "mp2"])
def test_pyscf_correlated_forces_equal_finite_differences_of_its_energies(method: str) -> None:
    # H2O in a minimal basis, frozen core, tight convergence; a five-point stencil
    # (error ~h^4) on three coordinates, against hipnn-label's analytic forces.
    pytest.importorskip("pyscf")
    from ase import Atoms

    options = dict(method=method, basis="sto-3g", conv_tol=1e-12, cc_conv_tol=1e-11)
    positions = np.array([[0.0, 0.0, 0.1], [0.0, -0.757, -0.587], [0.05, 0.757, -0.587]])
    labelled = label_one(Atoms("OH2", positions=positions),
                         make_calculator("pyscf", forces=True, **options))
    forces = labelled.get_forces()
    assert np.abs(forces).max() > 0.05  # away from the minimum: a real comparison

    def energy(moved: np.ndarray) -> float:
        atoms = Atoms("OH2", positions=moved)
        atoms.calc = make_calculator("pyscf", **options)
        return atoms.get_potential_energy()

    def displaced(atom: int, axis: int, step: float) -> float:
        moved = positions.copy()
        moved[atom, axis] += step
        return energy(moved)

    h = 2e-3
    for atom, axis in [(0, 2), (1, 1), (2, 0)]:
        e = {k: displaced(atom, axis, k * h) for k in (-2, -1, 1, 2)}
        numeric = -(8 * (e[1] - e[-1]) - (e[2] - e[-2])) / (12 * h)
        assert abs(forces[atom, axis] - numeric) < 1e-5, (atom, axis)
