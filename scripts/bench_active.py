r"""Active-learning benchmark (not a test): query by committee against random selection
on ethanol with GFN2-xTB (tblite) as the oracle.

Both runs start from the same 20 labelled frames (``active=ethanol_gfn2``), explore the
same way (committee-driven Langevin MD at 300/600/900 K and normal-mode sampling) and
label the same number of frames per round; they differ only in ``selection``: the
``--per-round`` candidates of highest ρ = σ(E)/√N (spread over trajectories; the
selection threshold is 0 so both always take ``--per-round`` frames, while MD stops
at ρ > ``--stop-rho``) against as many drawn at random. Test sets are fixed GFN2-xTB
Langevin MD frames at 300 K and at 600 K that the script makes once (in
``<output>/test_sets``).

Prints, per round and run, the training-set size and the committee's test energy and
force MAE; the frame count at which random first matches AL's final error (or that it
never does within the run); oracle time and total wall time. Writes
``<output>/bench_active.json`` and the learning-curve figure (``--figure``).

Examples::

    python scripts/bench_active.py                       # 6 rounds of 10 frames
    python scripts/bench_active.py --rounds 8 --per-round 20 \
        --figure docs/figures/active_learning.png
    python scripts/bench_active.py --output /tmp/smoke --rounds 2 --per-round 3 \
        --test-frames 5 --md-steps 200 --members 2 --max-epochs 5 \
        active.explorers.md.steps=100 active.explorers.normal_modes.samples=3

Extra ``key=value`` arguments are Hydra overrides of ``conf/active.yaml`` for both runs.
Rerunning the same command continues killed runs (and reuses the test sets).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import open_dict

from hipnn_pyg.active.loop import run_active
from hipnn_pyg.active.report import log_axes
from hipnn_pyg.active.structures import read, write_frames
from hipnn_pyg.active.training import compose
from hipnn_pyg.train.resolvers import repo_root

METHODS = {"qbc": "active learning (QBC)", "random": "random"}
TEMPERATURES = (300, 600)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=repo_root() / "logs" / "bench_active")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--stop-rho", type=float, default=0.002,
                        help="ρ (eV/atom^0.5) that ends an exploration trajectory")
    parser.add_argument("--test-frames", type=int, default=100,
                        help="test frames per temperature")
    parser.add_argument("--md-steps", type=int, default=4000,
                        help="GFN2 MD steps per temperature for the test sets (0.5 fs)")
    parser.add_argument("--members", type=int, default=None,
                        help="committee size (default: the config's, 4)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="training epochs per member and round (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=None,
                        help="also copy the figure here (e.g. docs/figures/active_learning.png)")
    parser.add_argument("--only", choices=list(METHODS), default=None,
                        help="run this selection alone and stop: two such calls can run side "
                             "by side (after the test sets exist); a call without --only then "
                             "reports")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/active.yaml")
    return parser.parse_args()


def make_test_sets(folder: Path, frames: int, steps: int, seed: int) -> dict[str, Path]:
    r"""GFN2-xTB Langevin MD of ethanol at each temperature (made once): the last
    ``frames`` frames, evenly spaced over the second half of the run."""
    from hipnn_pyg.extxyz import read_frames
    from hipnn_pyg.label import make_calculator
    from hipnn_pyg.md.dynamics import run_md

    start = read(repo_root() / "data" / "ethanol_gfn2" / "ethanol_gfn2.extxyz", "-1:")[0]
    paths = {}
    for temperature in TEMPERATURES:
        path = folder / f"md{temperature}.extxyz"
        paths[f"md{temperature}"] = path
        if path.exists():
            continue
        interval = max(steps // (2 * frames), 1)
        trajectory = folder / f"gfn2_md_{temperature}K.extxyz"
        atoms = start.copy()
        atoms.info.clear()
        run_md(atoms, make_calculator("gfn2"), ensemble="nvt_langevin", steps=steps,
               temperature_K=temperature, trajectory=trajectory,
               log=folder / f"gfn2_md_{temperature}K.csv", traj_interval=interval,
               log_interval=interval, seed=seed + temperature, progress=True)
        write_frames(path, read_frames(trajectory)[-frames:])
    return paths


def run(method: str, args: argparse.Namespace, tests: dict[str, Path]) -> float:
    r"""One loop (resumed if its folder exists); returns its wall seconds, summed over
    every call that worked on it."""
    overrides = [
        "active=ethanol_gfn2", f"selection={method}", f"seed={args.seed}",
        f"run_dir={args.output / method}", f"active.max_rounds={args.rounds}",
        f"active.max_selected={args.per_round}", "active.threshold=0.0",
        f"active.explorers.md.stop_threshold={args.stop_rho}",
        *(f"+active.test_sets.{name}={path}" for name, path in tests.items()),
        *args.overrides,
    ]
    cfg = compose("active", overrides)
    with open_dict(cfg):
        if args.members is not None:
            cfg.active.ensemble.size = args.members
        if args.max_epochs is not None:
            cfg.active.ensemble.train_overrides.append(f"trainer.max_epochs={args.max_epochs}")
    start = time.perf_counter()
    run_active(cfg)
    # wall time summed over the calls that worked on this run (a resumed run included)
    ledger = args.output / method / "bench_wall_seconds.json"
    total = json.loads(ledger.read_text())["seconds"] if ledger.exists() else 0.0
    total += time.perf_counter() - start
    ledger.write_text(json.dumps({"seconds": total}))
    return total


def curve(folder: Path) -> list[dict[str, Any]]:
    with open(folder / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    numeric = []
    for row in rows:
        numeric.append({k: (float(v) if v not in ("", None) and k != "stop_reason" else v)
                        for k, v in row.items()})
    return numeric


def add_offset_free_energies(folder: Path, rows: list[dict[str, Any]],
                             tests: dict[str, Path]) -> None:
    r"""Adds ``test_md<T>_energy_mae_offset_free`` to each round's row: the committee-mean
    energy MAE after removing its mean error over the test set. A constant offset moves
    no force and no MD trajectory, but with few frames it can dominate the plain MAE."""
    import torch

    from hipnn_pyg.data import ASEDataset
    from hipnn_pyg.nn.predict import predict
    from hipnn_pyg.serialization import load_model

    batches = {name: ASEDataset(path).gather(range(len(ASEDataset(path))))
               for name, path in tests.items()}
    for row in rows:
        members = sorted((folder / f"round_{int(row['round']):03d}" / "models").glob("*/model.pt"))
        if not members:
            continue
        models = [load_model(path) for path in members]
        for name, batch in batches.items():
            with torch.no_grad():
                energy = torch.stack([predict(m, batch, compute_forces=False)["energy"].double()
                                      for m in models]).mean(0)
            error = energy - batch.energy.double()
            row[f"test_{name}_energy_mae_offset_free"] = float((error - error.mean()).abs().mean())


def first_match(reference: float, rows: list[dict[str, Any]], key: str) -> int | None:
    for row in rows:
        value = row.get(key)
        if isinstance(value, float) and value <= reference:
            return int(row["train_size"])
    return None


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from hipnn_pyg.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(3, 2, figsize=(9, 10), sharex=True)
    for row_axes, key, unit in zip(axes, ("energy_mae", "energy_mae_offset_free", "forces_mae"),
                                   ("meV", "meV", "meV/Å"), strict=True):
        for axis, temperature in zip(row_axes, TEMPERATURES, strict=True):
            for method, rows in curves.items():
                points = [(r["train_size"], 1000 * r[f"test_md{temperature}_{key}"])
                          for r in rows if isinstance(r.get(f"test_md{temperature}_{key}"), float)]
                if points:
                    x, y = zip(*points, strict=True)
                    axis.plot(x, y, "o-", label=METHODS[method])
            axis.set_title(f"GFN2-xTB MD at {temperature} K")
            label = "energy MAE, offset removed" if key.endswith("offset_free") else \
                f"{key.split('_')[0]} MAE"
            axis.set_ylabel(f"test {label} ({unit})")
            log_axes(axis, [r["train_size"] for rows in curves.values() for r in rows])
            axis.legend()
    for axis in axes[-1]:
        axis.set_xlabel("training-set size (frames)")
    fig.suptitle("Ethanol, HIP-NN committee: active learning vs random selection")
    save_figure(fig, path)


def main() -> None:
    args = arguments()
    wall = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    tests = make_test_sets(args.output / "test_sets", args.test_frames, args.md_steps,
                           args.seed)
    seconds = {method: run(method, args, tests)
               for method in ([args.only] if args.only else METHODS)}
    if args.only:
        return
    curves = {method: curve(args.output / method) for method in METHODS}
    for method, rows in curves.items():
        add_offset_free_energies(args.output / method, rows, tests)

    print("\ntest MAE of the committee mean: energy / energy with its mean offset removed "
          "(meV per molecule) / forces (meV/Å)")
    for method, rows in curves.items():
        print(f"{METHODS[method]}:")
        print(f"{'round':>5} {'frames':>6} " + " ".join(f"{'md' + str(t) + ' E / E-offset / F':>28}"
                                                    for t in TEMPERATURES))
        for r in rows:
            cells = [f"{1000 * r[f'test_md{t}_energy_mae']:>8.2f} / "
                     f"{1000 * r.get(f'test_md{t}_energy_mae_offset_free', float('nan')):>7.2f} / "
                     f"{1000 * r[f'test_md{t}_forces_mae']:>7.1f}" for t in TEMPERATURES]
            print(f"{int(r['round']):>5} {int(r['train_size']):>6} " + " ".join(cells))

    results: dict[str, Any] = {"rounds": args.rounds, "per_round": args.per_round,
                               "overrides": args.overrides, "curves": curves}
    matches = {}
    for t in TEMPERATURES:
        for key in ("energy_mae", "energy_mae_offset_free", "forces_mae"):
            name = f"test_md{t}_{key}"
            al_final = curves["qbc"][-1]
            target = al_final[name]
            size = first_match(target, curves["random"], name)
            matches[name] = size
            verdict = (f"random first matches it at {size} frames" if size is not None
                       else f"random never matches it (up to "
                            f"{int(curves['random'][-1]['train_size'])} frames)")
            print(f"md{t} {key}: AL final {1000 * target:.2f} at "
                  f"{int(al_final['train_size'])} frames; {verdict}")
    results["random_matches_al_final_at"] = matches
    for method in METHODS:
        oracle = sum(r["oracle_seconds"] for r in curves[method]
                     if isinstance(r.get("oracle_seconds"), float))
        results[f"{method}_oracle_seconds"] = oracle
        results[f"{method}_wall_seconds"] = seconds[method]
        print(f"{METHODS[method]}: oracle {oracle:.1f} s, loop wall time {seconds[method]:.0f} s")
    total = time.perf_counter() - wall
    results["total_wall_seconds_this_call"] = total
    print(f"total wall time of this call {total:.0f} s (test-set MD included when made)")
    figure = args.output / "bench_active.png"
    plot(curves, figure)
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_bytes(figure.read_bytes())
    (args.output / "bench_active.json").write_text(json.dumps(results, indent=2))
    print(f"figure {figure}; numbers {args.output / 'bench_active.json'}")


if __name__ == "__main__":
    main()
