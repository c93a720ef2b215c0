r"""Molecular dynamics with a HIP-NN calculator: NVE, Langevin NVT and NPT, with a
crash-safe trajectory, a CSV log, blow-up detection and restarts.

Outputs:

* ``trajectory`` (extxyz): every ``traj_interval`` steps positions, momenta, cell,
  potential energy, forces (and charges/dipole with a charge head), ``info["md_step"]``
  and ``info["time_fs"]``; one ``write`` + ``fsync`` per frame
  (:func:`hipnn_pyg.extxyz.append_frame`).
* ``log`` (CSV): every ``log_interval`` steps ``step, time_ps, epot_eV, ekin_eV,
  etot_eV, temperature_K, volume_A3, density_g_cm3, pressure_bar`` (the last three
  empty for molecules) and ``dipole_{x,y,z}_eA`` when the calculator gives dipoles.

A restart (``restart=True``) reads the last complete trajectory frame (positions,
momenta, cell), drops log rows written after it, and runs the remaining steps of the
same ``steps`` total. Thermostat/barostat internal variables (chain momenta) restart
from zero; that is the only difference from an uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, ZeroRotation

from hipnn_pyg.atomic import atomic_write
from hipnn_pyg.compat.ase import thermalize
from hipnn_pyg.extxyz import PathLike, append_frame, read_frames, repair_extxyz
from hipnn_pyg.md.density import density_g_cm3
from hipnn_pyg.nn.checks import check_atoms

#: Ensembles of :func:`make_dynamics`.
ENSEMBLES = ("nve", "nvt_langevin", "npt")
#: Barostats for ``ensemble="npt"``.
BAROSTATS = ("mtk", "berendsen")

LOG_COLUMNS = ["step", "time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K",
               "volume_A3", "density_g_cm3", "pressure_bar"]
DIPOLE_COLUMNS = ["dipole_x_eA", "dipole_y_eA", "dipole_z_eA"]


class MDBlowUpError(RuntimeError):
    r"""The simulation became unphysical (NaN, overlapping atoms, runaway
    temperature); the files written so far are kept."""


def make_dynamics(
    atoms: Atoms,
    ensemble: str = "nve",
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    pressure_bar: float = 1.01325,
    friction_per_fs: float = 0.01,
    barostat: str = "mtk",
    tdamp_fs: float = 100.0,
    pdamp_fs: float = 1000.0,
    compressibility_per_bar: float = 4.57e-5,
    seed: int = 0,
) -> MolecularDynamics:
    r"""An ASE integrator for ``atoms`` (which must have its calculator attached).

    Args:
        atoms (Atoms): The system.
        ensemble (str): ``"nve"`` (velocity Verlet), ``"nvt_langevin"`` (Langevin) or
            ``"npt"`` (needs a fully periodic cell). (default: :obj:`"nve"`)
        timestep_fs (float): Time step in fs. (default: :obj:`0.5`)
        temperature_K (float): Target temperature (NVT, NPT). (default: :obj:`300.0`)
        pressure_bar (float): Target pressure (NPT). (default: :obj:`1.01325`)
        friction_per_fs (float): Langevin friction in 1/fs. (default: :obj:`0.01`)
        barostat (str): ``"mtk"`` (isotropic Martyna-Tobias-Klein with Nosé-Hoover
            chains, :class:`ase.md.nose_hoover_chain.IsotropicMTKNPT`, a correct NPT
            ensemble) or ``"berendsen"`` (:class:`ase.md.nptberendsen.NPTBerendsen`,
            robust for equilibration, wrong fluctuations). (default: :obj:`"mtk"`)
        tdamp_fs (float): Thermostat time constant (NPT). (default: :obj:`100.0`)
        pdamp_fs (float): Barostat time constant (NPT). (default: :obj:`1000.0`)
        compressibility_per_bar (float): Isothermal compressibility for the
            Berendsen barostat, 1/bar (water: 4.57e-5). (default: :obj:`4.57e-5`)
        seed (int): Seed of the Langevin noise. (default: :obj:`0`)

    Raises:
        ValueError: An unknown ensemble or barostat, or NPT for a system that is not
            periodic in all three directions.
    """
    timestep = timestep_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=timestep)
    if ensemble == "nvt_langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        if not atoms.constraints:  # ASE's recommended replacement of fixcm=True
            atoms.set_constraint(FixCom())
        return Langevin(atoms, timestep=timestep, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs, fixcm=False,
                        rng=np.random.default_rng(seed))
    if ensemble == "npt":
        if not atoms.pbc.all() or atoms.cell.volume <= 0:
            raise ValueError(
                f"NPT needs a system periodic in all three directions with a cell; got "
                f"pbc={atoms.pbc.tolist()}, cell volume {atoms.cell.volume:.3g} Å³. Use "
                "nve or nvt_langevin for molecules"
            )
        if barostat == "mtk":
            from ase.md.nose_hoover_chain import IsotropicMTKNPT

            return IsotropicMTKNPT(atoms, timestep=timestep, temperature_K=temperature_K,
                                   pressure_au=pressure_bar * units.bar,
                                   tdamp=tdamp_fs * units.fs, pdamp=pdamp_fs * units.fs)
        if barostat == "berendsen":
            from ase.md.nptberendsen import NPTBerendsen

            return NPTBerendsen(atoms, timestep=timestep, temperature_K=temperature_K,
                                pressure_au=pressure_bar * units.bar,
                                taut=tdamp_fs * units.fs, taup=pdamp_fs * units.fs,
                                compressibility_au=compressibility_per_bar / units.bar)
        raise ValueError(f"unknown barostat '{barostat}'; choose one of {BAROSTATS}")
    raise ValueError(f"unknown ensemble '{ensemble}'; choose one of {ENSEMBLES}")


def last_frame(trajectory: PathLike) -> tuple[Atoms, int, float]:
    r"""The last complete frame of an MD trajectory (repairing a torn tail), with its
    step and time in fs, for a restart."""
    repair_extxyz(trajectory)
    frames = read_frames(trajectory)
    if not frames:
        raise FileNotFoundError(f"no complete frame to restart from in {trajectory}")
    atoms = frames[-1]
    if "md_step" not in atoms.info:
        raise ValueError(f"{trajectory} was not written by hipnn-md (no md_step)")
    atoms.calc = None
    return atoms, int(atoms.info["md_step"]), float(atoms.info["time_fs"])


@dataclass
class MDResult:
    r"""Summary of an :func:`run_md` call."""

    steps_done: int
    last_step: int
    trajectory: Path
    log: Path
    rows: list[dict[str, float]] = field(default_factory=list)


def _snapshot(atoms: Atoms, step: int, time_fs: float) -> Atoms:
    frame = atoms.copy()  # keeps momenta and cell
    frame.info.update({"md_step": step, "time_fs": time_fs})
    results = {k: v for k, v in atoms.calc.results.items()
               if k in ("energy", "forces", "stress", "charges", "dipole")}
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def _pressure_bar(atoms: Atoms) -> float:
    stress = atoms.get_stress(include_ideal_gas=True)
    return float(-stress[:3].mean() / units.bar)


def _restart_log(log: Path, last_step: int) -> None:
    r"""Drops log rows after ``last_step`` (they came after the restart frame)."""
    if not log.exists():
        return
    with open(log, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= last_step]
    with atomic_write(log, "w", newline="") as stream:
        csv.writer(stream).writerows(kept)


def run_md(
    atoms: Atoms | None,
    calculator: Calculator,
    ensemble: str = "nve",
    steps: int = 1000,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    trajectory: PathLike = "md.extxyz",
    log: PathLike = "md.csv",
    traj_interval: int = 10,
    log_interval: int = 10,
    restart: bool = False,
    initial_temperature_K: float | None = None,
    seed: int = 0,
    max_temperature_K: float | None = 10000.0,
    progress: bool = True,
    **dynamics_options: Any,
) -> MDResult:
    r"""Runs MD with ``calculator`` and writes ``trajectory`` and ``log`` (see module
    docs). Fresh runs start by overwriting both files.

    Args:
        atoms (Atoms, optional): Start structure; ignored (may be :obj:`None`) on
            restart.
        calculator (Calculator): E.g. :class:`hipnn_pyg.calculator.HIPNNCalculator`.
        ensemble (str): See :func:`make_dynamics`. (default: :obj:`"nve"`)
        steps (int): Total number of steps, counting those of earlier runs on
            restart. (default: :obj:`1000`)
        timestep_fs (float): Time step in fs. (default: :obj:`0.5`)
        temperature_K (float): Thermostat target. (default: :obj:`300.0`)
        trajectory (str): Trajectory file (extxyz). (default: :obj:`"md.extxyz"`)
        log (str): CSV log. (default: :obj:`"md.csv"`)
        traj_interval (int): Steps between frames. (default: :obj:`10`)
        log_interval (int): Steps between log rows. (default: :obj:`10`)
        restart (bool): Continue from the last frame of ``trajectory``.
            (default: :obj:`False`)
        initial_temperature_K (float, optional): Maxwell-Boltzmann velocities at this
            temperature when ``atoms`` has no momenta. (default: :obj:`None`, uses
            ``temperature_K``)
        seed (int): Seed of the initial velocities and the Langevin noise.
            (default: :obj:`0`)
        max_temperature_K (float, optional): A temperature above this counts as a
            blow-up. (default: :obj:`10000.0`)
        progress (bool): tqdm progress bar. (default: :obj:`True`)
        **dynamics_options: Passed to :func:`make_dynamics` (pressure, friction,
            barostat, ...).

    Raises:
        ValueError: A broken start structure (NaN positions, overlapping atoms, an
            element the model lacks, a singular cell; see
            :func:`~hipnn_pyg.nn.checks.check_atoms`), found before any file is
            touched.
        MDBlowUpError: NaN/inf energies or positions, overlapping atoms (the model's
            ``ValueError``), or a runaway temperature. Files written so far stay.
    """
    from tqdm.auto import tqdm

    trajectory, log = Path(trajectory), Path(log)
    for path in (trajectory, log):
        path.parent.mkdir(parents=True, exist_ok=True)
    models = list(getattr(calculator, "models", []))  # HIP-NN calculators: check up front
    if restart:
        atoms, start_step, start_fs = last_frame(trajectory)
        check_atoms(atoms, models, name=f"last frame of {trajectory}")
        _restart_log(log, start_step)
    else:
        if atoms is None:
            raise ValueError("run_md needs a start structure unless restart=True")
        # before the old files are replaced: a broken structure must not cost them
        check_atoms(atoms, models, name="start structure")
        make_dynamics(atoms.copy(), ensemble, timestep_fs, temperature_K,  # (options, too)
                      **dynamics_options)
        atoms = atoms.copy()
        start_step, start_fs = 0, 0.0
        trajectory.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        if not atoms.has("momenta") or not np.any(atoms.get_momenta()):
            temperature = temperature_K if initial_temperature_K is None else initial_temperature_K
            thermalize(atoms, temperature, rng=np.random.default_rng(seed))
            Stationary(atoms)
            if not atoms.pbc.any() and len(atoms) > 2:  # (ASE's is singular for dimers)
                ZeroRotation(atoms)
    atoms.calc = calculator
    remaining = steps - start_step
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, seed=seed + start_step,
                        **dynamics_options)
    result = MDResult(0, start_step, trajectory, log)
    if remaining <= 0:
        return result
    periodic = bool(atoms.pbc.all())
    columns = list(LOG_COLUMNS)
    atoms.get_potential_energy()  # first evaluation: fails early on a broken structure
    has_dipole = "dipole" in calculator.results
    if has_dipole:
        columns += DIPOLE_COLUMNS
    write_header = not log.exists() or log.stat().st_size == 0
    log_stream = open(log, "a", newline="")  # noqa: SIM115 - closed in finally
    writer = csv.DictWriter(log_stream, fieldnames=columns)
    if write_header:
        writer.writeheader()
    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="step",
               desc=f"MD {ensemble}")
    state = {"step": start_step}

    def observe() -> None:
        step = start_step + dyn.nsteps
        state["step"] = step
        time_fs = start_fs + dyn.nsteps * timestep_fs
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        temperature = atoms.get_temperature()
        problem = None
        if not (math.isfinite(epot) and math.isfinite(ekin)
                and np.isfinite(atoms.positions).all()):
            problem = f"non-finite energy or positions at step {step} (E_pot={epot}, " \
                      f"E_kin={ekin})"
        elif max_temperature_K is not None and temperature > max_temperature_K:
            problem = f"temperature {temperature:.0f} K at step {step} exceeds " \
                      f"max_temperature_K={max_temperature_K:g}"
        if problem is not None:
            if np.isfinite(atoms.positions).all():  # keep the offending frame to inspect
                append_frame(trajectory, _snapshot(atoms, step, time_fs))
            raise MDBlowUpError(problem)
        if dyn.nsteps > 0:
            bar.update(1)
        if step % log_interval == 0 and not (dyn.nsteps == 0 and restart):
            row: dict[str, float] = {
                "step": step, "time_ps": time_fs / 1000.0, "epot_eV": epot,
                "ekin_eV": ekin, "etot_eV": epot + ekin, "temperature_K": temperature,
                "volume_A3": atoms.get_volume() if periodic else float("nan"),
                "density_g_cm3": density_g_cm3(atoms) if periodic else float("nan"),
                "pressure_bar": _pressure_bar(atoms) if periodic else float("nan"),
            }
            if has_dipole:
                dipole = calculator.results["dipole"]
                row.update(dict(zip(DIPOLE_COLUMNS, map(float, dipole), strict=True)))
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
            log_stream.flush()
            os.fsync(log_stream.fileno())
            result.rows.append(row)
        if step % traj_interval == 0 and not (dyn.nsteps == 0 and restart):
            append_frame(trajectory, _snapshot(atoms, step, time_fs))

    dyn.attach(observe, interval=1)
    try:
        dyn.run(remaining)
    except MDBlowUpError:
        raise
    except (ValueError, FloatingPointError, RuntimeError) as error:
        raise MDBlowUpError(
            f"MD failed after step {state['step']}: {type(error).__name__}: {error}"
        ) from error
    finally:
        bar.close()
        log_stream.close()
    result.steps_done = remaining
    result.last_step = start_step + remaining
    return result
