"""MD: energy conservation, restarts, NPT, blow-ups and the hipnn-md program."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from hipnn_pyg.md import MDBlowUpError, last_frame, run_md
from hipnn_pyg.md.density import density_g_cm3
from hipnn_pyg.serialization import save_model
from tests.conftest import REPO
from tests.md.helpers import relaxed_ethanol
from tests.nn.helpers import ethanol, small_model


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_nve_conserves_energy(tmp_path) -> None:
    atoms, calc = relaxed_ethanol()
    result = run_md(atoms, calc, "nve", steps=250, timestep_fs=0.2, temperature_K=300,
                    trajectory=tmp_path / "t.extxyz", log=tmp_path / "md.csv",
                    log_interval=2, traj_interval=50, progress=False)
    time_ps = np.array([row["time_ps"] for row in result.rows])
    total = np.array([row["etot_eV"] for row in result.rows])
    kinetic = np.array([row["ekin_eV"] for row in result.rows])
    drift = np.polyfit(time_ps, total, 1)[0] / len(atoms)
    print(f"\nNVE 50 fs, dt 0.2 fs, float64: drift {drift:.2e} eV/atom/ps, "
          f"std(E_tot) {total.std():.2e} eV vs std(E_kin) {kinetic.std():.2e} eV")
    assert abs(drift) < 1e-3
    assert total.std() < 0.05 * kinetic.std()
    assert "dipole_x_eA" in read_log(tmp_path / "md.csv")[0]
    assert len(last_frame(tmp_path / "t.extxyz")[0]) == 9


def test_restart_continues_from_the_last_frame(tmp_path) -> None:
    atoms, calc = relaxed_ethanol(charges=False)
    options = dict(timestep_fs=0.5, log_interval=5, traj_interval=20, progress=False)
    run_md(atoms, calc, "nve", steps=80, trajectory=tmp_path / "a.extxyz",
           log=tmp_path / "a.csv", **options)
    run_md(atoms, calc, "nve", steps=40, trajectory=tmp_path / "b.extxyz",
           log=tmp_path / "b.csv", **options)
    with open(tmp_path / "b.extxyz", "a") as stream:  # killed while writing a frame
        stream.write("9\nProperties=species:S:1:pos:R:3 md_step=50\nC 0.0 0.0")
    with open(tmp_path / "b.csv", "a") as stream:  # a row logged after the last frame
        stream.write("45,0.0225,1,1,1,1,,,\n")
    result = run_md(None, calc, "nve", steps=80, trajectory=tmp_path / "b.extxyz",
                    log=tmp_path / "b.csv", restart=True, **options)
    assert (result.steps_done, result.last_step) == (40, 80)
    full, _, _ = last_frame(tmp_path / "a.extxyz")
    resumed, step, time_fs = last_frame(tmp_path / "b.extxyz")
    assert (step, time_fs) == (80, 40.0)
    # extxyz keeps 8 decimals of positions and momenta: the runs agree to that
    np.testing.assert_allclose(resumed.positions, full.positions, atol=1e-5)
    np.testing.assert_allclose(resumed.get_momenta(), full.get_momenta(), atol=1e-4)
    steps = [int(row["step"]) for row in read_log(tmp_path / "b.csv")]
    assert steps == sorted(set(steps)) == list(range(0, 81, 5))


def test_npt_changes_the_volume_of_a_periodic_cell(tmp_path) -> None:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    for barostat in ("mtk", "berendsen"):
        result = run_md(atoms, EMT(), "npt", steps=40, timestep_fs=2.0, temperature_K=300,
                        pressure_bar=1.0, barostat=barostat, pdamp_fs=100.0,
                        tdamp_fs=50.0, compressibility_per_bar=1e-6,
                        trajectory=tmp_path / f"{barostat}.extxyz",
                        log=tmp_path / f"{barostat}.csv", log_interval=10, progress=False)
        volumes = [row["volume_A3"] for row in result.rows]
        assert volumes[-1] < volumes[0]  # a = 3.7 Å is stretched (EMT: 3.61 Å)
        final = last_frame(tmp_path / f"{barostat}.extxyz")[0]
        assert final.get_volume() == pytest.approx(volumes[-1], rel=1e-6)
        assert result.rows[-1]["density_g_cm3"] == pytest.approx(density_g_cm3(final))


def test_npt_of_a_molecule_is_an_error(tmp_path) -> None:
    atoms, calc = relaxed_ethanol(charges=False)
    with pytest.raises(ValueError, match="NPT needs a system periodic in all three"):
        run_md(atoms, calc, "npt", steps=5, trajectory=tmp_path / "t.extxyz",
               log=tmp_path / "l.csv", progress=False)
    with pytest.raises(ValueError, match="unknown ensemble"):
        run_md(atoms, calc, "nvt", steps=5, trajectory=tmp_path / "t.extxyz",
               log=tmp_path / "l.csv", progress=False)


class NaNAfter(Calculator):
    """Harmonic wells that return NaN after a few calls."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.left = calls, calls

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.left -= 1
        energy = 0.5 * float((self.atoms.positions ** 2).sum())
        forces = -self.atoms.positions.copy()
        if self.left < 0:
            energy, forces = float("nan"), forces * np.nan
        self.results = {"energy": energy, "forces": forces}


