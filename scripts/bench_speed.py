"""Speed and memory benchmark of the HIP-NN environment sum: the envsum kernel vs the
padded block vs message passing, all measured in the same run.

1. Throughput on rMD17 aspirin (HIP-NN defaults: width 64, 2 interactions, 3 on-site
   layers, 20 sensitivities, cutoff 6.5 Å, float32): energy+forces inference
   (batch 64) and one force-training step (batch 32). Contenders alternate round by
   round and medians are reported, so load from other processes hits all alike.
2. Scaling on bulk water (the 192-atom DeePMD cell repeated 1, 2, 4, 8 times per
   axis; width 64, 2 interactions, cutoff 5 Å): energy+forces inference, each size and
   method in a fresh child process that reports atoms/s and its peak resident memory.

Inference runs with frozen parameters, as the ASE calculator does.

PyG's SchNet (same width and depth) is a peer in the training step; hippynn (LANL's
HIP-NN, ``pip install hippynn``), when importable, is the peer of both at the same
architecture, through the same energy-and-forces function as ``same_loop.py``.

3. Tensor sensitivities: one force-training step (batch 16, rMD17 ethanol and aspirin,
   the shape of the rMD17 experiments: 3 interactions) of HIP-NN and HIP-NN-TS with
   ``tensor_order`` 1 and 2, ours and hippynn's (``Hipnn``, ``HipnnVec``,
   ``HipnnQuad``), with each one's cost relative to its own plain HIP-NN.

4. MD speed through ASE (``bench_md.py``): steps/s of the eager calculator, the
   exported program with a Verlet list, and its AOTInductor build, against hippynn's
   ASE calculator, for ethanol and 12,288-atom water.
5. ``--sections optimizer`` (not in the default set): an aspirin force-training step
   with Adam's per-tensor loop against its fused form (``hipnn-train``'s).

    python scripts/bench_speed.py [--threads 1] [--rounds 5] [--max-atoms 98304] \
        [--sections throughput tensor scaling md optimizer largest]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn.models import SchNet

from hipnn_pyg import HIPNN, radius_graph
from hipnn_pyg.nn import predict
from hipnn_pyg.nn.envsum import available_backends
from hipnn_pyg.train.resolvers import reference_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_md  # noqa: E402 - the MD section
import same_loop  # noqa: E402 - the shared model builders of the accuracy comparison

DATA = reference_data_dir()  # $HIPNN_DATA_DIR, else ../shared/data beside the checkout
WATER_REPEATS = {192: 1, 1536: 2, 12288: 4, 98304: 8}


def methods() -> dict[str, tuple[str, str | None]]:
    r"""Label -> (interaction method, envsum backend)."""
    table: dict[str, tuple[str, str | None]] = {}
    for backend in available_backends():
        table[f"envsum ({backend})"] = ("envsum", backend)
    table["padded"] = ("padded", None)
    table["message passing"] = ("message_passing", None)
    return table


def configure(model: HIPNN, method: str, backend: str | None) -> HIPNN:
    for interaction in model.representation.interactions:
        interaction.method = method
        interaction.envsum_backend = backend
    return model


def aspirin_batch(batch_size: int) -> Batch:
    raw = np.load(DATA / "rmd17" / "rmd17_aspirin_train_01.npz")
    z = torch.as_tensor(raw["nuclear_charges"].astype(np.int64))
    frames = [
        Data(z=z, pos=torch.as_tensor(raw["coords"][i], dtype=torch.float32))
        for i in range(batch_size)
    ]
    return Batch.from_data_list(frames)


def inference(model: HIPNN, batch: Batch) -> Callable[[], None]:
    model.requires_grad_(False)  # as the ASE calculator runs: forces only

    def run() -> None:
        predict(model, batch, compute_forces=True)

    return run


def training_step(model: HIPNN, batch: Batch) -> Callable[[], None]:
    optimiser = torch.optim.Adam(model.parameters())

    def step() -> None:
        out = predict(model, batch, compute_forces=True, create_graph=True)
        loss = out["energy"].square().mean() + out["forces"].square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def schnet_step(batch: Batch, cutoff: float) -> Callable[[], None]:
    r"""PyG's SchNet at the same width and depth, as a peer for the training step."""

    def graph(pos: torch.Tensor, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # PyG's radius_graph needs pyg-lib; the same torch_cluster search stands in.
        pairs = radius_graph(pos, cutoff, batch_index)
        return pairs.edge_index, pairs.distances

    model = SchNet(hidden_channels=64, num_filters=64, num_interactions=2, cutoff=cutoff,
                   interaction_graph=graph)
    optimiser = torch.optim.Adam(model.parameters())

    def step() -> None:
        pos = batch.pos.detach().requires_grad_(True)
        energy = model(batch.z, pos, batch.batch).view(-1)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
        loss = energy.square().mean() + forces.square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time it to completion


def race(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    r"""Median seconds per call of each contender, interleaved round by round."""
    for run in contenders.values():
        run()  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            _sync()
            start = time.perf_counter()
            run()
            _sync()
            timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in timings.items()}


#: HIPNN()'s defaults, for the hippynn peer of the throughput section.
DEFAULT_SHAPE = dict(features=64, interactions=2, atom_layers=3, sensitivities=20,
                     soft_min=0.75, soft_max=5.5, cutoff=6.5)


def frames_of(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    count = batch.num_graphs
    return batch.z.view(count, -1), batch.pos.view(count, -1, 3)


def peer_inference(shape: dict, batch: Batch) -> Callable[[], None]:
    model, run = same_loop.hippynn_model(0, shape)
    model.to(batch.pos.device).requires_grad_(False)
    z, pos = frames_of(batch)
    return lambda: run(z, pos.clone().requires_grad_(True), False)


def peer_step(builder: Callable, tensor_order: int, shape: dict,
              batch: Batch, fused: bool | None = None) -> Callable[[], None]:
    r"""One force-training step through ``same_loop``'s loop body (Adam per tensor, or
    ``fused``)."""
    model, run = builder(tensor_order, shape)
    model.to(batch.pos.device)
    optimiser = torch.optim.Adam(model.parameters(), fused=fused)
    z, pos = frames_of(batch)
    energy = torch.zeros(batch.num_graphs, device=batch.pos.device)
    forces = torch.zeros_like(pos)

    def step() -> None:
        loss = same_loop.loss_of(run, z, pos, energy, forces, True)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def rmd17_batch(molecule: str) -> Batch:
    r"""The first ``same_loop.BATCH`` frames of rMD17 ``molecule``'s split-01 training file."""
    raw = np.load(DATA / "rmd17" / f"rmd17_{molecule}_train_01.npz")
    z = torch.as_tensor(raw["nuclear_charges"].astype(np.int64))
    return Batch.from_data_list([
        Data(z=z, pos=torch.as_tensor(raw["coords"][i], dtype=torch.float32))
        for i in range(same_loop.BATCH)])


def optimizers(args: argparse.Namespace) -> None:
    r"""A force-training step of HIP-NN-TS l = 2 on aspirin (ten sensitivities and the
    squared loss: the rMD17 recipe when docs/benchmarks/optimizer_fused.txt was measured;
    the recipe now has eight and the force-norm loss) with Adam's default per-tensor loop
    and with its fused form, which ``hipnn-train``
    (``hipnn_pyg.train.optim.build_optimizer``) and ``same_loop.py`` use."""
    batch = rmd17_batch("aspirin")
    shape = dict(same_loop.SHAPE, sensitivities=10)
    contenders = {}
    for name, fused in (("per-tensor", None), ("fused", True)):
        torch.manual_seed(0)
        contenders[name] = peer_step(same_loop.ours, 2, shape, batch, fused)
    seconds = race(contenders, args.rounds)
    print(f"\nforce-training step by Adam's form, rMD17 aspirin, batch {same_loop.BATCH}, "
          f"HIP-NN-TS l = 2, 10 sensitivities, median of {args.rounds}")
    for name, value in seconds.items():
        print(f"  Adam {name:10s}  {1000 * value:8.1f} ms/step  "
              f"{value / seconds['per-tensor']:5.2f}x per-tensor")


def tensor_orders(args: argparse.Namespace) -> None:
    builders = {"hipnn_pyg": same_loop.ours}
    if same_loop.hippynn_available():
        builders["hippynn"] = same_loop.hippynn_model
    for molecule in ("ethanol", "aspirin"):
        batch = rmd17_batch(molecule)
        contenders = {}
        for name, builder in builders.items():
            for order in (0, 1, 2):
                torch.manual_seed(0)
                contenders[name, order] = peer_step(builder, order, same_loop.SHAPE, batch)
        seconds = race(contenders, args.rounds)
        print(f"\nforce-training step by tensor order, rMD17 {molecule}, batch "
              f"{same_loop.BATCH}, 3 interactions, median of {args.rounds}")
        for (name, order), value in seconds.items():
            print(f"  {name:10s} tensor_order {order}  {1000 * value:8.1f} ms/step  "
                  f"{value / seconds[name, 0]:5.2f}x its tensor_order 0")


def throughput(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    # On a GPU: every envsum backend there (torch, and triton where it is installed).
    table = methods() if device.type == "cpu" else {
        **{f"envsum ({backend})": ("envsum", backend)
           for backend in available_backends(device)},
        "padded": ("padded", None)}
    for title, size, make, unit, count in [
        ("energy+forces inference", 64, inference, "atoms/s", "atoms"),
        ("force-training step", 32, training_step, "structures/s", "structures"),
    ]:
        batch = aspirin_batch(size).to(device)
        contenders = {}
        for label, (method, backend) in table.items():
            torch.manual_seed(0)
            contenders[label] = make(configure(HIPNN().to(device), method, backend), batch)
        if make is training_step and device.type == "cpu":
            torch.manual_seed(0)
            contenders["pyg SchNet (peer)"] = schnet_step(batch, HIPNN().cutoff)
        if same_loop.hippynn_available():
            torch.manual_seed(0)
            contenders["hippynn (peer)"] = (
                peer_inference(DEFAULT_SHAPE, batch) if make is inference
                else peer_step(same_loop.hippynn_model, 0, DEFAULT_SHAPE, batch))
        seconds = race(contenders, args.rounds)
        amount = batch.num_nodes if count == "atoms" else batch.num_graphs
        print(f"\n{title}, rMD17 aspirin, batch {size} ({batch.num_nodes} atoms), "
              f"median of {args.rounds}, on {device}")
        reference = seconds.get("hippynn (peer)", seconds["padded"])
        against = "hippynn's" if "hippynn (peer)" in seconds else "the padded path's"
        for label, value in seconds.items():
            print(f"  {label:20s} {amount / value:10.0f} {unit:13s} "
                  f"{reference / value:5.2f}x {against} speed")


def water(repeats: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ase.io import read

    with gzip.open(DATA / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz", "rt") as f:
        atoms = read(f, index=0, format="extxyz")
    atoms = atoms.repeat((repeats, repeats, repeats))
    return (torch.as_tensor(atoms.numbers, dtype=torch.long),
            torch.as_tensor(atoms.positions, dtype=torch.float32),
            torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float32))


def peak_memory_gb() -> float:
    r"""This process's peak resident memory. ``VmHWM`` restarts at ``exec``, unlike
    ``getrusage``'s ``ru_maxrss``, which a child inherits from its forked parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not Linux


def child(args: argparse.Namespace) -> None:
    r"""One water size and method in this process: prints a JSON line."""
    z, pos, cell = water(WATER_REPEATS[args.child_atoms])
    data = Data(z=z, pos=pos, cell=cell[None], pbc=torch.ones(1, 3, dtype=torch.bool))
    torch.manual_seed(0)
    model = HIPNN(species=(1, 8), cutoff=5.0, soft_max_distance=4.5)
    method, backend = methods()[args.child_method]
    configure(model, method, backend).requires_grad_(False)  # as the ASE calculator
    baseline = peak_memory_gb()
    times = []
    while len(times) < 2 or (sum(times) < 3.0 and len(times) < 5):
        start = time.perf_counter()
        predict(model, data, compute_forces=True)
        times.append(time.perf_counter() - start)
    print(json.dumps({"atoms_per_s": z.numel() / statistics.median(times[1:]),
                      "peak_gb": peak_memory_gb(), "baseline_gb": baseline}))


def scaling(args: argparse.Namespace) -> None:
    print("\nscaling: bulk water, energy+forces inference, width 64, 2 interactions, "
          "cutoff 5 Å; one child process per entry: its peak RSS (VmHWM), and per atom "
          "above its peak before the first call (Python, torch, model, data)")
    results: dict[str, dict[int, dict[str, float]]] = {}
    # The default envsum backend and the padded path; message passing is slower still
    # and keeps per-edge outer products (see the throughput section).
    default = f"envsum ({available_backends()[-1]})"
    for label in (default, "padded"):
        results[label] = {}
        limit = args.max_atoms if label.startswith("envsum") else args.padded_max_atoms
        for atoms in WATER_REPEATS:
            if atoms > limit:
                continue
            command = [sys.executable, __file__, "--child-atoms", str(atoms),
                       "--child-method", label, "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"  {label} at {atoms} atoms failed: {done.stderr.strip()[-300:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[label][atoms] = result
            print(f"  {label:18s} {atoms:7d} atoms {result['atoms_per_s']:9.0f} atoms/s   "
                  f"peak RSS {result['peak_gb']:5.2f} GB "
                  f"({(result['peak_gb'] - result['baseline_gb']) * 2**20 / atoms:6.1f} "
                  "KiB/atom above the model's baseline)", flush=True)
    for label, table in results.items():
        if 192 in table and len(table) > 1:
            largest = max(table)
            ratio = table[largest]["atoms_per_s"] / table[192]["atoms_per_s"]
            print(f"  {label}: throughput at {largest} atoms is {ratio:.2f}x that at 192")
    envsum = next((t for name, t in results.items() if name.startswith("envsum")), {})
    for atoms, entry in results.get("padded", {}).items():
        if atoms in envsum:
            print(f"  {atoms:7d} atoms: padded/envsum peak RSS "
                  f"{entry['peak_gb'] / envsum[atoms]['peak_gb']:.2f}x, envsum/padded speed "
                  f"{envsum[atoms]['atoms_per_s'] / entry['atoms_per_s']:.2f}x")


def largest_water(args: argparse.Namespace) -> None:
    r"""Energy+forces on ever larger water boxes (the 192-atom cell repeated 1, 2, 4, ...
    times per axis) on ``--device`` until one does not fit: atoms/s and peak memory."""
    device = torch.device(args.device)
    print(f"\nlargest water box for energy+forces on {device} (width 64, 2 interactions, "
          "cutoff 5 Å, float32)")
    torch.manual_seed(0)
    model = HIPNN(species=(1, 8), cutoff=5.0, soft_max_distance=4.5).to(device)
    model.requires_grad_(False)
    repeats = 1
    while repeats <= args.max_repeats:
        z, pos, cell = water(repeats)
        data = Data(z=z, pos=pos, cell=cell[None], pbc=torch.ones(1, 3, dtype=torch.bool))
        data = data.to(device)
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = race({"run": lambda data=data: predict(model, data, compute_forces=True)},
                           1)["run"]
        except torch.OutOfMemoryError:
            print(f"  {z.numel():8d} atoms: out of memory")
            break
        peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
                else peak_memory_gb())
        print(f"  {z.numel():8d} atoms: {z.numel() / seconds:9.0f} atoms/s, peak "
              f"{peak:6.2f} GB", flush=True)
        repeats *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-atoms", type=int, default=98304,
                        help="largest water system for the envsum kernel")
    parser.add_argument("--padded-max-atoms", type=int, default=12288,
                        help="largest water system for the padded path (9 GB at 98,304)")
    parser.add_argument("--sections", nargs="+",
                        default=["throughput", "tensor", "scaling", "md"],
                        choices=["throughput", "tensor", "scaling", "md", "largest",
                                 "optimizer"])
    parser.add_argument("--device", default="cpu",
                        help="torch device of the throughput and largest sections")
    parser.add_argument("--max-repeats", type=int, default=64,
                        help="largest repetition of the water cell per axis (largest)")
    parser.add_argument("--child-atoms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_atoms:
        child(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, "
          f"{os.cpu_count()} CPU cores (shared), envsum backends: {available_backends()}")
    if not same_loop.hippynn_available():
        print("hippynn is not installed: no hippynn peer in this run")
    if "throughput" in args.sections:
        throughput(args)
    if "tensor" in args.sections:
        tensor_orders(args)
    if "optimizer" in args.sections:
        optimizers(args)
    if "scaling" in args.sections:
        scaling(args)
    if "largest" in args.sections:
        largest_water(args)
    if "md" in args.sections:
        bench_md.run(argparse.Namespace(steps=100, rounds=5, water_repeats=4, aoti=True,
                                        engines=True))


if __name__ == "__main__":
    main()
