r"""Accuracy against MD speed (not a test): test force MAE of trained models against the
velocity-Verlet steps per second they give in ASE, for a Pareto figure.

Takes the results of ``scripts/same_loop.py`` (the ``.json`` beside its
``.weights.pt``), rebuilds each model from the config the JSON holds, checks that the
rebuilt model reproduces the JSON's test force MAE, then times MD through ASE on one
thread in float32 (velocity Verlet, 0.5 fs, 300 K start, interleaved rounds that each
restart from the same structure; ``bench_md.py``'s ``md_rates``): on the molecule the
model was trained on (frame 0 of its rMD17 training file) and on bulk water (the
192-atom DeePMD cell repeated, 12,288 atoms at ``--water-repeats 4``, as
``bench_md.py``). Ours run through ``HIPNNCalculator`` (eager, pair search every step),
MACE through its own ``MACECalculator``. MACE (32x0e+32x1o) took 4.4 CPU s and a 2 GB
peak per step on 1,536 water atoms here, so the 12,288-atom box would need roughly 35 s
and 13 GB per step (extrapolated, not run): by default it runs the 1,536-atom box
(``--mace-water-repeats 2``) and the figure compares atom-steps per second, with each
size noted; ``--mace-water-repeats 4`` runs the full box.

Writes ``pareto.json`` (rows, command, commit, date) and ``pareto.png``::

    python scripts/bench_pareto.py logs/bench/pareto/*.json --output docs/benchmarks/pareto

``--replot`` redraws the figure from an existing ``pareto.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from hipnn_pyg.compat.ase import thermalize

sys.path.insert(0, str(Path(__file__).resolve().parent))
import same_loop  # noqa: E402 - the shared model builders (siblings)
from bench_md import md_rates, structures  # noqa: E402
from same_loop_models import (  # noqa: E402
    MACE_SIZES,
    mace_calculator,
    mace_from_config,
    mace_function,
)

#: rebuilt test force MAE must match the JSON's within this fraction
REPRODUCE = 1e-3


def rebuild(result: dict[str, Any], weights: Path) -> tuple[torch.nn.Module, Any]:
    r"""The trained model of a ``same_loop.py`` result and its energy-and-forces
    function."""
    implementation, option = same_loop.VARIANTS[result["variant"]]
    config = result["model_config"]
    if implementation == "mace":
        model = mace_from_config(**config)
        run = mace_function(model, config["zs"], MACE_SIZES[config["size"]]["r_max"])
    elif implementation == "hipnn_pyg":
        model, run = same_loop.ours(config["tensor_order"], config["shape"],
                                    config.get("tensor_products", False))
    else:
        raise SystemExit(f"{result['variant']}: only ours and MACE run in ASE here")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), run


def label(result: dict[str, Any]) -> str:
    config = result["model_config"]
    size = f"{result['parameters'] / 1000:.0f}k"
    if "size" in config:
        return f"MACE {MACE_SIZES[config['size']]['hidden_irreps']} ({size})"
    order = config["tensor_order"]
    name = "HIP-NN" if order == 0 else f"HIP-NN-TS l={order}"
    name += " + products" if config.get("tensor_products") else ""
    return f"{name}, width {config['shape']['features']} ({size})"


def calculator(result: dict[str, Any], model: torch.nn.Module) -> Any:
    if "size" in result["model_config"]:
        return mace_calculator(model)
    from hipnn_pyg import HIPNNCalculator

    return HIPNNCalculator(model, dtype=torch.float32)


def molecule(data_dir: Path, name: str) -> Atoms:
    raw = np.load(data_dir / "rmd17" / f"rmd17_{name}_train_01.npz")
    return Atoms(numbers=raw["nuclear_charges"], positions=raw["coords"][0])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    r"""Indices of the points no other point beats on both speed (higher) and error
    (lower), by speed."""
    front = [i for i, (speed, error) in enumerate(points)
             if not any(s >= speed and e <= error and (s, e) != (speed, error)
                        for s, e in points)]
    return sorted(front, key=lambda i: points[i][0])


def figure(rows: list[dict[str, Any]], path: Path, note: str) -> None:
    from hipnn_pyg.plotting import pyplot, save_figure

    plt = pyplot()
    water = [r for r in rows if r.get("water_atom_steps_per_s")]
    fig, axes = plt.subplots(1, 2 if water else 1, figsize=(13 if water else 7, 5.2),
                             squeeze=False)
    panels = [("molecule_steps_per_s", "MD steps/s, {molecule} (ASE, 1 thread)", rows)]
    if water:
        panels.append(("water_atom_steps_per_s", "atom-steps/s, bulk water (ASE, 1 thread)",
                       water))
    for axis, (key, title, chosen) in zip(axes[0], panels, strict=False):
        points = [(r[key], r["test_forces_mae_meV_per_A"]) for r in chosen]
        for row, (speed, error) in zip(chosen, points, strict=True):
            mace = "size" in row["model_config"]
            axis.scatter(speed, error, marker="s" if mace else "o",
                         color="tab:red" if mace else f"C{row['model_config']['tensor_order']}")
            text = row["label"] + (f", {row['water_atoms']} atoms" if key.startswith("water")
                                   else "")
            axis.annotate(text, (speed, error), textcoords="offset points", xytext=(4, 4),
                          fontsize=7)
        front = pareto_front(points)
        axis.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=0.8,
                  label="Pareto front")
        axis.set_xscale("log")
        axis.margins(x=0.25, y=0.1)  # room for the labels
        axis.set_xlabel(title.format(molecule=chosen[0]["molecule"]))
        axis.set_ylabel("test force MAE (meV/Å)")
        axis.legend(fontsize=7)
    fig.suptitle(note, fontsize=7)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> None:
    from hipnn_pyg.train.resolvers import reference_data_dir

    torch.set_num_threads(1)
    data_dir = args.data_dir or reference_data_dir()
    rows, models = [], {}
    for path in args.results:
        result = json.loads(path.read_text())
        model, energy_forces = rebuild(result, path.with_suffix(".weights.pt"))
        test = same_loop.frames(data_dir / "rmd17" / f"rmd17_{result['molecule']}_test_01.npz")
        _, forces_mae, _ = same_loop.errors(energy_forces, test, result["offset_eV"])
        recorded = result["test_forces_mae_meV_per_A"]
        if abs(1000 * forces_mae - recorded) > REPRODUCE * recorded:
            raise SystemExit(f"{path}: rebuilt model gives {1000 * forces_mae:.3f} meV/Å, "
                             f"the record {recorded:.3f}")
        rows.append({k: result[k] for k in ("variant", "molecule", "recipe", "minutes",
                                             "seed", "parameters", "test_forces_mae_meV_per_A",
                                             "test_energy_mae_meV", "model_config")
                     if k in result} | {"result": str(path), "label": label(result)})
        models[len(rows) - 1] = model
        print(f"{rows[-1]['label']}: force MAE {recorded:.2f} meV/Å reproduced", flush=True)
    molecules = {r["molecule"] for r in rows}
    for name in sorted(molecules):
        atoms = molecule(data_dir, name)
        thermalize(atoms, 300, rng=np.random.default_rng(0))
        chosen = {i: calculator(rows[i], models[i]) for i, r in enumerate(rows)
                  if r["molecule"] == name}
        rates = md_rates(atoms, {rows[i]["label"]: c for i, c in chosen.items()}, args.steps,
                         args.rounds)
        for i in chosen:
            rows[i]["molecule_steps_per_s"] = rates[rows[i]["label"]]
            print(f"  {rows[i]['label']}: {rates[rows[i]['label']]:.1f} steps/s on {name}",
                  flush=True)
    if args.water:
        for mace in (False, True):
            repeats = args.mace_water_repeats if mace else args.water_repeats
            chosen = {i: r for i, r in enumerate(rows) if ("size" in r["model_config"]) == mace}
            if not chosen or repeats == 0:
                continue
            water = next(a for key, a in structures(repeats).items() if key.startswith("water"))
            thermalize(water, 300, rng=np.random.default_rng(0))
            rates = md_rates(water, {rows[i]["label"]: calculator(rows[i], models[i])
                                     for i in chosen}, args.water_steps, args.water_rounds)
            for i in chosen:
                rows[i].update(water_atoms=len(water), water_steps_per_s=rates[rows[i]["label"]],
                               water_atom_steps_per_s=len(water) * rates[rows[i]["label"]])
                print(f"  {rows[i]['label']}: {rates[rows[i]['label']]:.3f} steps/s on "
                      f"{len(water)} water atoms", flush=True)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    record = {"date": datetime.now().isoformat(timespec="minutes"),
              "commit": same_loop.git_commit(), "command": command,
              "machine": f"{platform.processor() or platform.machine()}, torch "
                         f"{torch.__version__}, 1 thread, float32",
              "md": {"timestep_fs": 0.5, "steps": args.steps, "rounds": args.rounds,
                     "water_steps": args.water_steps, "water_rounds": args.water_rounds},
              "rows": rows}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "pareto.json").write_text(json.dumps(record, indent=2))
    figure(rows, args.output / "pareto.png", note(record))
    print(f"written {args.output / 'pareto.json'} and pareto.png")


def note(record: dict[str, Any]) -> str:
    r"""The figure's caption: the command (wrapped), commit and date."""
    return "\n".join(textwrap.wrap(record["command"], 190)
                     + [f"commit {record['commit']}, {record['date']}"])


def replot(output: Path) -> None:
    r"""Redraws ``pareto.png`` from ``output``'s ``pareto.json`` (no training or timing)."""
    record = json.loads((output / "pareto.json").read_text())
    figure(record["rows"], output / "pareto.png", note(record))
    print(f"redrawn {output / 'pareto.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="*", help="same_loop.py result JSONs")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=200, help="MD steps per round, molecule")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-water", dest="water", action="store_false")
    parser.add_argument("--water-repeats", type=int, default=4,
                        help="DeePMD 192-atom cell repeats per axis for ours (4: 12,288 atoms)")
    parser.add_argument("--mace-water-repeats", type=int, default=2,
                        help="the same for MACE (2: 1,536 atoms; 0: skip MACE on water)")
    parser.add_argument("--water-steps", type=int, default=2)
    parser.add_argument("--water-rounds", type=int, default=2)
    parser.add_argument("--replot", action="store_true",
                        help="only redraw --output's pareto.png from its pareto.json")
    args = parser.parse_args()
    if args.replot:
        replot(args.output)
    elif not args.results:
        parser.error("give same_loop.py result JSONs (or --replot)")
    else:
        run(args)


if __name__ == "__main__":
    main()
