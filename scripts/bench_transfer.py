r"""Transfer-learning benchmark (not a test): PBE → CCSD(T) on ethanol, ANI-1ccx style.

1. Pretrain HIP-NN on rMD17 ethanol (PBE/def2-SVP energies and forces, official split 01,
   shipped in ``data/rmd17_ethanol``) with ``experiment=rmd17_ethanol_quick``: the README's
   main job (a finished run copied to ``<output>/pretrain`` is reused).
2. Split the 200 shipped CCSD(T)/cc-pVDZ energies (``data/ethanol_ccsdt``) once: 50 test,
   25 validation, 125 for training; for each n in ``--sizes`` the first n of those.
3. For each n: fine-tune the pretrained model with each freeze preset
   (``experiment=ethanol_ccsdt_finetune finetune.freeze=<preset>``), train the same
   architecture from scratch on the same n energies, and take the pretrained model as it
   is with its self-energies refitted (zero-shot). Every training run gets the same number
   of optimizer steps and runs the real ``scripts/train.py``.
4. Report, per model: CCSD(T) energy MAE (meV) on the 50 test frames and, as a sanity
   check of the forces (none are trained on here), the force MAE (meV/Å) against the PBE
   forces of rMD17 test frames. Writes ``bench_transfer.json``, ``bench_transfer.md`` and
   a plot of test MAE against n; a rerun skips the runs already finished.

Example::

    python scripts/bench_transfer.py --output logs/bench_transfer \
        --figure docs/figures/transfer_ccsdt.png
"""

from __future__ import annotations

import argparse
import json
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
CCSDT = ROOT / "data" / "ethanol_ccsdt" / "ethanol_ccsdt.extxyz"
PBE_TEST = ROOT / "data" / "rmd17_ethanol" / "rmd17_ethanol_test_01.npz"
NUM_TEST, NUM_VAL = 50, 25


def run_train(folder: Path, overrides: list[str], log: Path) -> float:
    r"""``scripts/train.py`` with ``overrides`` into ``folder`` (skipped when its
    ``model.pt`` exists); returns the wall time (0 when skipped)."""
    if (folder / "model.pt").is_file() and (folder / "results.json").is_file():
        return 0.0
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides,
               f"hydra.run.dir={folder}", "callbacks.progress_bar.refresh_rate=0",
               "trainer.enable_model_summary=false", "resume=true"]
    start = time.perf_counter()
    with log.open("a") as stream:
        stream.write(f"\n$ {' '.join(command)}\n")
        stream.flush()
        subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


@torch.no_grad()
def energy_mae(model: torch.nn.Module, dataset: ASEDataset) -> float:
    batch = dataset.gather(range(len(dataset)))
    energy = predict(model, batch, compute_forces=False)["energy"].double()
    return float((energy - batch.energy.double()).abs().mean()) * 1000


def forces_mae(model: torch.nn.Module, dataset: RMD17Dataset) -> float:
    batch = dataset.gather(range(len(dataset)))
    forces = predict(model, batch, compute_forces=True)["forces"].detach()
    return float((forces - batch.forces).abs().mean()) * 1000


