r"""Active-learning benchmark (not a test): query by committee (QBC) against random
selection at equal labels, over seeds, on ethanol with GFN2-xTB (tblite) labels.

Two modes:

* ``--mode oracle``: the committee explores (Langevin MD at 300-1200 K stopped where it
  is 3x as uncertain as on its training set, normal modes around several minima; with
  ``--udd`` also uncertainty-driven dynamics) and GFN2-xTB labels what is selected.
* ``--mode pool``: the candidates are a fixed pool of GFN2-xTB MD frames (300-1500 K,
  other start geometries than the test sets) whose labels are stored; the oracle reads
  them (``calculator=stored``), so the loop makes no QM call.

Every seed draws its 20 start frames from the shipped set (frames 0-199 of
``data/ethanol_gfn2``; 200-249 are the committees' fixed validation set); both arms of
a seed start from them and label ``--per-round`` frames a round. Everything else is
``conf/active/ethanol_gfn2.yaml`` (the defaults a user gets).

Test sets, made once with GFN2-xTB (``<output>/test_sets``, shared by both modes):
``mixed`` (Langevin MD at 300/600/900/1200 K from rMD17 test-split geometries),
``hot`` (1500 K), ``torsion_oh`` and ``torsion_ch3`` (relaxed scans of the hydroxyl
and methyl torsions, 15-degree steps). Per round, arm and test set: force MAE, RMSE,
95th percentile and maximum of the per-frame force RMSE, offset-free energy MAE, and
the rank correlation of each disagreement measure with the per-frame error; mean and
spread (min-max) over seeds. Also: the labels each arm needs to reach random's final
error, and where the selected frames came from.

Examples::

    python scripts/bench_active.py --mode pool --jobs 2
    python scripts/bench_active.py --mode oracle --jobs 2 \
        --figure docs/figures/active_learning_oracle.png \
        --record docs/benchmarks/active_oracle.json
    python scripts/bench_active.py --mode pool --seeds 0 --rounds 2 --per-round 4 \
        --output /tmp/smoke --test-frames 4 --pool-frames 40 active.ensemble.size=2 \
        active.ensemble.steps=50

Extra ``key=value`` arguments are Hydra overrides of ``conf/active.yaml`` for every
run. Rerunning the same command continues killed runs and reuses the sets.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import multiprocessing
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hipnn_pyg.train.resolvers import repo_root

#: arm -> (label, selection, extra overrides). ``qbc`` uses the config's measure
#: (offset-free ρ); ``qbc_forces`` the largest per-atom force spread.
ARMS = {"qbc": ("QBC (offset-free ρ)", "qbc", []),
        "qbc_forces": ("QBC (force spread)", "qbc", ["active.measure=forces"]),
        "random": ("random", "random", [])}
TEST_SETS = ("mixed", "hot", "torsion_oh", "torsion_ch3")
MIXED_K = (300, 600, 900, 1200)
HOT_K = 1500
POOL_K = (300, 600, 900, 1200, 1500)
SHIPPED = "data/ethanol_gfn2/ethanol_gfn2.extxyz"
START_RANGE = 200  # frames 0-199 of SHIPPED: start frames; 200-249: validation
KEYS = ("forces_mae", "forces_rmse", "frame_forces_rmse_p95", "frame_forces_rmse_max",
        "energy_mae_offset_free")
MEASURES = ("rho", "rho_centred", "force_dev")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("oracle", "pool"), default="pool")
    parser.add_argument("--output", type=Path, default=None,
                        help="default: logs/bench_active/<mode>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--initial", type=int, default=20, help="start frames per seed")
    parser.add_argument("--test-frames", type=int, default=50,
                        help="MD test frames per temperature (hot: twice as many)")
    parser.add_argument("--pool-frames", type=int, default=2000)
    parser.add_argument("--udd", action="store_true",
                        help="oracle mode: add the uncertainty-driven dynamics explorer")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["qbc", "random"],
                        help="selection arms (random is the baseline and always runs; a "
                             "finished run in the output folder is reused)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--figure", type=Path, default=None, help="also copy the figure here")
    parser.add_argument("--record", type=Path, default=None,
                        help="also copy the JSON record here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/active.yaml")
    args = parser.parse_args()
    args.output = args.output or repo_root() / "logs" / "bench_active" / args.mode
    args.arms = [arm for arm in ARMS if arm in args.arms or arm == "random"]
    return args


# ---------------------------------------------------------------- reference sets
def gfn2() -> Any:
    from hipnn_pyg.label import make_calculator

    return make_calculator("gfn2")


def ethanol_dihedrals(atoms: Any) -> dict[str, list[int]]:
    r"""The hydroxyl (H-O-C-C) and methyl (H-C-C-O) dihedrals of an ethanol."""
    from hipnn_pyg.active.reference_sets import bonds

    pairs = bonds(atoms)
    linked = {i: {j for p in pairs for j in p if i in p and j != i} for i in range(len(atoms))}
    (oxygen,) = np.flatnonzero(atoms.numbers == 8)
    (alpha,) = [j for j in linked[oxygen] if atoms.numbers[j] == 6]
    (hydroxyl,) = [j for j in linked[oxygen] if atoms.numbers[j] == 1]
    (beta,) = [j for j in linked[alpha] if atoms.numbers[j] == 6]
    methyl = sorted(j for j in linked[beta] if atoms.numbers[j] == 1)
    return {"torsion_oh": [hydroxyl, oxygen, alpha, beta],
            "torsion_ch3": [methyl[0], beta, alpha, oxygen]}


def make_test_sets(folder: Path, frames: int) -> dict[str, Path]:
    r"""The GFN2-xTB test sets (see module docs), made once."""
    from ase.optimize import BFGS

    from hipnn_pyg.active.reference_sets import md_frames, torsion_scan
    from hipnn_pyg.active.structures import plain_copy, read, write_frames

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.extxyz" for name in TEST_SETS}
    starts = read(repo_root() / "data/rmd17_ethanol/rmd17_ethanol_test_01.npz", "::100")
    if not paths["mixed"].exists():
        found = []
        for k, temperature in enumerate(MIXED_K):
            found += md_frames(starts[k], gfn2(), temperature, frames, 40, 1000, seed=100 + k)
        write_frames(paths["mixed"], found)
    if not paths["hot"].exists():
        found = []
        for k in range(2):
            found += md_frames(starts[4 + k], gfn2(), HOT_K, frames, 40, 1000, seed=200 + k)
        write_frames(paths["hot"], found)
    if not all(paths[name].exists() for name in ("torsion_oh", "torsion_ch3")):
        minimum = plain_copy(starts[6])
        minimum.calc = gfn2()
        BFGS(minimum, logfile=None).run(fmax=0.01, steps=500)
        for name, dihedral in ethanol_dihedrals(minimum).items():
            write_frames(paths[name], torsion_scan(plain_copy(minimum), gfn2(), dihedral,
                                                   np.arange(0.0, 360.0, 15.0)))
    return paths


def make_pool(folder: Path, count: int) -> Path:
    r"""The labelled pool of the pool mode: GFN2-xTB Langevin MD at :data:`POOL_K` from
    four start geometries each (rMD17 training-split frames), after 200 fs, frames
    10 fs apart."""
    from hipnn_pyg.active.reference_sets import md_frames
    from hipnn_pyg.active.structures import read, write_frames

    path = folder / "pool.extxyz"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    starts = read(repo_root() / "data/rmd17_ethanol/rmd17_ethanol_train_01.npz", "::50")
    per_run = max(count // (4 * len(POOL_K)), 1)
    found = []
    for t, temperature in enumerate(POOL_K):
        for k in range(4):
            found += md_frames(starts[4 * t + k], gfn2(), temperature, per_run, 20, 400,
                               seed=300 + 4 * t + k)
    write_frames(path, found)
    return path


def start_frames(folder: Path, seed: int, count: int) -> Path:
    r"""``count`` frames of the shipped set's first :data:`START_RANGE`, drawn by
    ``seed`` (shared by both arms of the seed)."""
    from hipnn_pyg.active.structures import read, write_frames

    path = folder / f"initial_seed{seed}.extxyz"
    if not path.exists():
        frames = read(repo_root() / SHIPPED, f":{START_RANGE}")
        picked = np.random.default_rng(seed).choice(len(frames), size=count, replace=False)
        write_frames(path, [frames[i] for i in sorted(picked)])
    return path


# ---------------------------------------------------------------- runs
def run_overrides(args: argparse.Namespace, arm: str, seed: int, tests: dict[str, Path],
                  initial: Path, pool: Path | None) -> list[str]:
    overrides = [
        "active=ethanol_gfn2", f"selection={ARMS[arm][1]}", f"seed={seed}", "progress=false",
        f"run_dir={args.output / f'{arm}_seed{seed}'}", f"active.max_rounds={args.rounds}",
        f"active.max_selected={args.per_round}", f"active.initial.path={initial}",
        "active.initial.index=':'",
        *(f"+active.test_sets.{name}={path}" for name, path in tests.items()),
    ]
    if pool is not None:
        overrides += ["active.explorers.md=null", "active.explorers.normal_modes=null",
                      "active.oracle.name=stored", f"+active.oracle.options.path={pool}",
                      "active.explorers.pool={_target_: hipnn_pyg.active.explore."
                      f"PoolExplorer, path: '{pool}'}}"]
    elif args.udd:
        overrides.append("active.explorers.udd={_target_: hipnn_pyg.active.udd."
                         "UncertaintyDrivenExplorer, temperatures_K: [300], steps: 600, "
                         "check_interval: 20, stop_relative: 3.0, measure: energy_centred, "
                         "max_seeds: 2}")
    return [*overrides, *ARMS[arm][2], *args.overrides]


def run_one(overrides: list[str]) -> float:
    r"""One loop in this (worker) process; returns its wall seconds."""
    import torch

    from hipnn_pyg.active.loop import run_active
    from hipnn_pyg.active.training import compose

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_active(compose("active", overrides))
    return time.perf_counter() - start


def rounds(folder: Path) -> list[dict[str, Any]]:
    r"""Each round's ``metrics.json`` of one run."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("round_*/metrics.json"))]


