r"""Physics benchmark of the charge head and the MD tools (a benchmark, not a test).

1. Ethanol: labels rMD17 ethanol geometries with GFN2-xTB (``hipnn-label``), trains a
   joint energy/force/dipole :class:`~hipnn_pyg.nn.HIPNNPotential`
   (``experiment=ethanol_gfn2_dipole``), and reports on held-out rMD17 test geometries
   the dipole MAE in Debye; then harmonic IR frequencies of model and GFN2 (each at its
   own minimum) with mode-by-mode differences in cm⁻¹, and IR spectra from 300 K MD
   dipole time series of both.
2. Water: trains a small HIP-NN on the DeePMD 64-molecule water frames
   (``experiment=water_deepmd``), runs isotropic MTK NPT at 300 K and 1 bar, and reports
   the equilibrium density with a block-averaging error bar.

Everything goes to ``--out`` (default ``bench/physics``): labelled data, training runs,
``results.json`` and the PNG plots. Reruns reuse finished labels and trained models.
Defaults fit in about 20 minutes on two shared CPU cores; ``--quick`` is a 3-minute
smoke run whose numbers mean nothing.

    python scripts/bench_physics.py
    python scripts/bench_physics.py --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tblite and small models: one thread

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.units import Debye  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HIPNN_DATA_DIR", REPO.parent / "shared" / "data"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train(run_dir: Path, overrides: list[str]) -> Path:
    r"""``scripts/train.py`` in a subprocess; returns its ``model.pt`` (reused if there)."""
    model = run_dir / "model.pt"
    if model.is_file():
        log(f"reusing {model}")
        return model
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *overrides,
               f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null",
               "trainer.enable_progress_bar=false", "callbacks.model_summary=null",
               "trainer.enable_model_summary=false"]
    log("training: " + " ".join(command[2:]))
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.stdout", "w") as stream:
        subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO)
    return model


def ethanol(out: Path, args: argparse.Namespace, results: dict) -> None:
    from ase import Atoms

    from hipnn_pyg.calculator import HIPNNCalculator
    from hipnn_pyg.data.ase_dataset import ASEDataset
    from hipnn_pyg.label import label, make_calculator
    from hipnn_pyg.md import harmonic_ir, ir_from_dipoles, run_md
    from hipnn_pyg.md.ir import compare_modes, dipoles_from_log, plot_ir
    from hipnn_pyg.nn import predict
    from hipnn_pyg.serialization import load_model

    train_npz = DATA / "rmd17" / "rmd17_ethanol_train_01.npz"
    test_npz = DATA / "rmd17" / "rmd17_ethanol_test_01.npz"
    train_xyz = out / "data" / "ethanol_gfn2_train.extxyz"
    test_xyz = out / "data" / "ethanol_gfn2_test.extxyz"
    start = time.time()
    label(train_npz, train_xyz, "gfn2", index=f":{args.ethanol_train}", progress=False)
    label(test_npz, test_xyz, "gfn2", index="::5", progress=False)
    log(f"GFN2 labels: {args.ethanol_train} train + 200 test frames in {time.time() - start:.0f} s")

    model_path = train(out / "ethanol_run", [
        "experiment=ethanol_gfn2_dipole", f"data.path={train_xyz}", f"data.test_path={test_xyz}",
        f"data.num_train={args.ethanol_train - 50}", "data.num_val=50", "data.num_test=null",
        "model.representation.hidden_channels=48", f"trainer.max_epochs={args.ethanol_epochs}",
        f"+trainer.max_time=00:00:{args.ethanol_minutes:02d}:00", "test=false",
    ])
    model = load_model(model_path).double()

    # --- dipole, energy and force errors on the held-out test geometries
    from torch_geometric.loader import DataLoader

    test = ASEDataset(test_xyz)
    errors = {"dipole": [], "dipole_magnitude": [], "energy": [], "forces": []}
    for batch in DataLoader(test, batch_size=50):
        batch.pos = batch.pos.double()
        out_ = predict(model, batch)
        errors["dipole"].append((out_["dipole"] - batch.dipole.double()).abs().detach())
        errors["dipole_magnitude"].append(
            (out_["dipole_magnitude"] - batch.dipole.double().norm(dim=-1)).abs().detach())
        errors["energy"].append((out_["energy"] - batch.energy.double()).detach())
        errors["forces"].append((out_["forces"] - batch.forces.double()).abs().detach())
    energy_error = torch.cat(errors["energy"])
    metrics = {
        "dipole_component_mae_D": float(torch.cat(errors["dipole"]).mean()) / Debye,
        "dipole_magnitude_mae_D": float(torch.cat(errors["dipole_magnitude"]).mean()) / Debye,
        "mean_dipole_D": float(torch.cat([d.dipole for d in DataLoader(test, 200)]).norm(
            dim=-1).mean()) / Debye,
        # the self-energy fit is degenerate for one composition: report the centred MAE too
        "energy_mae_meV": 1000 * float(energy_error.abs().mean()),
        "energy_mae_centred_meV": 1000 * float((energy_error - energy_error.mean()).abs().mean()),
        "forces_mae_meV_per_A": 1000 * float(torch.cat(errors["forces"]).mean()),
        "num_test": len(test),
    }
    results["ethanol"] = metrics
    log(f"ethanol test ({len(test)} rMD17 test geometries, GFN2 labels): dipole MAE "
        f"{metrics['dipole_component_mae_D']:.3f} D per component, |mu| MAE "
        f"{metrics['dipole_magnitude_mae_D']:.3f} D (mean |mu| {metrics['mean_dipole_D']:.2f} D); "
        f"forces MAE {metrics['forces_mae_meV_per_A']:.1f} meV/Å; energy MAE (centred) "
        f"{metrics['energy_mae_centred_meV']:.1f} meV")

    # --- harmonic IR, each method at its own minimum
    with np.load(train_npz) as npz:
        start_atoms = Atoms(numbers=npz["nuclear_charges"], positions=npz["coords"][0])
    gfn2 = make_calculator("gfn2")
    calc = HIPNNCalculator(model)
    reference = harmonic_ir(start_atoms, gfn2)
    predicted = harmonic_ir(reference.atoms, calc)
    difference = compare_modes(predicted, reference)
    results["harmonic_ir"] = {
        "gfn2_cm1": reference.frequencies.round(1).tolist(),
        "model_cm1": predicted.frequencies.round(1).tolist(),
        "difference_cm1": difference.round(1).tolist(),
        "mae_cm1": float(np.abs(difference).mean()),
        "gfn2_strongest_cm1": reference.strongest(5).round(1).tolist(),
        "model_strongest_cm1": predicted.strongest(5).round(1).tolist(),
    }
    log("harmonic IR (cm⁻¹), mode: GFN2 / model / difference")
    for k, (a, b, d) in enumerate(zip(reference.frequencies, predicted.frequencies,
                                      difference, strict=True)):
        print(f"    {k + 1:2d}: {a:7.1f} {b:7.1f} {d:+7.1f}")
    log(f"harmonic frequency MAE {results['harmonic_ir']['mae_cm1']:.1f} cm⁻¹")
    plot_ir(out / "ethanol_ir_harmonic.png",
            {"HIP-NN harmonic": predicted.spectrum(), "GFN2-xTB harmonic": reference.spectrum()},
            sticks={"HIP-NN": predicted, "GFN2-xTB": reference},
            title="Ethanol harmonic IR: HIP-NN (top) vs GFN2-xTB (mirrored)")

    # --- IR from 300 K MD dipole time series (NVE after a 2x Maxwell-Boltzmann start)
    spectra = {}
    for name, calculator in (("HIP-NN", calc), ("GFN2-xTB", gfn2)):
        md_log = out / f"ethanol_md_{name.lower().replace('-', '')}.csv"
        run_md(reference.atoms, calculator, "nve", steps=args.ir_steps, timestep_fs=0.5,
               temperature_K=300, initial_temperature_K=600, log=md_log,
               trajectory=md_log.with_suffix(".extxyz"), log_interval=1, traj_interval=100,
               seed=1, progress=False)
        time_ps, dipoles = dipoles_from_log(md_log)
        spectra[f"{name} MD 300 K"] = ir_from_dipoles(dipoles, 1000 * (time_ps[1] - time_ps[0]),
                                                       correlation_fs=args.ir_correlation_fs,
                                                       resolution_cm1=4.0)
    peaks = {name: s.peaks(prominence=0.05).round(0).tolist() for name, s in spectra.items()}
    results["md_ir_peaks_cm1"] = peaks
    for name, values in peaks.items():
        log(f"{name} IR peaks (cm⁻¹): {values}")
    plot_ir(out / "ethanol_ir_md.png", spectra,
            title=f"Ethanol IR from {args.ir_steps * 0.5 / 1000:.1f} ps NVE dipoles "
                  "(harmonic quantum correction)")


def water(out: Path, args: argparse.Namespace, results: dict) -> None:
    import ase.io

    from hipnn_pyg.calculator import HIPNNCalculator
    from hipnn_pyg.md import run_md
    from hipnn_pyg.md.density import equilibrium_density, plot_density

    model_path = train(out / "water_run", [
        "experiment=water_deepmd", "model=hipnn_small", "model.representation.species=[1,8]",
        "model.representation.hidden_channels=32", "model.representation.num_atom_layers=2",
        "model.representation.sensitivity.num_sensitivities=16",
        f"model.representation.sensitivity.cutoff={args.water_cutoff}",
        f"model.representation.sensitivity.soft_max_distance={args.water_cutoff - 0.5}",
        "+num_threads=2",
        f"trainer.max_epochs={args.water_epochs}", "module.optimizer.lr=3.0e-3",
        f"+trainer.max_time=00:00:{args.water_minutes:02d}:00", "test=false",
    ])
    metrics_file = out / "water_run" / "results.json"
    if metrics_file.is_file():
        results["water_training"] = json.loads(metrics_file.read_text())
    atoms = ase.io.read(DATA / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz", index=0)
    atoms.calc = None
    calc = HIPNNCalculator(model_path, dtype=torch.float32)
    steps = int(round(args.npt_ps * 1000 / args.npt_timestep_fs))
    log(f"NPT water: {steps} steps of {args.npt_timestep_fs} fs, {args.barostat} barostat, "
        "300 K, 1 bar")
    start = time.time()
    md_log = out / "water_npt.csv"
    try:
        result = run_md(atoms, calc, "npt", steps=steps, timestep_fs=args.npt_timestep_fs,
                        temperature_K=300, pressure_bar=1.01325, barostat=args.barostat,
                        tdamp_fs=100.0, pdamp_fs=args.pdamp_fs, log=md_log,
                        trajectory=out / "water_npt.extxyz", log_interval=10,
                        traj_interval=200, seed=0, progress=False)
        rows = result.rows
    except Exception as error:  # report what ran; a blow-up is a result too
        log(f"NPT stopped: {error}")
        results["water_npt_error"] = str(error)
        import csv

        with open(md_log, newline="") as stream:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(stream)]
    seconds = time.time() - start
    ms_per_step = 1000 * seconds / max(len(rows) * 10, 1)
    time_ps = np.array([r["time_ps"] for r in rows])
    density = np.array([r["density_g_cm3"] for r in rows])
    temperature = np.array([r["temperature_K"] for r in rows])
    equilibration = args.npt_equilibration_ps
    average = equilibrium_density(time_ps, density, equilibration, num_blocks=5)
    keep = time_ps >= equilibration
    results["water_density"] = {
        "density_g_cm3": average.mean, "error_g_cm3": average.error,
        "num_blocks": average.num_blocks,
        "block_ps": float(average.block_size * (time_ps[1] - time_ps[0])),
        "equilibration_ps": equilibration, "simulated_ps": float(time_ps[-1]),
        "mean_temperature_K": float(temperature[keep].mean()),
        "start_density_g_cm3": float(density[0]), "ms_per_step": ms_per_step,
    }
    log(f"water density {average.mean:.3f} ± {average.error:.3f} g/cm³ (block average, "
        f"{average.num_blocks} blocks after {equilibration} ps of {time_ps[-1]:.2f} ps; "
        f"<T> = {temperature[keep].mean():.0f} K; start {density[0]:.3f}); "
        f"{ms_per_step:.0f} ms/step")
    plot_density(time_ps, density, out / "water_density.png", average, equilibration,
                 reference=0.997, title="HIP-NN water, NPT 300 K, 1 bar (exp. 0.997)")


def copper(out: Path, args: argparse.Namespace, results: dict) -> None:
    r"""Checks the NPT/density tooling with a cheap physical potential: fcc Cu with ASE's
    EMT at 300 K and 1 bar, against EMT's own 0 K density (relaxed lattice)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.filters import UnitCellFilter
    from ase.optimize import BFGS

    from hipnn_pyg.md import run_md
    from hipnn_pyg.md.density import density_g_cm3, equilibrium_density, plot_density

    cold = bulk("Cu", "fcc", a=3.6, cubic=True)
    cold.calc = EMT()
    BFGS(UnitCellFilter(cold), logfile=None).run(fmax=1e-4)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((3, 3, 3))  # start 8% too large
    picoseconds = 0.5 if args.quick else 6.0
    result = run_md(atoms, EMT(), "npt", steps=int(picoseconds * 500), timestep_fs=2.0,
                    temperature_K=300, barostat="mtk", tdamp_fs=100.0, pdamp_fs=500.0,
                    log=out / "copper_npt.csv", trajectory=out / "copper_npt.extxyz",
                    log_interval=5, traj_interval=500, progress=False)
    time_ps = np.array([r["time_ps"] for r in result.rows])
    density = np.array([r["density_g_cm3"] for r in result.rows])
    average = equilibrium_density(time_ps, density, picoseconds / 3, num_blocks=5)
    results["copper_emt_density"] = {"density_g_cm3": average.mean, "error_g_cm3": average.error,
                                     "emt_0K_density_g_cm3": density_g_cm3(cold)}
    log(f"Cu EMT NPT 300 K: {average.mean:.3f} ± {average.error:.3f} g/cm³ "
        f"(EMT 0 K: {density_g_cm3(cold):.3f}; thermal expansion lowers it slightly)")
    plot_density(time_ps, density, out / "copper_density.png", average, picoseconds / 3,
                 reference=density_g_cm3(cold), title="Cu (EMT) NPT 300 K, 1 bar; ref: 0 K",
                 label="EMT NPT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "physics")
    parser.add_argument("--quick", action="store_true", help="3-minute smoke run")
    parser.add_argument("--skip-ethanol", action="store_true")
    parser.add_argument("--skip-water", action="store_true")
    parser.add_argument("--ethanol-train", type=int, default=1000)
    parser.add_argument("--ethanol-epochs", type=int, default=300)
    parser.add_argument("--ethanol-minutes", type=int, default=6)
    parser.add_argument("--ir-steps", type=int, default=8000)
    parser.add_argument("--ir-correlation-fs", type=float, default=1000.0)
    parser.add_argument("--water-epochs", type=int, default=100)
    parser.add_argument("--water-minutes", type=int, default=9)
    parser.add_argument("--npt-ps", type=float, default=3.0)
    parser.add_argument("--npt-timestep-fs", type=float, default=0.5)
    parser.add_argument("--npt-equilibration-ps", type=float, default=1.0)
    parser.add_argument("--pdamp-fs", type=float, default=500.0)
    parser.add_argument("--barostat", choices=("mtk", "berendsen"), default="mtk")
    parser.add_argument("--water-cutoff", type=float, default=4.5)
    parser.add_argument("--skip-copper", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.ethanol_train, args.ethanol_epochs, args.ethanol_minutes = 200, 3, 1
        args.ir_steps, args.ir_correlation_fs = 1000, 200.0
        args.water_epochs, args.water_minutes = 1, 1
        args.npt_ps, args.npt_equilibration_ps = 0.1, 0.02
    args.out.mkdir(parents=True, exist_ok=True)
    # merge with an earlier run's results (parts can be rerun with --skip-*)
    summary = args.out / "results.json"
    results: dict = json.loads(summary.read_text()) if summary.is_file() else {}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    start = time.time()
    if not args.skip_ethanol:
        ethanol(args.out, args, results)
    if not args.skip_copper:
        copper(args.out, args, results)
    if not args.skip_water:
        water(args.out, args, results)
    results["wall_s"] = time.time() - start
    summary.write_text(json.dumps(results, indent=2))
    log(f"done in {results['wall_s'] / 60:.1f} min; results and plots in {args.out}")


if __name__ == "__main__":
    main()
