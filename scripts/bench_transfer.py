r"""Transfer-learning benchmark (not a test): PBE → CCSD(T) on ethanol, judged on CCSD(T)
energies *and forces* of held-out frames.

1. Pretrain HIP-NN on rMD17 ethanol (PBE/def2-SVP energies and forces, official split 01,
   shipped in ``data/rmd17_ethanol``) with ``experiment=rmd17_ethanol_quick``: the
   README's main job (a finished run in ``<output>/pretrain`` is reused).
2. Split the shipped CCSD(T)/cc-pVDZ frames (``data/ethanol_ccsdt``: 200 energies; the
   first frames of the same order also with CCSD(T) forces) once: the first
   ``--force-test`` frames with forces are the force test set, the other frames with
   forces the force pool (but 3 more validation frames for the runs that train forces);
   of the energy-only frames, 50 more test frames, 20 validation frames and the energy
   pool. A training set of size n takes the force pool first,
   then the energy pool.
3. For each n: zero-shot (the pretrained model, self-energies refitted); fine-tuning on
   the n energies with each freeze preset (``experiment=ethanol_ccsdt_finetune``);
   fine-tuning on energies and the forces the n frames have; multi-fidelity joint
   training (``finetune.levels=[pbe,ccsdt]``: the PBE head keeps training on 200 rMD17
   frames while the CCSD(T) head learns); Δ-learning (``finetune.delta``: the
   pretrained model frozen, a small HIP-NN of the difference); and the same
   architecture from scratch on the n frames. Every training run gets the same number
   of optimizer steps and runs the real ``scripts/train.py``.
4. Report per model: CCSD(T) energy MAE and offset-free MAE (meV) on the energy test
   frames, CCSD(T) force MAE (meV/Å) on the force test frames, and, as a side column,
   the force MAE against PBE on rMD17 test frames. Writes ``bench_transfer.json``,
   ``bench_transfer.md`` and a plot; a rerun skips the runs already finished.

Example::

    python scripts/bench_transfer.py --output logs/bench_transfer \
        --figure docs/figures/transfer_ccsdt.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hipnn_pyg.data import ASEDataset, RMD17Dataset
from hipnn_pyg.data.splits import Split, save_split
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import load_model, save_model
from hipnn_pyg.train.finetune import FREEZE_PRESETS
from hipnn_pyg.train.resolvers import repo_root
from hipnn_pyg.train.self_energy import refit_self_energies

ROOT = repo_root()
ENERGIES = ROOT / "data" / "ethanol_ccsdt" / "ethanol_ccsdt.extxyz"
FORCES = ROOT / "data" / "ethanol_ccsdt" / "ethanol_ccsdt_forces.extxyz"
PBE_TRAIN = ROOT / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz"
PBE_TEST = ROOT / "data" / "rmd17_ethanol" / "rmd17_ethanol_test_01.npz"
NUM_ENERGY_TEST, NUM_VAL, FORCE_VAL = 50, 20, 3
DELTA = ("{hidden_channels: 16, num_interactions: 1, num_atom_layers: 1, "
         "num_sensitivities: 8, soft_max_distance: 5.0, cutoff: 5.5}")


def run_train(folder: Path, overrides: list[str], log: Path, conf: Path | None = None) -> float:
    r"""``scripts/train.py`` with ``overrides`` into ``folder`` (skipped when its
    ``model.pt`` exists); returns the wall time (0 when skipped)."""
    if (folder / "model.pt").is_file() and (folder / "results.json").is_file():
        return 0.0
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides,
               f"hydra.run.dir={folder}", "trainer.enable_progress_bar=false",
               "trainer.enable_model_summary=false", "resume=true"]
    if conf is not None:
        command.append(f"hydra.searchpath=[file://{conf}]")
    start = time.perf_counter()
    with log.open("a") as stream:
        stream.write(f"\n$ {' '.join(command)}\n")
        stream.flush()
        subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def level_yaml(path: Path, split: Split, split_file: Path, forces: bool) -> str:
    sizes = f"    num_train: {len(split.train)}\n    num_val: {len(split.val)}\n" \
            f"    num_test: {len(split.test)}\n"
    return (f"  - _target_: hipnn_pyg.data.HIPNNDataModule\n    path: {path}\n"
            f"    format: ase\n    split_file: {split_file}\n{sizes}"
            f"    require_forces: {str(forces).lower()}\n")


def write_data_configs(conf: Path, n: int, forces_file: Path,
                       split_forces: tuple[Split, Path],
                       split_energies: tuple[Split, Path]) -> None:
    r"""Data configs of size n: the CCSD(T) frames with forces where they have them
    (one level, two files), alone (``ccsdt_n<n>``) and beside 200 rMD17 PBE frames
    (``multifidelity_n<n>``)."""
    folder = conf / "data"
    folder.mkdir(parents=True, exist_ok=True)
    ccsdt = ("  ccsdt:\n" + level_yaml(forces_file, *split_forces, True)
             + level_yaml(ENERGIES, *split_energies, False))
    head = ("_target_: hipnn_pyg.data.MultiFidelityDataModule\nbatch_size: 8\n"
            "val_batch_size: 50\nlevels:\n")
    (folder / f"ccsdt_n{n}.yaml").write_text(head + ccsdt)
    pbe = (f"  pbe:\n    _target_: hipnn_pyg.data.HIPNNDataModule\n    path: {PBE_TRAIN}\n"
           "    format: rmd17\n    num_train: 200\n    num_val: 20\n    num_test: 0\n"
           "    seed: 0\n    require_forces: true\n")
    (folder / f"multifidelity_n{n}.yaml").write_text(
        head.replace("batch_size: 8", "batch_size: 16") + pbe + ccsdt)


def errors(model: torch.nn.Module, energy_test, force_test, pbe_test) -> dict[str, float]:
    r"""CCSD(T) energy MAE and offset-free MAE (meV), CCSD(T) force MAE and PBE force
    MAE (meV/Å)."""
    def run(dataset, forces: bool):
        batch = dataset.gather(range(len(dataset)))
        out = predict(model, batch, compute_forces=forces)
        return out, batch

    out, batch = run(energy_test, False)
    residual = (out["energy"].detach().double() - batch.energy.double())
    result = {"energy_mae_meV": float(residual.abs().mean()) * 1000,
              "energy_mae_offset_free_meV": float((residual - residual.mean()).abs().mean())
              * 1000}
    out, batch = run(force_test, True)
    result["ccsdt_forces_mae_meV_per_A"] = float(
        (out["forces"].detach() - batch.forces).abs().mean()) * 1000
    out, batch = run(pbe_test, True)
    result["pbe_forces_mae_meV_per_A"] = float(
        (out["forces"].detach() - batch.forces).abs().mean()) * 1000
    return result


def plot(rows: list[dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        style = "--" if method in ("scratch", "zero-shot") else "-"
        for axis, key in zip(axes, ("energy_mae_offset_free_meV", "ccsdt_forces_mae_meV_per_A"),
                             strict=True):
            axis.plot([r["n"] for r in mine], [r[key] for r in mine], style, marker="o",
                      label=method)
    axes[0].set(xlabel="CCSD(T) training frames n", ylabel="energy MAE, offset-free (meV)",
                yscale="log", title="CCSD(T)/cc-pVDZ energies, held-out frames")
    axes[1].set(xlabel="CCSD(T) training frames n", ylabel="force MAE (meV/Å)",
                yscale="log", title="CCSD(T)/cc-pVDZ forces, held-out frames")
    for axis in axes:
        axis.set_xticks(sizes)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "logs" / "bench_transfer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--presets", nargs="+", default=list(FREEZE_PRESETS))
    parser.add_argument("--force-test", type=int, default=10,
                        help="frames with CCSD(T) forces held out for the force test")
    parser.add_argument("--pretrain-epochs", type=int, default=100,
                        help="epochs of the pretraining (100: the README main job)")
    parser.add_argument("--steps", type=int, default=1500,
                        help="optimizer steps of every training run")
    parser.add_argument("--pbe-frames", type=int, default=200,
                        help="rMD17 test frames for the PBE force column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=None, help="also copy the plot here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log, conf = out / "train.log", out / "conf"

    pretrain = out / "pretrain"
    seconds = run_train(pretrain, ["experiment=rmd17_ethanol_quick",
                                   f"trainer.max_epochs={args.pretrain_epochs}"], log)
    print(f"pretrained on rMD17 ethanol (PBE): {pretrain / 'model.pt'} ({seconds:.0f} s)")

    # the forces file grows while its labelling runs: the benchmark keeps the frames it
    # first saw, so a rerun's splits and data configs match the finished runs
    forces_file = out / "ccsdt_forces_snapshot.extxyz"
    if not forces_file.is_file():
        shutil.copyfile(FORCES, forces_file)
    energies, forces = ASEDataset(ENERGIES), ASEDataset(forces_file)
    num_forces = len(forces)  # frames 0 .. K-1 of the energy file, with forces
    if num_forces <= args.force_test + FORCE_VAL:
        raise SystemExit(f"{FORCES} has {num_forces} frames: not more than --force-test "
                         f"+ {FORCE_VAL}")
    force_test = torch.arange(args.force_test)
    # the runs that train forces validate on a few frames with forces too
    force_val = np.arange(args.force_test, args.force_test + FORCE_VAL)
    force_pool = np.arange(args.force_test + FORCE_VAL, num_forces)
    rest = np.random.default_rng(args.seed).permutation(np.arange(num_forces, len(energies)))
    energy_test = rest[:NUM_ENERGY_TEST]
    val = rest[NUM_ENERGY_TEST:NUM_ENERGY_TEST + NUM_VAL]
    energy_pool = rest[NUM_ENERGY_TEST + NUM_VAL:]
    test_energies = energies[torch.as_tensor(np.concatenate([energy_test,
                                                             force_test.numpy()]))]
    test_forces = forces[force_test]
    pbe = RMD17Dataset(PBE_TEST)
    pbe_test = pbe[torch.linspace(0, len(pbe) - 1, args.pbe_frames).long()]
    steps = ["trainer.max_epochs=100000", f"+trainer.max_steps={args.steps}",
             f"seed={args.seed}"]
    model_pt = pretrain / "model.pt"
    # the recipe of experiment=ethanol_ccsdt_finetune, with energies and forces
    with_forces = ["callbacks=[default,ema]", "callbacks.ema.decay=0.99", "num_threads=1",
                   "module.optimizer.lr=1e-3", "module.scheduler.factor=0.5",
                   "module.scheduler.patience=10", "module.scheduler.min_lr=1e-5",
                   "module.loss_weights.energy=1.0", "module.loss_weights.forces=10.0"]
    scratch_model = ["model=hipnn_small", "model.representation.species=[1,6,8]",
                     "model.representation.hidden_channels=64"]

    rows: list[dict] = []
    reference = {"method": "pretrained (PBE)", **errors(load_model(model_pt), test_energies,
                                                         test_forces, pbe_test)}
    print(f"pretrained (PBE), no transfer: {reference}")
    for n in args.sizes:
        from_forces = force_pool[:n]
        from_energies = energy_pool[:max(0, n - len(from_forces))]
        if len(from_forces) + len(from_energies) < n:
            raise SystemExit(f"--sizes: at most {len(force_pool) + len(energy_pool)} frames")
        splits = out / "splits"
        splits.mkdir(exist_ok=True)
        # the energy file holds every frame (forces-file frame k is its frame k)
        train_all = np.concatenate([from_forces, from_energies])
        save_split(splits / f"n{n}_energies_only.npz", Split(train_all, val, val),
                   len(energies), args.seed)
        parts = {"forces": (Split(from_forces, force_val, force_val), len(forces)),
                 "energies": (Split(from_energies, val, val), len(energies))}
        for name, (split, size) in parts.items():
            save_split(splits / f"n{n}_{name}.npz", split, size, args.seed)
        write_data_configs(conf, n, forces_file,
                           (parts["forces"][0], splits / f"n{n}_forces.npz"),
                           (parts["energies"][0], splits / f"n{n}_energies.npz"))
        energy_only = ["experiment=ethanol_ccsdt_finetune", f"data.path={ENERGIES}",
                       f"data.split_file={splits / f'n{n}_energies_only.npz'}",
                       f"data.num_train={n}", f"data.num_val={NUM_VAL}",
                       f"data.num_test={NUM_VAL}"]
        runs: dict[str, list[str]] = {
            f"finetune:{preset} (E)": [*energy_only, f"finetune.from={model_pt}",
                                       f"finetune.freeze={preset}"] for preset in args.presets}
        runs["finetune:none (E+F)"] = [f"data=ccsdt_n{n}", f"finetune.from={model_pt}",
                                       *with_forces]
        runs["multi-fidelity (E+F, PBE replay)"] = [
            f"data=multifidelity_n{n}", f"finetune.from={model_pt}",
            "finetune.levels=[pbe,ccsdt]", "module.level_weights={pbe: 1.0, ccsdt: 10.0}",
            *with_forces]
        runs["delta (E+F)"] = [f"data=ccsdt_n{n}", f"finetune.from={model_pt}",
                               f"finetune.delta={DELTA}", *with_forces]
        runs["scratch (E+F)"] = [*scratch_model, f"data=ccsdt_n{n}", *with_forces]
        for method, overrides in runs.items():
            folder = out / f"n{n}" / method.split(" ")[0].replace(":", "_")
            if "(E+F)" in method and "finetune" in method:
                folder = folder.with_name(folder.name + "_forces")
            seconds = run_train(folder, [*overrides, *steps], log, conf)
            model = load_model(folder / "model.pt")
            if getattr(model, "levels", None):
                model.select_level("ccsdt")
            rows.append({"n": n, "method": method, "forces_in_training": len(from_forces)
                         if "E+F" in method else 0,
                         **errors(model, test_energies, test_forces, pbe_test),
                         "wall_s": seconds})
            print(f"n={n:4d} {method:34s} E {rows[-1]['energy_mae_meV']:7.2f} "
                  f"({rows[-1]['energy_mae_offset_free_meV']:6.2f} offset-free) meV  "
                  f"F(CCSD(T)) {rows[-1]['ccsdt_forces_mae_meV_per_A']:6.1f}  "
                  f"F(PBE) {rows[-1]['pbe_forces_mae_meV_per_A']:6.1f} meV/Å  "
                  f"({seconds:.0f} s)", flush=True)
        zero_shot = load_model(model_pt)
        refit_self_energies(zero_shot, energies[torch.as_tensor(train_all)])
        save_model(zero_shot, out / f"n{n}" / "zero_shot.pt")
        rows.append({"n": n, "method": "zero-shot", "forces_in_training": 0,
                     **errors(zero_shot, test_energies, test_forces, pbe_test), "wall_s": 0.0})
        (out / "bench_transfer.json").write_text(json.dumps(
            {"rows": rows, "reference": reference, "args": {k: str(v) for k, v in
                                                            vars(args).items()},
             "test": {"energy_frames": len(test_energies), "force_frames": len(test_forces),
                      "frames_with_forces": num_forces}}, indent=2))

    lines = [f"CCSD(T)/cc-pVDZ ethanol, {len(test_energies)} held-out frames for energies, "
             f"{len(test_forces)} for CCSD(T) forces ({num_forces} frames have CCSD(T) "
             f"forces); {args.steps} optimizer steps per run. Each cell: energy MAE "
             "offset-free / CCSD(T) force MAE / PBE force MAE (meV, meV/Å). PBE model alone: "
             f"{reference['energy_mae_offset_free_meV']:.1f} / "
             f"{reference['ccsdt_forces_mae_meV_per_A']:.0f} / "
             f"{reference['pbe_forces_mae_meV_per_A']:.0f}.", "",
             "| method | " + " | ".join(f"n={n}" for n in args.sizes) + " |",
             "|---|" + "---|" * len(args.sizes)]
    for method in dict.fromkeys(row["method"] for row in rows):
        cells = []
        for n in args.sizes:
            row = next(r for r in rows if r["n"] == n and r["method"] == method)
            cells.append(f"{row['energy_mae_offset_free_meV']:.1f} / "
                         f"{row['ccsdt_forces_mae_meV_per_A']:.0f} / "
                         f"{row['pbe_forces_mae_meV_per_A']:.0f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"total wall time {(time.perf_counter() - start) / 60:.1f} min"]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "bench_transfer.md").write_text(table + "\n")
    plot(rows, args.sizes, out / "bench_transfer.png")
    if args.figure:
        plot(rows, args.sizes, args.figure)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
