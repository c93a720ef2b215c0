r"""Load time of the datasets (not a test): the whole of QM9 (130,831 molecules, the
shipped npz layout) through :class:`hipnn_pyg.data.QM9Dataset` against reading the
same arrays with numpy alone, and the DeePMD water frames (400 frames of 192 atoms,
gzipped extended XYZ) through :class:`hipnn_pyg.data.ASEDataset` against ASE's own
``read(..., index=":")`` of the file; each load in a fresh child process, the best of
``--repeats``, on one thread. The ratios say what the dataset's conversion costs
beyond reading the file.

    python scripts/bench_data.py [--repeats 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

QM9 = ("qm9", "qm9_qm9pack_130831.npz")
WATER = ("water_deepmd", "deepmd_water_192atoms.extxyz.gz")
#: loader -> (data file, what it builds)
LOADERS = {
    "QM9Dataset": (QM9, "130,831 QM9 molecules as a PyG dataset"),
    "numpy.load": (QM9, "the same npz's arrays, read whole"),
    "ASEDataset": (WATER, "400 water frames as a PyG dataset"),
    "ase.io.read": (WATER, "the same frames as ASE Atoms"),
}


def loader_of(name: str) -> Callable[[Path], int]:
    r"""The loader ``name``, its modules imported: a function of the file that returns
    how many structures it holds."""
    if name == "QM9Dataset":
        from hipnn_pyg.data import QM9Dataset

        return lambda path: len(QM9Dataset(path))
    if name == "ASEDataset":
        from hipnn_pyg.data import ASEDataset

        return lambda path: len(ASEDataset(path))
    if name == "numpy.load":
        import numpy as np

        def read_whole(path: Path) -> int:
            with np.load(path) as arrays:
                whole = {key: arrays[key] for key in arrays.files}
            return len(whole["offsets"]) - 1

        return read_whole
    from ase.io import read

    return lambda path: len(read(path, index=":"))


def child(name: str, path: Path) -> None:
    r"""One load in this process, after its imports: prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    load = loader_of(name)
    start = time.perf_counter()
    count = load(path)
    print(json.dumps({"seconds": time.perf_counter() - start, "structures": count}))


def measure(name: str, path: Path, repeats: int) -> dict:
    r"""The best of ``repeats`` loads, each in a fresh process."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", name, str(path)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda run: run["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    from same_loop import git_commit

    from hipnn_pyg.train.resolvers import reference_data_dir

    data_dir = args.data_dir or reference_data_dir()
    results = {loader: measure(loader, data_dir.joinpath(*file), args.repeats)
               for loader, (file, _) in LOADERS.items()}
    lines = [f"# bench_data {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit "
             f"{git_commit()}, best of {args.repeats} fresh processes, one thread",
             "| loader | file | builds | structures | seconds | ratio to the plain read |",
             "|---|---|---|---|---|---|"]
    peers = {"QM9Dataset": "numpy.load", "ASEDataset": "ase.io.read"}
    for loader, ((folder, name), builds) in LOADERS.items():
        result = results[loader]
        peer = peers.get(loader)
        ratio = f"{result['seconds'] / results[peer]['seconds']:.2f}" if peer else "1"
        lines.append(f"| {loader} | {folder}/{name} | {builds} | {result['structures']} | "
                     f"{result['seconds']:.2f} | {ratio} |")
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