def plot(rows: list[dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        style = "--" if method in ("scratch", "zero-shot") else "-"
        for axis, key in zip(axes, ("energy_mae_meV", "pbe_forces_mae_meV_per_A"), strict=True):
            axis.plot([r["n"] for r in mine], [r[key] for r in mine], style, marker="o",
                      label=method)
    axes[0].set(xlabel="CCSD(T) training energies n", ylabel="test energy MAE (meV)",
                yscale="log", title=f"CCSD(T)/cc-pVDZ, {NUM_TEST} test frames")
    axes[1].set(xlabel="CCSD(T) training energies n", ylabel="force MAE vs PBE (meV/Å)",
                yscale="log", title="forces (not trained here) vs PBE, rMD17 test")
    for axis in axes:
        axis.set_xticks(sizes)
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "logs" / "bench_transfer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 125])
    parser.add_argument("--presets", nargs="+", default=list(FREEZE_PRESETS))
    parser.add_argument("--pretrain-epochs", type=int, default=100,
                        help="epochs of the pretraining (100: the README main job)")
    parser.add_argument("--steps", type=int, default=1500,
                        help="optimizer steps of every fine-tuning and scratch run")
    parser.add_argument("--pbe-frames", type=int, default=200,
                        help="rMD17 test frames for the force sanity check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=None, help="also copy the plot here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"

    pretrain = out / "pretrain"
    seconds = run_train(pretrain, ["experiment=rmd17_ethanol_quick",
                                   f"trainer.max_epochs={args.pretrain_epochs}"], log)
    print(f"pretrained on rMD17 ethanol (PBE): {pretrain / 'model.pt'} ({seconds:.0f} s)")

    ccsdt = ASEDataset(CCSDT)
    order = np.random.default_rng(args.seed).permutation(len(ccsdt))
    test, val = order[:NUM_TEST], order[NUM_TEST:NUM_TEST + NUM_VAL]
    pool = order[NUM_TEST + NUM_VAL:]
    test_set = ccsdt[torch.as_tensor(test)]
    pbe = RMD17Dataset(PBE_TEST)
    pbe_set = pbe[torch.linspace(0, len(pbe) - 1, args.pbe_frames).long()]
    common = ["experiment=ethanol_ccsdt_finetune", f"data.num_val={NUM_VAL}",
              f"data.num_test={NUM_TEST}", "trainer.max_epochs=100000",
              f"+trainer.max_steps={args.steps}", f"seed={args.seed}"]
    scratch_model = ["finetune.required=false", "model=hipnn_small",
                     "model.representation.species=[1,6,8]",
                     "model.representation.hidden_channels=64"]

    rows: list[dict] = []
    pretrained = load_model(pretrain / "model.pt")
    reference = {"method": "pretrained (PBE)", "pbe_forces_mae_meV_per_A":
                 forces_mae(pretrained, pbe_set)}
    for n in args.sizes:
        if n > len(pool):
            raise SystemExit(f"--sizes: at most {len(pool)} training frames, got {n}")
        split_file = out / "splits" / f"n{n}.npz"
        split_file.parent.mkdir(exist_ok=True)
        save_split(split_file, Split(pool[:n], val, test), len(ccsdt), args.seed)
        data = [f"data.num_train={n}", f"data.split_file={split_file}"]
        runs = {f"finetune:{preset}": [f"finetune.from={pretrain / 'model.pt'}",
                                       f"finetune.freeze={preset}"] for preset in args.presets}
        runs["scratch"] = scratch_model
        for method, overrides in runs.items():
            folder = out / f"n{n}" / method.replace(":", "_")
            seconds = run_train(folder, [*common, *data, *overrides], log)
            model = load_model(folder / "model.pt")
            summary = json.loads((folder / "results.json").read_text())
            rows.append({"n": n, "method": method, "energy_mae_meV": energy_mae(model, test_set),
                         "pbe_forces_mae_meV_per_A": forces_mae(model, pbe_set),
                         "frozen": summary.get("finetune", {}).get("frozen", 0),
                         "wall_s": seconds})
            print(f"n={n:4d} {method:26s} E {rows[-1]['energy_mae_meV']:7.2f} meV  "
                  f"F(PBE) {rows[-1]['pbe_forces_mae_meV_per_A']:7.1f} meV/Å  ({seconds:.0f} s)",
                  flush=True)
        zero_shot = load_model(pretrain / "model.pt")
        refit_self_energies(zero_shot, ccsdt[torch.as_tensor(pool[:n])])
        save_model(zero_shot, out / f"n{n}" / "zero_shot.pt")
        rows.append({"n": n, "method": "zero-shot", "energy_mae_meV": energy_mae(zero_shot,
                     test_set), "pbe_forces_mae_meV_per_A": forces_mae(zero_shot, pbe_set),
                     "frozen": 0, "wall_s": 0.0})
        (out / "bench_transfer.json").write_text(json.dumps(
            {"rows": rows, "reference": reference, "args": {k: str(v) for k, v in
                                                            vars(args).items()}}, indent=2))

    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = [f"CCSD(T)/cc-pVDZ ethanol: test energy MAE (meV) on {NUM_TEST} held-out frames / "
             f"force MAE (meV/Å) against PBE on {args.pbe_frames} rMD17 test frames; "
             f"{args.steps} optimizer steps per run; pretrained model alone: "
             f"F(PBE) {reference['pbe_forces_mae_meV_per_A']:.1f} meV/Å.", "",
             "| n | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for n in args.sizes:
        by_method = {r["method"]: r for r in rows if r["n"] == n}
        lines.append(f"| {n} | " + " | ".join(
            f"{by_method[m]['energy_mae_meV']:.2f} / {by_method[m]['pbe_forces_mae_meV_per_A']:.0f}"
            for m in methods) + " |")
    def best(n: int, prefix: str) -> float:
        return min(r["energy_mae_meV"] for r in rows if r["n"] == n
                   and r["method"].startswith(prefix))

    wins = [n for n in args.sizes if best(n, "finetune") < best(n, "scratch")]
    lines += ["", f"best fine-tuning preset beats training from scratch at n = {wins} "
              f"of {args.sizes}; total wall time {(time.perf_counter() - start) / 60:.1f} min"]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "bench_transfer.md").write_text(table + "\n")
    plot(rows, args.sizes, out / "bench_transfer.png")
    if args.figure:
        plot(rows, args.sizes, args.figure)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
