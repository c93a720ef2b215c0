r"""Accuracy benchmark (not a test): HIP-NN on rMD17, official split 01, against
published numbers.

For each molecule: train on 950 frames and validate on 50 frames of
``rmd17_<molecule>_train_01.npz`` (the official 1000-frame training file), test on the
1000 frames of ``rmd17_<molecule>_test_01.npz``, with ``experiment=rmd17_<molecule>``
(or ``rmd17_ethanol``'s settings for molecules without their own experiment) under a
budget of CPU time (``--clock cpu``, the default: the process's CPU time, so a run sharing
its cores with other work trains as far as one alone) or of wall time (``--clock wall``).
Prints energy MAE (meV), the energy MAE with the mean error removed, and force MAE
(meV/Å) next to published results and the training wall time; writes ``bench.json`` and
``bench.md``.

Examples::

    python scripts/bench_accuracy.py --max-minutes 12
    python scripts/bench_accuracy.py --molecules ethanol --max-minutes 60 \
        model.representation.hidden_channels=64
    python scripts/bench_accuracy.py --max-epochs 2000 --max-minutes 0 trainer=gpu

Extra ``key=value`` arguments are Hydra overrides applied to every molecule.

``--budget-schedule`` (with a CPU-time budget) replaces the experiments' plateau
schedule by a cosine decay over the budget (``conf/callbacks/budget_schedule.yaml``).

``--same-loop VARIANT ...`` instead trains each variant (``hipnn_pyg``,
``hipnn_pyg_ts1``, ``hipnn_pyg_ts2``, ``hippynn``, ``hippynn_quad``, ``mace``,
``mace_small``; see ``scripts/same_loop.py``) through one loop, same split, budget and
evaluation, ``--parallel`` at a time on one thread each, with one recipe for all
(``--recipe plain``) or each model's own (``--recipe own``), over ``--seeds``, and
prints the test errors side by side with their ratio to ``--reference``'s (hippynn by
default) and, over several seeds, their mean and spread; writes ``same_loop.json`` and
``same_loop.md`` (a reused ``--output`` keeps its finished runs)::

    python scripts/bench_accuracy.py --same-loop hipnn_pyg hippynn hipnn_pyg_ts1 \
        hipnn_pyg_ts2 --max-minutes 10 --output docs/benchmarks/same_loop
    python scripts/bench_accuracy.py --same-loop hipnn_pyg_ts2 mace --recipe own \
        --seeds 1 2 3 --reference mace --max-minutes 10 --output logs/bench/mace_own
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from hipnn_pyg.train.resolvers import conf_dir, repo_root
from hipnn_pyg.train.run import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rmd17_errors import rmd17_test_errors  # noqa: E402  (a sibling script)
from same_loop import VARIANTS  # noqa: E402
from same_loop_recipes import Recipe, recipe_for  # noqa: E402

#: Published rMD17 errors with 1000 training configurations: (energy MAE meV,
#: force MAE meV/Å). Source: Batatia et al., "MACE", NeurIPS 2022, Table 2, as
#: collected in ../shared/design/benchmarks.md.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "aspirin": {"MACE": (2.2, 6.6), "NequIP": (2.3, 8.2), "PaiNN": (6.9, 16.1)},
    "ethanol": {"MACE": (0.4, 2.1), "NequIP": (0.4, 2.8), "PaiNN": (2.7, 10.0)},
    "malonaldehyde": {"MACE": (0.8, 4.1), "NequIP": (0.8, 5.1), "PaiNN": (3.9, 13.8)},
    "toluene": {"MACE": (0.5, 1.5), "NequIP": (0.3, 1.6), "PaiNN": (4.2, 4.4)},
    "uracil": {"MACE": (0.5, 2.1), "NequIP": (0.4, 3.1), "PaiNN": (4.5, 6.1)},
}
SOURCE = "Batatia et al., MACE, NeurIPS 2022, Table 2 (../shared/design/benchmarks.md)"


def _config(molecule: str, output_dir: Path, args: argparse.Namespace) -> DictConfig:
    experiment = f"rmd17_{molecule}"
    if not (conf_dir() / "experiment" / f"{experiment}.yaml").is_file():
        experiment = "rmd17_ethanol"
    overrides = [
        f"experiment={experiment}",
        f"data.path=${{paths.data_dir}}/rmd17/rmd17_{molecule}_train_01.npz",
        f"data.test_path=${{paths.data_dir}}/rmd17/rmd17_{molecule}_test_01.npz",
        f"num_threads={args.threads}",
        f"seed={args.seed}",
        "task_name=bench",
        f"callbacks.progress_bar.refresh_rate={0 if args.quiet else 50}",
        *args.overrides,
    ]
    if args.max_epochs is not None:
        overrides.append(f"trainer.max_epochs={args.max_epochs}")
    if args.data_dir:
        overrides.append(f"paths.data_dir={args.data_dir}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if args.max_minutes > 0 and args.clock == "cpu":
            cfg.callbacks.cpu_time_limit = {"_target_": "hipnn_pyg.train.CpuTimeLimit",
                                            "minutes": args.max_minutes}
            if args.budget_schedule:  # the budget's cosine instead of the plateau
                plateau = cfg.module.get("scheduler") or {}
                cfg.callbacks.budget_schedule = {"_target_": "hipnn_pyg.train.BudgetSchedule",
                                                 "min_lr": plateau.get("min_lr", 1.0e-5)}
                cfg.module.scheduler = None
        elif args.budget_schedule:
            raise SystemExit("--budget-schedule needs a CPU-time budget (--max-minutes, "
                             "--clock cpu)")
        elif args.max_minutes > 0:
            seconds = int(args.max_minutes * 60)
            hours, rest = divmod(seconds, 3600)
            cfg.trainer.max_time = f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    GlobalHydra.instance().clear()
    return cfg


def _epochs(output_dir: Path) -> int | None:
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    from hipnn_pyg.serialization import torch_load

    return int(torch_load(last)["epoch"]) + 1


@dataclass(frozen=True)
class _Replaced:
    r"""A setting that ``--same-loop`` replaces when given: its ``same_loop.py`` flag (the
    same as ours), its job-name suffix, its table label and the implementations it
    changes (only their rows carry the label)."""

    flag: str
    suffix: Callable[[Any], str]
    label: Callable[[Any], str]
    implementations: tuple[str, ...] = ("hipnn_pyg", "hippynn", "mace")

    @property
    def attribute(self) -> str:
        return self.flag[2:].replace("-", "_")

    def value(self, args: argparse.Namespace) -> Any:
        return getattr(args, self.attribute)


OURS_AND_HIPPYNN = ("hipnn_pyg", "hippynn")
# In job-name order; the suffixes are those of existing records (a reused --output keeps
# a run by its name, so every replaced setting must be in it).
_REPLACED = (
    _Replaced("--width", lambda v: f"_w{v}", lambda v: f"width {v}", OURS_AND_HIPPYNN),
    _Replaced("--sensitivities", lambda v: f"_sens{v}", lambda v: f"{v} sensitivities",
              OURS_AND_HIPPYNN),
    _Replaced("--interactions", lambda v: f"_int{v}", lambda v: f"{v} interactions",
              OURS_AND_HIPPYNN),
    _Replaced("--readout-decay", lambda v: f"_decay{v}", lambda v: f"readout decay {v:g}",
              ("hipnn_pyg",)),
    _Replaced("--weight-decay", lambda v: f"_wd{v}", lambda v: f"weight decay {v:g}"),
    _Replaced("--force-weight", lambda v: f"_fw{v:g}", lambda v: f"w_F {v:g}"),
    _Replaced("--force-loss", lambda v: f"_{v}loss", lambda v: f"{v} force loss",
              ("hipnn_pyg",)),
    _Replaced("--lr", lambda v: f"_lr{v:g}", lambda v: f"lr {v:g}"),
    _Replaced("--batch", lambda v: f"_b{v}", lambda v: f"batch {v}"),
    _Replaced("--schedule", lambda v: f"_{v}", lambda v: f"{v} schedule"),
)


def _applied(variant: str, args: argparse.Namespace) -> list[_Replaced]:
    r"""The replaced settings given that apply to ``variant``'s implementation (MACE's
    runs keep their own force loss and shape)."""
    return [setting for setting in _REPLACED if setting.value(args) is not None
            and VARIANTS[variant][0] in setting.implementations]


def _job_name(molecule: str, variant: str, seed: int, args: argparse.Namespace) -> str:
    r"""The run's file name: molecule, variant, each replaced setting, the recipe (the
    plain recipe's single-seed names are those of earlier records) and the seed."""
    name = f"{molecule}_{variant}" + "".join(
        setting.suffix(setting.value(args)) for setting in _REPLACED
        if setting.value(args) is not None)
    name += "" if args.recipe == "plain" else f"_{args.recipe}"
    return name + ("" if len(args.seeds) == 1 else f"_s{seed}")


