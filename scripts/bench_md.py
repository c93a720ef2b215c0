r"""MD speed benchmark (not a test): velocity-Verlet steps per second through ASE for a
small molecule (rMD17 ethanol, 9 atoms) and bulk water (the 192-atom DeePMD cell
repeated 4 times per axis, 12,288 atoms), same model shape for every contender
(width 64, 2 interactions, 3 on-site layers, 20 sensitivities, cutoff 5 Å), float32,
untrained weights (speed does not depend on them).

Contenders, each on its own copy of the same start structure and velocities:

- ``HIPNNCalculator``: the eager model, pair search at every step;
- ``ExportedCalculator``: the :mod:`hipnn_pyg.export` program, Verlet list (skin 1 Å),
  for the molecule only (uncompiled, it runs op by op: far slower on bulk water);
- ``ExportedCalculator`` + AOTInductor: the same program compiled ahead of time (the
  compile, once for both systems, is timed separately; ``--no-aoti`` skips it);
- hippynn's ``HippynnCalculator`` (its default 1 Å skin), when hippynn is installed.

Each prints steps/s (median of rounds of steps, after warm-up) and its ratio to
hippynn's; the forces of the exported contenders are checked against the eager
model's first. Run alone or as ``bench_speed.py --sections md``::

    python scripts/bench_md.py [--threads 1] [--water-repeats 4] [--no-aoti]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from hipnn_pyg import ExportedCalculator, HIPNNCalculator
from hipnn_pyg.export import compile_aoti, export_energy_forces, load_exported
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
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
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
    if args.aoti:
        start = time.perf_counter()
        compile_aoti(exported.program, folder / "model_aoti.pt2")
        print(f", AOTInductor compile {time.perf_counter() - start:.1f} s", end="")
        contenders["ExportedCalculator + AOTI"] = lambda: ExportedCalculator(
            exported, aoti_package=folder / "model_aoti.pt2", skin=1.0)
    print()
    if same_loop.hippynn_available():
        peer, _ = same_loop.hippynn_model(0, SHAPE)
        _shrink_energy(peer.energy_node.torch_module)
        contenders["hippynn (peer)"] = lambda: hippynn_calculator(peer)
    for name, atoms in systems.items():
        steps = args.steps if len(atoms) < 1000 else max(1, args.steps // 100)
        reference = atoms.copy()
        reference.calc = HIPNNCalculator(ours, dtype=torch.float32)
        forces = reference.get_forces()
        # The uncompiled program runs op by op, S scatter-adds per layer: minutes per
        # step for bulk water; it is left to its AOTInductor build there.
        calculators = {label: make() for label, make in contenders.items()
                       if len(atoms) < 1000 or label != "ExportedCalculator"}
        deviations = {}
        for label, calculator in calculators.items():
            probe = atoms.copy()
            probe.calc = calculator
            deviations[label] = float(np.abs(probe.get_forces() - forces).max())
        rates = md_rates(atoms, calculators, steps, args.rounds)
        peer_rate = rates.get("hippynn (peer)")
        print(f"  {name} ({len(atoms)} atoms), {steps} steps x {args.rounds} rounds:")
        for label in calculators:
            ratio = f"{rates[label] / peer_rate:5.2f}x hippynn's" if peer_rate else ""
            check = ("(other weights)" if label == "hippynn (peer)"
                     else f"max |F - F_eager| {deviations[label]:.1e} eV/Å")
            print(f"    {label:28s} {rates[label]:9.2f} steps/s  {ratio}  {check}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100,
                        help="steps per round for ethanol (water: a hundredth, at least 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--water-repeats", type=int, default=4)
    parser.add_argument("--no-aoti", dest="aoti", action="store_false",
                        help="skip the AOTInductor contender (its compile takes minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