def test_blow_ups_stop_with_a_clear_error_and_keep_files(tmp_path) -> None:
    atoms = Atoms("H2", positions=[[0, 0, 0], [1.0, 0, 0]])
    with pytest.raises(MDBlowUpError, match="non-finite energy"):
        run_md(atoms, NaNAfter(30), "nve", steps=100, trajectory=tmp_path / "t.extxyz",
               log=tmp_path / "l.csv", traj_interval=5, progress=False)
    assert len(read_log(tmp_path / "l.csv")) >= 2
    assert last_frame(tmp_path / "t.extxyz")[1] >= 20
    # C and O shot into each other: the model's overlap check becomes a blow-up
    z, pos = ethanol()
    molecule = Atoms(numbers=z.numpy(), positions=pos.numpy())
    bond = molecule.positions[2] - molecule.positions[0]
    velocities = np.zeros((9, 3))
    velocities[0], velocities[2] = 0.2 * bond, -0.2 * bond  # Å/fs
    molecule.set_velocities(velocities / units.fs)
    from hipnn_pyg.calculator import HIPNNCalculator

    with pytest.raises(MDBlowUpError, match="closer than the model's lower limit"):
        run_md(molecule, HIPNNCalculator(small_model()), "nve", steps=50,
               timestep_fs=0.5, max_temperature_K=None,
               trajectory=tmp_path / "o.extxyz", log=tmp_path / "o.csv", progress=False)
    with pytest.raises(MDBlowUpError, match="exceeds max_temperature_K"):
        run_md(molecule, HIPNNCalculator(small_model()), "nve", steps=5,
               initial_temperature_K=3000, max_temperature_K=1000,
               trajectory=tmp_path / "h.extxyz", log=tmp_path / "h.csv", progress=False)


def test_hipnn_md_program_runs_and_exits_2_on_blow_up(tmp_path) -> None:
    import ase.io

    atoms, calc = relaxed_ethanol()
    ase.io.write(tmp_path / "start.xyz", atoms)
    save_model(calc.model, tmp_path / "model.pt")
    command = [sys.executable, str(REPO / "scripts" / "md.py"),
               f"model_path={tmp_path / 'model.pt'}", f"structure={tmp_path / 'start.xyz'}",
               f"hydra.run.dir={tmp_path / 'run'}", "progress=false", "md=nvt_langevin",
               "steps=20", "log_interval=5"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_log(tmp_path / "run" / "md_log.csv")) == 5
    blow_up = command[:-3] + ["md=nve", "steps=20", "initial_temperature_K=3000",
                              "max_temperature_K=1000", f"hydra.run.dir={tmp_path / 'run2'}"]
    done = subprocess.run(blow_up, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "MD blew up" in done.stderr and (tmp_path / "run2" / "trajectory.extxyz").exists()