def _variant_label(variant: str, args: argparse.Namespace) -> str:
    r"""The variant and, in brackets, each replaced setting that applies to it."""
    return variant + "".join(
        f" ({setting.label(setting.value(args))})" for setting in _REPLACED
        if setting.value(args) is not None and VARIANTS[variant][0] in setting.implementations)


def _same_loop_table(results: list[dict], reference: str, args: argparse.Namespace) -> str:
    r"""One row per run, its ratios to ``reference``'s run of the same molecule and seed,
    then (several seeds) the mean and standard deviation of each model's errors."""
    keys = ("test_energy_mae_meV", "test_energy_mae_offset_free_meV",
            "test_forces_mae_meV_per_A")
    lines = [
        f"rMD17 split 01, one loop for every model, recipe {args.recipe}, "
        f"{args.max_minutes:g} {args.clock} min each on one thread, {args.parallel} runs "
        f"at a time. Test MAE: energy meV (and without its mean offset) / forces meV/Å; "
        f"ratio: the row's / {reference}'s (below 1 is better).",
        "",
        "| molecule | variant | recipe | seed | params | steps | epochs | steps/s | energy MAE "
        "| offset-free | force MAE | E ratio | offset-free ratio | F ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        peer = next((r for r in results if r["molecule"] == row["molecule"]
                     and r["variant"] == reference and r.get("seed") == row.get("seed")), None)
        ratios = ["-"] * 3 if peer is None else [f"{row[k] / peer[k]:.2f}" for k in keys]
        variant = _variant_label(row["variant"], args)
        lines.append(
            f"| {row['molecule']} | {variant} | {row.get('recipe', 'plain')} | "
            f"{row.get('seed', '-')} | {row['parameters']} | {row['steps']} | {row['epochs']} | "
            f"{row['steps_per_s']:.1f} | {row[keys[0]]:.2f} | {row[keys[1]]:.2f} | "
            f"{row[keys[2]]:.2f} | {' | '.join(ratios)} |")
    if len(args.seeds) > 1:
        import statistics

        lines += ["", f"Over seeds {args.seeds}: mean ± standard deviation.", "",
                  "| molecule | variant | runs | energy MAE | offset-free | force MAE |",
                  "|---|---|---|---|---|---|"]
        for molecule in args.molecules:
            for variant in args.same_loop:
                rows = [r for r in results if r["molecule"] == molecule
                        and r["variant"] == variant]
                cells = [f"{statistics.mean(r[k] for r in rows):.2f} ± "
                         f"{statistics.stdev(r[k] for r in rows):.2f}" for k in keys]
                lines.append(f"| {molecule} | {variant} | {len(rows)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _run_arguments(args: argparse.Namespace, molecule: str, variant: str, seed: int,
                   output: Path) -> list[str]:
    r"""``same_loop.py``'s arguments for one run: the set's settings, and each replaced
    recipe or model setting that was given."""
    arguments = ["--variant", variant, "--molecule", molecule, "--minutes", str(args.max_minutes),
                 "--seed", str(seed), "--output", str(output), "--clock", args.clock,
                 "--recipe", args.recipe]
    for setting in _applied(variant, args):
        arguments += [setting.flag, str(setting.value(args))]
    if args.data_dir is not None:
        arguments += ["--data-dir", str(args.data_dir)]
    return arguments


