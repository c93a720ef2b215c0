r"""Memory of the neighbour search (not a test): bulk water at up to 98,304 atoms (the
192-atom DeePMD cell repeated 1, 2, 4, 8 times per axis), :func:`hipnn_pyg.radius_graph`
with its default settings, against the size of the pair list it returns and against
ASE's ``neighbor_list`` on the same structure, each size and code in a fresh child
process that reports its peak resident memory (``VmHWM``) above its peak before the
search, and its wall time.

The working cap of the search (:mod:`hipnn_pyg.graph`) is printed with what
torch-cluster's CUDA ``radius`` would allocate for it (``num_atoms × cap`` int64), beside
what the former default cap, one slot per candidate image point, would have asked for.

    python scripts/bench_graph.py [--cutoff 5.0] [--max-atoms 98304] [--output FILE]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import peak_memory_gb  # noqa: E402 - the same VmHWM reading

REPEATS = {192: 1, 1536: 2, 12288: 4, 98304: 8}


def water(repeats: int):
    from ase.io import read

    from hipnn_pyg.train.resolvers import reference_data_dir

    path = reference_data_dir() / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz"
    with gzip.open(path, "rt") as stream:
        atoms = read(stream, index=0, format="extxyz")
    return atoms.repeat((repeats, repeats, repeats))


def child(code: str, atoms_count: int, cutoff: float) -> None:
    r"""One search in this process: prints a JSON line."""
    import torch

    atoms = water(REPEATS[atoms_count])
    pos = torch.as_tensor(atoms.positions, dtype=torch.float32)
    cell = torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float32)[None]
    pbc = torch.ones(1, 3, dtype=torch.bool)
    if code == "hipnn_pyg":
        from hipnn_pyg import graph

        caps: list[int] = []
        candidates: list[int] = []
        search = graph._capped_search

        def recording(search_fn, num_centres, max_num_neighbors, first_cap, num_candidates,
                      **options):
            def counted(cap: int):
                caps.append(cap)
                return search_fn(cap)
            candidates.append(num_candidates)
            return search(counted, num_centres, max_num_neighbors, first_cap, num_candidates,
                          **options)

        graph._capped_search = recording
        baseline = peak_memory_gb()
        start = time.perf_counter()
        result = graph.radius_graph(pos, cutoff, cell=cell, pbc=pbc)
        seconds = time.perf_counter() - start
        pairs = result.edge_index.size(1)
        returned = sum(t.numel() * t.element_size() for t in result)
        extra = {"caps": caps, "candidates": candidates[0], "returned_gb": returned / 2**30}
    else:
        from ase.neighborlist import neighbor_list

        baseline = peak_memory_gb()
        start = time.perf_counter()
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
        seconds = time.perf_counter() - start
        pairs = len(i)
        extra = {}
    print(json.dumps({"code": code, "atoms": len(atoms), "pairs": pairs, "seconds": seconds,
                      "peak_gb": peak_memory_gb(), "above_baseline_gb":
                      peak_memory_gb() - baseline, **extra}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--max-atoms", type=int, default=98304)
    parser.add_argument("--output", type=Path, default=None, help="JSON lines of the runs")
    parser.add_argument("--child", nargs=2, metavar=("CODE", "ATOMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.cutoff)
        return
    rows = []
    print(f"neighbour search, bulk water, cutoff {args.cutoff} Å, float32; peak RSS above "
          "the child's peak before the search")
    for atoms in (n for n in REPEATS if n <= args.max_atoms):
        for code in ("hipnn_pyg", "ase"):
            out = subprocess.run([sys.executable, __file__, "--child", code, str(atoms),
                                  "--cutoff", str(args.cutoff)], check=True,
                                 capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            line = (f"  {row['code']:9s} {row['atoms']:6d} atoms {row['pairs']:9d} pairs "
                    f"{row['seconds']:6.2f} s  peak +{row['above_baseline_gb']:.3f} GB")
            if code == "hipnn_pyg":
                cap = row["caps"][-1]
                line += (f" ({row['above_baseline_gb'] / row['returned_gb']:.2f}x the "
                         f"{row['returned_gb']:.3f} GB it returns); caps tried {row['caps']}: "
                         f"a CUDA search would allocate {atoms * cap * 8 / 2**30:.3f} GB, "
                         f"with one slot per candidate image "
                         f"{atoms * row['candidates'] * 8 / 2**30:.1f} GB")
            print(line, flush=True)
        ours, theirs = rows[-2], rows[-1]
        print(f"  {atoms:6d} atoms: hipnn_pyg / ASE peak memory "
              f"{ours['above_baseline_gb'] / max(theirs['above_baseline_gb'], 1e-9):.2f}x, "
              f"time {ours['seconds'] / theirs['seconds']:.2f}x; same pairs: "
              f"{ours['pairs'] == theirs['pairs']}", flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
