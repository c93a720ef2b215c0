"""Speed benchmark: one force-training step of HIP-NN, fused vs message-passing
environment sum, beside PyG's SchNet as a peer, all measured in the same run.

Timings interleave the contenders round by round and report medians, so load from
other processes hits all of them alike. Prints milliseconds per step and ratios.

    python scripts/bench_speed.py [--batch-size 32] [--hidden 128] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn.models import SchNet

from hipnn_pyg import HIPNN, radius_graph
from hipnn_pyg.nn import predict

REPO = Path(__file__).resolve().parents[1]


def ethanol_batch(batch_size: int) -> Batch:
    raw = np.load(REPO / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz")
    z = torch.as_tensor(raw["nuclear_charges"].astype(np.int64))
    frames = [
        Data(z=z, pos=torch.as_tensor(raw["coords"][i], dtype=torch.float32))
        for i in range(batch_size)
    ]
    return Batch.from_data_list(frames)


def hipnn_step(model: HIPNN, batch: Batch) -> Callable[[], None]:
    optimiser = torch.optim.Adam(model.parameters())

    def step() -> None:
        out = predict(model, batch, compute_forces=True, create_graph=True)
        loss = out["energy"].square().mean() + out["forces"].square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def schnet_step(model: SchNet, batch: Batch) -> Callable[[], None]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = ethanol_batch(args.batch_size)

    def hipnn(fused: bool) -> HIPNN:
        model = HIPNN(hidden_channels=args.hidden, num_interactions=3, cutoff=args.cutoff,
                      soft_max_distance=min(5.5, args.cutoff - 0.5))
        for interaction in model.representation.interactions:
            interaction.fused = fused
        return model

    def graph(pos: torch.Tensor, batch_index: torch.Tensor):
        # PyG's radius_graph needs pyg-lib; the same torch_cluster search stands in.
        pairs = radius_graph(pos, args.cutoff, batch_index)
        return pairs.edge_index, pairs.distances

    schnet = SchNet(hidden_channels=args.hidden, num_filters=args.hidden,
                    num_interactions=3, cutoff=args.cutoff, interaction_graph=graph)
    contenders = {
        "hipnn fused envsum": hipnn_step(hipnn(True), batch),
        "hipnn message passing": hipnn_step(hipnn(False), batch),
        "pyg SchNet (peer)": schnet_step(schnet, batch),
    }
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for step in contenders.values():
        step()  # warm-up
    for _ in range(args.rounds):
        for name, step in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            timings[name].append((time.perf_counter() - start) / args.steps * 1e3)

    print(f"force-training step, {args.batch_size} ethanol molecules (rMD17), "
          f"{args.hidden} features, 3 interactions, cutoff {args.cutoff} Å, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    fused = statistics.median(timings["hipnn fused envsum"])
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median:9.1f} ms/step   {median / fused:5.2f}x the fused time")


if __name__ == "__main__":
    main()