def _check_kept(path: Path, variant: str, args: argparse.Namespace) -> None:
    r"""Raises ``SystemExit`` if the finished run ``path`` was trained with other recipe
    settings than this command would use (records without settings predate them)."""
    record = json.loads(path.read_text())
    if record.get("settings") is None:
        return
    # earlier records kept the force loss beside the settings, or (older) had only MSE
    recorded = {"force_loss": record.get("force_loss", "mse"), **record["settings"]}
    # the replaced settings that are recipe settings (the others change the model)
    fields = {field.name for field in dataclasses.fields(Recipe)}
    recipe = recipe_for(args.recipe, VARIANTS[variant][0], **{
        setting.attribute: setting.value(args) for setting in _applied(variant, args)
        if setting.attribute in fields})
    expected = json.loads(json.dumps(dataclasses.asdict(recipe)))
    differ = {key: (recorded.get(key), value) for key, value in expected.items()
              if recorded.get(key) != value}
    if differ:
        raise SystemExit(
            f"{path} was trained with other settings than this command's "
            + ", ".join(f"{key} {old} (now {new})" for key, (old, new) in differ.items())
            + ": use another --output, or move the run away to train it again")


def same_loop(args: argparse.Namespace, root: Path) -> None:
    r"""Runs the ``--same-loop`` variants ``--parallel`` at a time and writes the
    side-by-side table."""
    script = Path(__file__).with_name("same_loop.py")
    jobs = [(molecule, variant, seed) for seed in args.seeds for molecule in args.molecules
            for variant in args.same_loop]
    names = {job: _job_name(*job, args) for job in jobs}
    # Finished runs in a reused --output are kept (a killed benchmark resumes), if they
    # were trained with this command's recipe (a recipe's defaults change over time).
    done = [job for job in jobs if (root / f"{names[job]}.json").is_file()]
    for job in done:
        _check_kept(root / f"{names[job]}.json", job[1], args)
        print(f"kept {root / names[job]}.json")
    todo = [job for job in jobs if job not in done]
    root.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for first in range(0, len(todo), args.parallel):
        running = []
        for molecule, variant, seed in todo[first:first + args.parallel]:
            output = root / f"{names[molecule, variant, seed]}.json"
            command = [sys.executable, str(script),
                       *_run_arguments(args, molecule, variant, seed, output)]
            log = open(output.with_suffix(".log"), "w")  # noqa: SIM115 - closed below
            running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env=environment), log, output))
        for process, log, output in running:
            if process.wait() != 0:
                raise SystemExit(f"{output.stem} failed: see {log.name}")
            log.close()
    results = [json.loads((root / f"{names[job]}.json").read_text()) for job in jobs]
    table = _same_loop_table(results, args.reference, args)
    print("\n" + table)
    (root / "same_loop.md").write_text(table + "\n")
    (root / "same_loop.json").write_text(json.dumps(
        {"date": datetime.now().isoformat(timespec="minutes"), "rows": results,
         "max_minutes": args.max_minutes, "clock": args.clock, "recipe": args.recipe,
         "command": " ".join([Path(sys.executable).name, *sys.argv])}, indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    r"""The command line (``argv``, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    parser.add_argument("--max-minutes", type=float, default=12.0,
                        help="training budget per molecule (0: none), see --clock")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="what --max-minutes counts: the process's CPU time (default) "
                        "or wall time")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epoch limit (default: the experiment's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--data-dir", default=None, help="folder holding rmd17/ (default: "
                        "$HIPNN_DATA_DIR or ../shared/data)")
    parser.add_argument("--output", type=Path, default=None,
                        help="output folder (default: logs/bench/<date>_<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--same-loop", nargs="+", default=None, metavar="VARIANT",
                        help="compare these variants in one plain loop (see same_loop.py)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="--same-loop runs at a time (default: 2)")
    parser.add_argument("--recipe", choices=["plain", "own"], default="plain",
                        help="--same-loop: one recipe for all, or each model's own")
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default=None,
                        help="--same-loop: replace the recipes' schedule")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="--same-loop: one run per seed (default: --seed)")
    parser.add_argument("--width", type=int, default=None,
                        help="--same-loop: features of ours and hippynn's (default 64)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="--same-loop: replace each recipe's weight decay (ours: "
                        "AdamW's, on the weight matrices)")
    parser.add_argument("--sensitivities", type=int, default=None,
                        help="--same-loop: radial sensitivities of ours and hippynn's "
                        "(default 20)")
    parser.add_argument("--interactions", type=int, default=None,
                        help="--same-loop: interaction layers of ours and hippynn's "
                        "(default 3)")
    parser.add_argument("--force-loss", choices=["mse", "norm"], default=None,
                        help="--same-loop: replace our recipe's force term (ours only; "
                        "the own recipe's is norm, the plain one's mse)")
    parser.add_argument("--force-weight", type=float, default=None,
                        help="--same-loop: replace each recipe's force weight w_F (energy "
                        "weight 1)")
    parser.add_argument("--lr", type=float, default=None,
                        help="--same-loop: replace each recipe's peak learning rate "
                        "(MACE's stage-two rate and the floor are kept)")
    parser.add_argument("--batch", type=int, default=None,
                        help="--same-loop: replace each recipe's batch size")
    parser.add_argument("--readout-decay", type=float, default=None,
                        help="--same-loop: ours' higher energy readouts scaled at the start "
                        "(hippynn's decay, e.g. 0.01)")
    parser.add_argument("--reference", default="hippynn",
                        help="--same-loop: the variant the ratios divide by")
    parser.add_argument("--budget-schedule", action="store_true",
                        help="cosine decay over the CPU-time budget instead of the plateau")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides, e.g. model.representation.hidden_channels=64")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    root = args.output or repo_root() / "logs" / "bench" / stamp
    args.seeds = args.seeds or [args.seed]
    if args.same_loop:
        same_loop(args, root)
        return
    rows = []
    for molecule in args.molecules:
        output_dir = root / molecule
        if output_dir.exists() and any(output_dir.iterdir()):
            # A reused folder mixes checkpoints (last-v1.ckpt) and epoch counts of runs.
            raise SystemExit(f"output folder {output_dir} is not empty: pick a new --output")
        cfg = _config(molecule, output_dir, args)
        start, cpu_start = time.perf_counter(), time.process_time()
        train(cfg)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        metrics = json.loads((output_dir / "results.json").read_text())["metrics"]
        # The energy without its mean error too: the force-weighted loss learns the
        # constant offset slowly (same evaluation as scripts/rmd17_errors.py).
        errors = rmd17_test_errors(output_dir / "model.pt", Path(cfg.data.test_path))
        rows.append({
            "molecule": molecule,
            "energy_mae_meV": 1000 * metrics["test/energy_mae"],
            "energy_mae_offset_free_meV": errors["energy_mae_offset_free_meV"],
            "mean_energy_error_meV": errors["mean_energy_error_meV"],
            "forces_mae_meV_per_A": 1000 * metrics["test/forces_mae"],
            "energy_rmse_meV": 1000 * metrics["test/energy_rmse"],
            "forces_rmse_meV_per_A": 1000 * metrics["test/forces_rmse"],
            "epochs": _epochs(output_dir),
            "wall_time_s": wall,
            "cpu_time_s": cpu,
            "tensor_order": int(cfg.model.representation.get("tensor_order", 0)),
            "model": OmegaConf.to_container(cfg.model),
            "output_dir": str(output_dir),
        })

    models = ["MACE", "NequIP", "PaiNN"]
    lines = [
        "rMD17, official split 01: 950 train / 50 val of the train file, 1000 test frames.",
        "Energy MAE (meV) / force MAE (meV/Å); published numbers: " + SOURCE + ".",
        "",
        "| molecule | tensor order | HIP-NN (this run) | offset-free E | "
        + " | ".join(models) + " | epochs | wall time | CPU time |",
        "|---|---|---|---|" + "---|" * len(models) + "---|---|---|",
    ]
    for row in rows:
        published = PUBLISHED.get(row["molecule"], {})
        cells = [f"{published[m][0]} / {published[m][1]}" if m in published else "-"
                 for m in models]
        lines.append(
            f"| {row['molecule']} | {row['tensor_order']} | {row['energy_mae_meV']:.2f} / "
            f"{row['forces_mae_meV_per_A']:.2f} | {row['energy_mae_offset_free_meV']:.2f} | "
            + " | ".join(cells) +
            f" | {row['epochs']} | {row['wall_time_s'] / 60:.1f} min "
            f"| {row['cpu_time_s'] / 60:.1f} min |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    root.mkdir(parents=True, exist_ok=True)
    (root / "bench.md").write_text(table + "\n")
    (root / "bench.json").write_text(json.dumps(
        {"rows": rows, "published": PUBLISHED, "source": SOURCE,
         "max_minutes": args.max_minutes, "clock": args.clock, "overrides": args.overrides},
        indent=2))
    print(f"\nwritten to {root}")


if __name__ == "__main__":
    main()
