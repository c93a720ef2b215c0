r"""One model on rMD17 through a plain training loop shared by every model, for the
side-by-side comparison of ``bench_accuracy.py --same-loop`` (not a test).

The loop is the same for hipnn_pyg and for LANL's hippynn (the reference HIP-NN,
``pip install hippynn``): official split 01 (950 training / 50 validation frames of the
training file, in a seeded order, 1000 test frames), float32, one thread, batch 16,
loss :math:`((\hat E - E)/N)^2 + 100\,|\hat F - F|^2` in eV and Å (energies less the
training mean), Adam at 3e-3 halved after 10 epochs without a better validation loss
(down to 1e-5), no warm-up, clipping or EMA, a budget of CPU time (``--clock cpu``, the
default: runs sharing cores stay comparable) or of wall time; the test errors are
those of the best validation epoch. Both models are HIP-NN of the same shape (64
features, 3 interactions of 3 on-site layers, 20 sensitivities from 0.75 to 5 Å,
cutoff 5.5 Å), hippynn's as ``Hipnn``/``HipnnQuad``, ours as ``HIPNN(tensor_order=...)``
(hippynn's ``HipnnVec`` for order 1).

Example::

    python scripts/same_loop.py --variant hippynn --molecule ethanol --minutes 10 \
        --output ethanol_hippynn.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

#: variant -> (implementation, tensor order)
VARIANTS = {
    "hipnn_pyg": ("hipnn_pyg", 0),
    "hipnn_pyg_ts1": ("hipnn_pyg", 1),
    "hipnn_pyg_ts2": ("hipnn_pyg", 2),
    "hippynn": ("hippynn", 0),
    "hippynn_vec": ("hippynn", 1),
    "hippynn_quad": ("hippynn", 2),
}
SHAPE = dict(features=64, interactions=3, atom_layers=3, sensitivities=20,
             soft_min=0.75, soft_max=5.0, cutoff=5.5)
SPECIES = (1, 6, 7, 8)
FORCE_WEIGHT = 100.0
BATCH = 16

#: (z [B, A], pos [B, A, 3], create_graph) -> (energy [B], forces [B, A, 3])
EnergyForces = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor]]


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


def hippynn_available() -> bool:
    r"""Whether hippynn is importable (the peer of the benchmarks)."""
    try:
        import hippynn  # noqa: F401
    except ImportError:
        return False
    # hippynn compiles its pytorch kernels and hits dynamo's recompile limit: noise only.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    return True


def ours(tensor_order: int, shape: dict = SHAPE) -> tuple[torch.nn.Module, EnergyForces]:
    r"""hipnn_pyg's HIPNN of ``shape`` and its energy-and-forces function."""
    from hipnn_pyg import HIPNN

    model = HIPNN(species=SPECIES, hidden_channels=shape["features"],
                  num_interactions=shape["interactions"], num_atom_layers=shape["atom_layers"],
                  num_sensitivities=shape["sensitivities"], soft_min_distance=shape["soft_min"],
                  soft_max_distance=shape["soft_max"], cutoff=shape["cutoff"],
                  tensor_order=tensor_order)

    def run(z: Tensor, pos: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        count, atoms = z.shape
        flat = pos.reshape(-1, 3).detach().requires_grad_(True)
        energy = model(z.reshape(-1), flat, torch.arange(count).repeat_interleave(atoms))
        (gradient,) = torch.autograd.grad(energy.sum(), flat, create_graph=create_graph)
        return energy.float(), -gradient.view(count, atoms, 3)

    return model, run


def hippynn_model(tensor_order: int, shape: dict = SHAPE) -> tuple[torch.nn.Module,
                                                                    EnergyForces]:
    r"""hippynn's ``Hipnn`` (``HipnnQuad`` for order 2) of ``shape``, same function."""
    warnings.filterwarnings("ignore")  # hippynn warns about its optional kernels
    from hippynn.graphs import GraphModule, inputs, networks, physics, targets

    species = inputs.SpeciesNode(db_name="Z")
    positions = inputs.PositionsNode(db_name="R")
    options = dict(possible_species=[0, *SPECIES], n_features=shape["features"],
                   n_sensitivities=shape["sensitivities"], dist_soft_min=shape["soft_min"],
                   dist_soft_max=shape["soft_max"], dist_hard_max=shape["cutoff"],
                   n_interaction_layers=shape["interactions"],
                   n_atom_layers=shape["atom_layers"])
    if tensor_order == 1:
        network = networks.HipnnVec("hipnn", (species, positions),
                                    module_kwargs=dict(options, cusp_reg=1e-6))
    elif tensor_order == 2:
        network = networks.HipnnQuad("hipnn", (species, positions),
                                     module_kwargs=dict(options, cusp_reg=1e-6))
    else:
        network = networks.Hipnn("hipnn", (species, positions), module_kwargs=options)
    energy_node = targets.HEnergyNode("HEnergy", network)
    forces_node = physics.GradientNode("forces", (energy_node, positions), sign=-1)
    model = GraphModule([species, positions], [energy_node.mol_energy, forces_node])
    model.energy_node = energy_node  # for hippynn's ASE calculator (bench_md.py)

    def run(z: Tensor, pos: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        energy, forces = model(z, pos)  # hippynn always keeps the graph of its forces
        return energy.view(-1), forces

    return model, run


def errors(run: EnergyForces, data: dict[str, Tensor], offset: float) -> tuple[float, ...]:
    r"""Energy MAE, force MAE and the energy MAE once the mean energy error is removed
    (the loss weighs energies little, so a constant offset is learnt slowly)."""
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
            create_graph: bool) -> Tensor:
    predicted, predicted_forces = run(z, pos, create_graph)
    atoms = z.size(1)
    energy_term = ((predicted - energy.float()) / atoms).square().mean()
    return energy_term + FORCE_WEIGHT * (predicted_forces - forces).square().mean()


def train(variant: str, molecule: str, minutes: float, data_dir: Path, seed: int,
          weights: Path | None = None, clock: str = "cpu") -> dict:
    r"""Trains one variant; writes its best weights to ``weights`` when given."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    implementation, tensor_order = VARIANTS[variant]
    model, run = (ours if implementation == "hipnn_pyg" else hippynn_model)(tensor_order)
    data = split(data_dir, molecule, seed)
    offset = float(data["train"]["energy"].mean())
    train_set, val = data["train"], data["val"]
    untrained = errors(run, {k: v[:100] for k, v in data["test"].items()}, offset)

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=10,
                                                           min_lr=1e-5)
    best, best_state, steps, epochs = float("inf"), None, 0, 0
    generator = torch.Generator().manual_seed(seed)
    now = time.process_time if clock == "cpu" else time.perf_counter
    start = now()
    deadline = start + 60.0 * minutes
    while now() < deadline:
        order = torch.randperm(len(train_set["z"]), generator=generator)
        for first in range(0, len(order) - BATCH + 1, BATCH):
            index = order[first:first + BATCH]
            loss = loss_of(run, train_set["z"][index], train_set["pos"][index],
                           train_set["energy"][index] - offset, train_set["forces"][index], True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if now() >= deadline:
                break
        epochs += 1
        val_loss = float(loss_of(run, val["z"], val["pos"], val["energy"] - offset,
                                 val["forces"], False).detach())
        scheduler.step(val_loss)
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
    wall = now() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    if weights is not None:
        torch.save(model.state_dict(), weights)
    energy_mae, force_mae, centred_mae = errors(run, data["test"], offset)
    return dict(variant=variant, molecule=molecule, minutes=minutes, clock=clock, steps=steps,
                epochs=epochs, steps_per_s=steps / wall, wall_s=wall,
                parameters=sum(p.numel() for p in model.parameters()),
                test_energy_mae_meV=1000 * energy_mae, test_forces_mae_meV_per_A=1000 * force_mae,
                test_energy_mae_offset_free_meV=1000 * centred_mae,
                untrained_forces_mae_meV_per_A=1000 * untrained[1])


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
    args = parser.parse_args()
    result = train(args.variant, args.molecule, args.minutes,
                   args.data_dir or reference_data_dir(), args.seed,
                   args.output.with_suffix(".weights.pt"), args.clock)
    from hipnn_pyg.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
