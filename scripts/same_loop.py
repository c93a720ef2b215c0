r"""One model on rMD17 through a training loop shared by every model, for the side-by-side
comparisons of ``bench_accuracy.py --same-loop`` (not a test).

The loop is the same for hipnn_pyg, LANL's hippynn (the reference HIP-NN,
``pip install hippynn``) and MACE (``pip install mace-torch``, the ``peers`` extra):
official split 01 (950 training / 50 validation frames of the training file, in a
seeded order, 1000 test frames), float32, one thread, energies less the training mean,
a budget of CPU time (``--clock cpu``, the default: runs sharing cores stay comparable)
or of wall time, validation once per epoch, and the test errors of the best validation
epoch. Each model starts from its implementation's standard initialisation from the
training split (``same_loop_models.py``: our self-energies and the untrained network's
offset fitted, MACE's E0s and force scale).

``--recipe plain`` (the default) trains every model the same way (Adam 3e-3, energy :
force 1 : 100, batch 16, plateau schedule, no EMA); ``--recipe own`` gives each model
its own published recipe within the same budget (ours: ``rmd17_ethanol``'s, with a
cosine decay over the budget; MACE: its rMD17 recipe); see ``same_loop_recipes.py``.
``--schedule``, ``--lr`` (the peak rate), ``--batch``, ``--force-weight``,
``--force-loss`` and ``--weight-decay`` replace that setting of either recipe. Our models
are HIP-NN of ``SHAPE`` (64 features, 3 interactions of 3 on-site layers, 20
sensitivities from 0.75 to 5 Å, cutoff 5.5 Å; ``--width``, ``--sensitivities``,
``--interactions``, ``--cutoff`` and ``--soft-max`` change those; the rMD17 experiments
now use 8 sensitivities, ``--sensitivities 8``), hippynn's of the same shape, MACE of the
sizes in ``same_loop_models.MACE_SIZES``. ``--init mean`` starts ours and hippynn's from
the energies' mean alone, ``--readout-decay`` gives ours hippynn's decay of the higher
readouts.

Example::

    python scripts/same_loop.py --variant mace --molecule ethanol --minutes 10 \
        --output ethanol_mace.json

writes the results (``.json``) and the best weights (``.weights.pt``, with the model's
config in the JSON for ``bench_pareto.py``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from same_loop_models import (  # noqa: E402, F401 - siblings; re-exported for bench_*.py
    SHAPE,
    SPECIES,
    EnergyForces,
    fit_initial_energy,
    hippynn_available,
    hippynn_initialize,
    hippynn_model,
    mace_available,
    mace_model,
    ours,
    refit_energy,
)
from same_loop_recipes import Recipe, Schedule, parameter_groups, recipe_for  # noqa: E402

#: variant -> (implementation, tensor order or MACE size)
VARIANTS: dict[str, tuple[str, Any]] = {
    "hipnn_pyg": ("hipnn_pyg", 0),
    "hipnn_pyg_ts1": ("hipnn_pyg", 1),
    "hipnn_pyg_ts2": ("hipnn_pyg", 2),
    "hipnn_pyg_hop": ("hipnn_pyg", 2),  # and tensor_products: see PRODUCT_VARIANTS
    "hippynn": ("hippynn", 0),
    "hippynn_vec": ("hippynn", 1),
    "hippynn_quad": ("hippynn", 2),
    "mace": ("mace", "mace"),
    "mace_small": ("mace", "mace_small"),
}
#: Variants of ours with the many-body product invariants (HIP-HOP-NN's) of order 2.
PRODUCT_VARIANTS = frozenset({"hipnn_pyg_hop"})
FORCE_WEIGHT = 100.0  # the plain recipe's, for bench_speed.py
#: The command-line flags (as attributes) that replace a recipe setting of the same name.
RECIPE_FLAGS = ("schedule", "batch", "weight_decay", "force_weight", "lr", "force_loss")
BATCH = 16


def frames(path: Path) -> dict[str, Tensor]:
    from hipnn_pyg.data import RMD17Dataset

    data = RMD17Dataset(path)
    batch = data.gather(range(len(data)))
    count = len(data)
    atoms = batch.z.numel() // count
    return dict(z=batch.z.view(count, atoms), pos=batch.pos.view(count, atoms, 3).float(),
                energy=batch.energy.view(count), forces=batch.forces.view(count, atoms, 3).float())


def split(data_dir: Path, molecule: str, seed: int) -> dict[str, dict[str, Tensor]]:
    train_file = frames(data_dir / "rmd17" / f"rmd17_{molecule}_train_01.npz")
    order = torch.randperm(len(train_file["z"]), generator=torch.Generator().manual_seed(seed))
    parts = {"train": order[:950], "val": order[950:1000]}
    out = {name: {k: v[index] for k, v in train_file.items()} for name, index in parts.items()}
    out["test"] = frames(data_dir / "rmd17" / f"rmd17_{molecule}_test_01.npz")
    return out


def errors(run: EnergyForces, data: dict[str, Tensor], offset: float) -> tuple[float, ...]:
    r"""Energy MAE, force MAE and the energy MAE once the mean energy error is removed
    (a force-weighted loss learns a constant offset slowly)."""
    energy_error, force_error = [], []
    for start in range(0, len(data["z"]), 50):
        part = slice(start, start + 50)
        energy, forces = run(data["z"][part], data["pos"][part], False)
        target = (data["energy"][part] - offset).float()
        energy_error.append(energy.detach() - target)
        force_error.append((forces.detach() - data["forces"][part]).abs().flatten())
    energy_errors = torch.cat(energy_error)
    centred = energy_errors - energy_errors.mean()
    return (float(energy_errors.abs().mean()), float(torch.cat(force_error).mean()),
            float(centred.abs().mean()))


def loss_of(run: EnergyForces, z: Tensor, pos: Tensor, energy: Tensor, forces: Tensor,
            create_graph: bool, force_weight: float = FORCE_WEIGHT,
            energy_weight: float = 1.0, force_loss: str = "mse") -> Tensor:
    r""":math:`w_E\,\mathrm{mean}((\hat E - E)/N)^2 + w_F\,\mathrm{mean}(\hat F - F)^2`;
    ``force_loss="norm"`` takes the force term as the mean over atoms of
    :math:`\lVert\hat F_i - F_i\rVert` (GemNet's force loss), which weighs every atom's
    error by its size rather than its square, as a mean absolute error does."""
    predicted, predicted_forces = run(z, pos, create_graph)
    atoms = z.size(1)
    energy_term = ((predicted - energy.float()) / atoms).square().mean()
    force_error = predicted_forces - forces
    if force_loss == "mse":
        force_term = force_error.square().mean()
    elif force_loss == "norm":
        force_term = force_error.norm(dim=-1).mean()
    else:
        raise ValueError(f"force_loss {force_loss!r}: choose mse or norm")
    return energy_weight * energy_term + force_weight * force_term


@dataclass(frozen=True)
class ModelOptions:
    r"""Changes to ours' and hippynn's model and its start (MACE keeps its sizes).

    Args:
        width: features (default: ``SHAPE``'s).
        sensitivities: radial sensitivities, spread over the same range (default:
            ``SHAPE``'s).
        interactions: interaction layers (default: ``SHAPE``'s).
        cutoff: pair cutoff in Å (default: ``SHAPE``'s).
        soft_max: largest sensitivity distance in Å (default: ``SHAPE``'s).
        init: ``"fit"`` (each implementation's start from the training split) or
            ``"mean"`` (nothing fitted: the loop's energies less their mean only, as the
            loop's records before the fit).
        readout_decay: ours only: hippynn's decay of the higher readouts (``None``: off).
    """

    width: int | None = None
    sensitivities: int | None = None
    interactions: int | None = None
    cutoff: float | None = None
    soft_max: float | None = None
    init: str = "fit"
    readout_decay: float | None = None

    def __post_init__(self) -> None:
        if self.init not in ("fit", "mean"):
            raise ValueError(f"init {self.init!r}: choose fit or mean")

    def shape(self) -> dict[str, Any]:
        r""":data:`SHAPE` with these changes."""
        changed = dict(features=self.width, sensitivities=self.sensitivities,
                       interactions=self.interactions, cutoff=self.cutoff,
                       soft_max=self.soft_max)
        return {**SHAPE, **{key: value for key, value in changed.items() if value}}


def build(variant: str, train: dict[str, Tensor], offset: float,
          options: ModelOptions = ModelOptions(),  # noqa: B008 - frozen, so shared safely
          ) -> tuple[torch.nn.Module, EnergyForces, dict[str, Any]]:
    r"""The model of ``variant``, its energy-and-forces function and the config that
    rebuilds it, started from the training split (see the module docs).

    Args:
        variant: a key of :data:`VARIANTS`.
        train: the training frames.
        offset: the energy subtracted from every frame (eV).
        options: changes to ours' and hippynn's shape and start.
    """
    implementation, option = VARIANTS[variant]
    if implementation == "mace":
        return mace_model(option, train, offset)
    shape = options.shape()
    config = dict(shape=shape, tensor_order=option)
    if variant in PRODUCT_VARIANTS:
        config["tensor_products"] = True
    if implementation == "hippynn":
        model, run = hippynn_model(option, shape)
        if options.init == "fit":
            hippynn_initialize(model, train, offset)
        return model, run, config
    model, run = ours(option, shape, config.get("tensor_products", False))
    if options.init == "fit":
        fit_initial_energy(model, train, offset, options.readout_decay)
    return model, run, config


@contextmanager
def weights_of(model: torch.nn.Module, average: torch.nn.Module | None) -> Iterator[None]:
    r"""``model`` holding ``average``'s weights for a while (the EMA's, to validate)."""
    if average is None:
        yield
        return
    own = copy.deepcopy(model.state_dict())
    model.load_state_dict(average.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


def git_commit() -> str | None:
    r"""The checkout's short commit, with ``+uncommitted`` when its files differ."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()

    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_description() -> str | None:
    r"""The CPU's model name and its widest vector instruction set (AVX-512, AVX2 or
    neither): the machine's speed, and which models it favours, depend on both."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    flags = next((line.split() for line in info.splitlines() if line.startswith("flags")), [])
    widest = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no AVX2"
    return f"{model} ({widest})"


def train(variant: str, molecule: str, minutes: float, data_dir: Path, seed: int,
          weights: Path | None = None, clock: str = "cpu", recipe: str = "plain",
          recipe_changes: dict[str, Any] | None = None,
          options: ModelOptions = ModelOptions(),  # noqa: B008 - frozen, so shared safely
          ) -> dict[str, Any]:
    r"""Trains one variant with one recipe and returns its record.

    Args:
        variant: a key of :data:`VARIANTS`.
        molecule: the rMD17 molecule.
        minutes: the budget, in minutes of ``clock``.
        data_dir: the folder holding ``rmd17/``.
        seed: the split's order, the initial weights and the batches.
        weights: where the best weights go (``None``: not saved).
        clock: ``"cpu"`` (this process's CPU time) or ``"wall"``.
        recipe: ``"plain"`` or ``"own"`` (``same_loop_recipes.py``).
        recipe_changes: :class:`Recipe` fields that replace the recipe's (``schedule``,
            ``batch``, ``weight_decay``, ``force_weight``, ``lr``: the peak rate,
            ``force_loss``: :func:`loss_of`'s); ``None`` values are ignored.
        options: changes to ours' and hippynn's shape and start.
    """
    from hipnn_pyg.train.ema import ExponentialMovingAverage

    commit = git_commit()  # the code that runs: taken before, not after, the budget
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    implementation = VARIANTS[variant][0]
    plan: Recipe = recipe_for(recipe, implementation, **(recipe_changes or {}))
    data = split(data_dir, molecule, seed)
    offset = float(data["train"]["energy"].mean())
    train_set, val = data["train"], data["val"]
    model, run, config = build(variant, train_set, offset, options)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        raise RuntimeError(f"{variant} is not float32")
    untrained = errors(run, {k: v[:100] for k, v in data["test"].items()}, offset)

    # Ours decays decoupled (AdamW, as hipnn-train's module.optimizer=AdamW); MACE adds
    # its L2 to the gradient, as its recipe does. Without decay both are Adam. Both are
    # fused (one kernel over all tensors instead of the CPU's default loop over them; the
    # same arithmetic), as hipnn-train builds it (hipnn_pyg.train.optim.build_optimizer).
    adam = torch.optim.AdamW if implementation == "hipnn_pyg" and plan.weight_decay else \
        torch.optim.Adam
    optimizer = adam(parameter_groups(model, implementation, plan.weight_decay),
                     lr=plan.lr, amsgrad=plan.amsgrad, fused=True)
    schedule_ = Schedule(optimizer, plan)
    average = ExponentialMovingAverage(model, plan.ema) if plan.ema else None
    best, best_state, steps, epochs, rate = float("inf"), None, 0, 0, plan.lr
    weights_e, weights_f, stage_two_epoch = plan.energy_weight, plan.force_weight, None
    generator = torch.Generator().manual_seed(seed)
    now = time.process_time if clock == "cpu" else time.perf_counter
    start, wall_start = now(), time.perf_counter()
    budget = 60.0 * minutes
    while now() - start < budget:
        if plan.stage_two and stage_two_epoch is None and \
                (now() - start) / budget >= 1.0 - plan.stage_two:
            # MACE's stage two: new loss weights and rate; the best epoch is chosen afresh
            stage_two_epoch, best = epochs, float("inf")
            weights_e, weights_f = plan.stage_two_weights
            schedule_.start_stage_two()
        order = torch.randperm(len(train_set["z"]), generator=generator)
        for first in range(0, len(order) - plan.batch + 1, plan.batch):
            index = order[first:first + plan.batch]
            rate = schedule_.before_step(steps, (now() - start) / budget)
            loss = loss_of(run, train_set["z"][index], train_set["pos"][index],
                           train_set["energy"][index] - offset, train_set["forces"][index],
                           True, weights_f, weights_e, plan.force_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if plan.clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), plan.clip, foreach=True)
            optimizer.step()
            if average is not None:
                average.update(model)
            steps += 1
            if now() - start >= budget:
                break
        epochs += 1
        with weights_of(model, None if average is None else average.module):
            val_loss = float(loss_of(run, val["z"], val["pos"], val["energy"] - offset,
                                     val["forces"], False, weights_f, weights_e,
                                     plan.force_loss).detach())
            if val_loss < best:
                best, best_state = val_loss, copy.deepcopy(model.state_dict())
        schedule_.after_epoch(steps, val_loss)
    used = now() - start  # seconds of the budget's clock (CPU time unless --clock wall)
    wall = time.perf_counter() - wall_start
    if best_state is not None:
        model.load_state_dict(best_state)
    if plan.refit:  # ours: the end of hipnn-train (refit_self_energies)
        refit_energy(model, train_set, offset)
    if weights is not None:
        torch.save(model.state_dict(), weights)
    energy_mae, force_mae, centred_mae = errors(run, data["test"], offset)
    return dict(variant=variant, molecule=molecule, minutes=minutes, clock=clock,
                recipe=recipe, settings=dataclasses.asdict(plan), init=options.init,
                force_loss=plan.force_loss,  # also in settings; top level as in earlier records
                readout_decay=options.readout_decay if implementation == "hipnn_pyg" else None,
                seed=seed, steps=steps, epochs=epochs,
                stage_two_epoch=stage_two_epoch,
                # wall_s: the budget clock's seconds, as in the earlier records
                steps_per_s=steps / used, wall_s=used, elapsed_wall_s=wall, final_lr=rate,
                parameters=sum(p.numel() for p in model.parameters()),
                test_energy_mae_meV=1000 * energy_mae, test_forces_mae_meV_per_A=1000 * force_mae,
                test_energy_mae_offset_free_meV=1000 * centred_mae,
                untrained_energy_mae_meV=1000 * untrained[0],
                untrained_forces_mae_meV_per_A=1000 * untrained[1],
                offset_eV=offset, model_config=config, threads=torch.get_num_threads(),
                dtype="float32", commit=commit, cpu=cpu_description())  # checked above


def main() -> None:
    from hipnn_pyg.train.resolvers import reference_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="what --minutes counts: this process's CPU time or wall time")
    parser.add_argument("--recipe", choices=["plain", "own"], default="plain",
                        help="plain: one recipe for all; own: each model's (see "
                        "same_loop_recipes.py)")
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default=None,
                        help="replace the recipe's schedule")
    parser.add_argument("--batch", type=int, default=None, help="replace the recipe's batch")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="replace the recipe's weight decay (ours: AdamW's, on the "
                        "weight matrices)")
    parser.add_argument("--force-weight", type=float, default=None,
                        help="replace the recipe's force weight w_F (energy weight 1)")
    parser.add_argument("--lr", type=float, default=None,
                        help="replace the recipe's peak learning rate (MACE's stage-two "
                        "rate and the floor are kept)")
    parser.add_argument("--width", type=int, default=None,
                        help="features of ours and hippynn's (default 64)")
    parser.add_argument("--sensitivities", type=int, default=None,
                        help="radial sensitivities of ours and hippynn's (default 20)")
    parser.add_argument("--interactions", type=int, default=None,
                        help="interaction layers of ours and hippynn's (default 3)")
    parser.add_argument("--cutoff", type=float, default=None,
                        help="pair cutoff of ours and hippynn's in Å (default 5.5)")
    parser.add_argument("--soft-max", type=float, default=None,
                        help="largest sensitivity distance of ours and hippynn's in Å "
                        "(default 5.0)")
    parser.add_argument("--force-loss", choices=["mse", "norm"], default=None,
                        help="replace the recipe's force term: mean squared component "
                        "error, or the mean of each atom's error norm (ours' own recipe; "
                        "weigh --force-weight to it)")
    parser.add_argument("--init", choices=["fit", "mean"], default="fit",
                        help="ours and hippynn: each one's start fitted on the training "
                        "split (fit) or not (mean)")
    parser.add_argument("--readout-decay", type=float, default=None,
                        help="ours: hippynn's decay of the higher energy readouts, e.g. 0.01")
    args = parser.parse_args()
    changes = {name: getattr(args, name) for name in RECIPE_FLAGS}
    options = ModelOptions(**{field.name: getattr(args, field.name)
                              for field in dataclasses.fields(ModelOptions)})
    result = train(args.variant, args.molecule, args.minutes,
                   args.data_dir or reference_data_dir(), args.seed,
                   args.output.with_suffix(".weights.pt"), clock=args.clock,
                   recipe=args.recipe, recipe_changes=changes, options=options)
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    from hipnn_pyg.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