def sources(folder: Path) -> Counter[str]:
    r"""Where a run's selected frames came from: explorer and temperature."""
    from hipnn_pyg.extxyz import read_frames

    found: Counter[str] = Counter()
    for path in sorted(folder.glob("round_*/selected.extxyz")):
        for atoms in read_frames(path):
            explorer = str(atoms.info.get("explorer", "?"))
            temperature = atoms.info.get("temperature_K")
            found[f"{explorer} {float(temperature):g} K" if temperature is not None
                  else explorer] += 1
    return found


# ---------------------------------------------------------------- statistics
def aggregate(runs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    r"""Per round: training size and, per test set and metric, mean/min/max over
    seeds (rounds every seed reached)."""
    count = min(len(r) for r in runs.values())
    table = []
    for k in range(count):
        row: dict[str, Any] = {"round": k, "train_size": [runs[s][k]["train_size"]
                                                          for s in sorted(runs)]}
        for name in TEST_SETS:
            for key in (*KEYS, *(f"spearman_{m}" for m in MEASURES)):
                values = [runs[s][k].get("errors", {}).get(f"test_{name}", {}).get(key)
                          for s in sorted(runs)]
                values = [float(v) for v in values if v is not None]
                if values:
                    row[f"{name}/{key}"] = {"mean": float(np.mean(values)),
                                            "min": float(np.min(values)),
                                            "max": float(np.max(values)), "n": len(values)}
        table.append(row)
    return table


def labels_to_reach(table: list[dict[str, Any]], key: str, target: float) -> int | None:
    r"""The first mean training size whose mean ``key`` is at or below ``target``."""
    for row in table:
        if key in row and row[key]["mean"] <= target:
            return int(np.mean(row["train_size"]))
    return None


def _source_order(label: str) -> tuple[str, float]:
    explorer, _, temperature = label.partition(" ")
    return explorer, float(temperature.removesuffix(" K") or 0.0)


def plot(tables: dict[str, list[dict[str, Any]]], found: dict[str, Counter[str]],
         title: str, path: Path) -> None:
    from matplotlib.ticker import FormatStrFormatter

    from hipnn_pyg.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(3, len(TEST_SETS), figsize=(4 * len(TEST_SETS), 10))
    for column, name in enumerate(TEST_SETS):
        for axis, key, label in ((axes[0, column], "forces_mae", "force MAE"),
                                 (axes[1, column], "frame_forces_rmse_max",
                                  "largest frame force RMSE")):
            for arm, table in tables.items():
                rows = [r for r in table if f"{name}/{key}" in r]
                x = [np.mean(r["train_size"]) for r in rows]
                mean = [1000 * r[f"{name}/{key}"]["mean"] for r in rows]
                low = [1000 * r[f"{name}/{key}"]["min"] for r in rows]
                high = [1000 * r[f"{name}/{key}"]["max"] for r in rows]
                line, = axis.plot(x, mean, "o-", label=ARMS[arm][0])
                axis.fill_between(x, low, high, alpha=0.2, color=line.get_color())
            axis.set_title(name)
            axis.set_ylabel(f"{label} (meV/Å)")
            axis.set_xlabel("labelled frames")
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            axis.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            axis.grid(alpha=0.3, which="both")
            axis.legend(fontsize=8)
    for axis, name in zip(axes[2, 1:3], ("mixed", "hot"), strict=True):
        for measure in MEASURES:
            rows = [r for r in tables["random"] if f"{name}/spearman_{measure}" in r]
            axis.plot([np.mean(r["train_size"]) for r in rows],
                      [r[f"{name}/spearman_{measure}"]["mean"] for r in rows], "o-",
                      label=measure)
        axis.axhline(0.0, color="grey", lw=0.8)
        axis.set_title(f"{name}: disagreement vs error (random arm)")
        axis.set_ylabel("rank correlation with frame force RMSE")
        axis.set_xlabel("labelled frames")
        axis.legend(fontsize=8)
    axes[2, 3].remove()
    axis = axes[2, 0]
    labels = sorted(set().union(*found.values()), key=_source_order)
    width = 0.8 / max(len(found), 1)
    for k, (arm, counts) in enumerate(found.items()):
        axis.bar(np.arange(len(labels)) + k * width, [counts[name] for name in labels],
                 width, label=ARMS[arm][0])
    axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=60,
                    ha="right", fontsize=8)
    axis.set_ylabel("selected frames (all seeds)")
    axis.legend(fontsize=8)
    fig.suptitle(title + " (line: mean over seeds, band: min-max)")
    save_figure(fig, path)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(),
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    args = arguments()
    wall = time.perf_counter()
    code = commit()  # the code the runs start from (the tree may move while they run)
    sets = args.output.parent / "test_sets"
    tests = make_test_sets(sets, args.test_frames)
    pool = make_pool(args.output, args.pool_frames) if args.mode == "pool" else None
    setup_seconds = time.perf_counter() - wall
    jobs = [(arm, seed, run_overrides(args, arm, seed, tests,
                                      start_frames(args.output, seed, args.initial), pool))
            for seed in args.seeds for arm in args.arms]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as executor:
        seconds = dict(zip([(arm, seed) for arm, seed, _ in jobs],
                           executor.map(run_one, [o for _, _, o in jobs]), strict=True))

    tables = {arm: aggregate({s: rounds(args.output / f"{arm}_seed{s}") for s in args.seeds})
              for arm in args.arms}
    found = {arm: sum((sources(args.output / f"{arm}_seed{s}") for s in args.seeds),
                      Counter()) for arm in args.arms}
    print(f"\n{args.mode} mode, seeds {args.seeds}: mean over seeds [min, max]; forces meV/Å,"
          " energy meV (offset-free)")
    for name in TEST_SETS:
        print(f"\n{name}: {'frames':>6} " + " ".join(f"{k:>28}" for k in KEYS))
        for arm, table in tables.items():
            for row in table:
                cells = [f"{1000 * row[f'{name}/{k}']['mean']:8.1f} "
                         f"[{1000 * row[f'{name}/{k}']['min']:7.1f},"
                         f"{1000 * row[f'{name}/{k}']['max']:7.1f}]"
                         if f"{name}/{k}" in row else f"{'-':>28}" for k in KEYS]
                print(f"{arm:>10} {np.mean(row['train_size']):6.0f} " + " ".join(cells))
    reach = {}
    for name in TEST_SETS:
        for key in ("forces_mae", "frame_forces_rmse_max", "energy_mae_offset_free"):
            target = tables["random"][-1][f"{name}/{key}"]["mean"]
            reach[f"{name}/{key}"] = {"target": target, **{
                arm: labels_to_reach(tables[arm], f"{name}/{key}", target) for arm in args.arms}}
    print("\nlabelled frames each arm needs (mean over seeds) to reach random's final error:")
    for key, value in reach.items():
        print(f"  {key:>40}: target {1000 * value['target']:.1f}; "
              + ", ".join(f"{arm} {value[arm]}" for arm in args.arms))
    correlation = {arm: {name: {m: float(np.mean([r[f"{name}/spearman_{m}"]["mean"]
                                                  for r in tables[arm]
                                                  if f"{name}/spearman_{m}" in r]))
                                for m in MEASURES} for name in TEST_SETS}
                   for arm in args.arms}
    print("\nrank correlation of disagreement with per-frame force error (each arm's "
          "committees, mean over rounds and seeds):")
    for arm, by_set in correlation.items():
        for name, values in by_set.items():
            print(f"  {arm:>10} {name:>12}: "
                  + ", ".join(f"{m} {v:+.2f}" for m, v in values.items()))
    print("\nselected frames by source (all seeds and rounds):")
    for arm, counts in found.items():
        print(f"  {arm:>10}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    total = time.perf_counter() - wall
    print(f"\nwall time {total:.0f} s (sets {setup_seconds:.0f} s, runs "
          f"{sum(seconds.values()):.0f} s over {args.jobs} job(s))")

    record = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": code, "date": datetime.date.today().isoformat(), "mode": args.mode,
        "seeds": args.seeds, "rounds": args.rounds, "per_round": args.per_round,
        "initial": args.initial, "overrides": args.overrides, "udd": args.udd,
        "test_sets": {name: str(path) for name, path in tests.items()},
        "table": tables, "labels_to_reach_random_final": reach,
        "spearman_mean": correlation,
        "selected_sources": {arm: dict(c) for arm, c in found.items()},
        "run_seconds": {f"{arm}_seed{seed}": s for (arm, seed), s in seconds.items()},
        "wall_seconds": total,
    }
    out = args.output / "bench_active.json"
    out.write_text(json.dumps(record, indent=1))
    figure = args.output / "bench_active.png"
    plot(tables, found, f"Ethanol, GFN2-xTB, {args.mode} mode: QBC vs random", figure)
    for source, target in ((figure, args.figure), (out, args.record)):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    with open(args.output / "summary.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["arm", "round", "frames",
                         *[f"{n}/{k}" for n in TEST_SETS for k in KEYS]])
        for arm, table in tables.items():
            for row in table:
                writer.writerow([arm, row["round"], np.mean(row["train_size"]), *[
                    row.get(f"{n}/{k}", {}).get("mean", "") for n in TEST_SETS for k in KEYS]])
    print(f"figure {figure}; record {out}")


if __name__ == "__main__":
    main()
