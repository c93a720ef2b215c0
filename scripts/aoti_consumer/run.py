r"""Builds the C++ consumer (``main.cpp``) of an AOTInductor package against the
installed libtorch, runs it on ethanol and on a periodic water cell, and compares its
energies and forces with the eager model's (not a test: the AOTInductor build takes
1-2 minutes).

    python scripts/aoti_consumer/run.py [--model model.pt] [--workdir DIR]

Without ``--model`` a HIP-NN for H, C, O (cutoff 5 Å) is initialised from a fixed seed.
Exits 1 when a force differs from the eager model's by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hipnn_pyg import HIPNN, load_model
from hipnn_pyg.export import (
    EnergyForces,
    compile_aoti,
    export_energy_forces,
    export_metadata,
    pair_list,
)
from hipnn_pyg.nn import energy_forces_stress
from hipnn_pyg.nn.csrc import extension_available, library_path
from hipnn_pyg.train.resolvers import reference_data_dir

HERE = Path(__file__).resolve().parent


def build_consumer(output: Path) -> Path:
    r"""Compiles ``main.cpp`` against the libtorch of the running ``torch``."""
    root = Path(torch.__file__).parent
    command = [
        "c++", "-std=c++20", "-O2", str(HERE / "main.cpp"), "-o", str(output),
        f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-L{root / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{root / 'lib'}",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return output


def structures() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    from ase.io import read

    data = reference_data_dir()
    raw = np.load(data / "rmd17" / "rmd17_ethanol_test_01.npz")
    ethanol = (torch.as_tensor(raw["nuclear_charges"].astype(np.int64)),
               torch.as_tensor(raw["coords"][0]), None)
    with gzip.open(data / "water_deepmd" / "deepmd_water_192atoms.extxyz.gz", "rt") as f:
        atoms = read(f, index=0, format="extxyz")
    water = (torch.as_tensor(atoms.numbers, dtype=torch.long),
             torch.as_tensor(atoms.positions), torch.as_tensor(np.asarray(atoms.cell))[None])
    return {"ethanol (9 atoms)": ethanol, "water (192 atoms, periodic)": water}


def as_text(z: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
            offsets: torch.Tensor) -> str:
    lines = [f"{z.numel()} {edge_index.size(1)}"]
    lines += [f"{int(n)} {x!r} {y!r} {w!r}" for n, (x, y, w) in zip(z, pos.tolist(),
                                                                     strict=True)]
    lines += [f"{j} {i} {a!r} {b!r} {c!r}" for (j, i), (a, b, c) in
              zip(edge_index.t().tolist(), offsets.tolist(), strict=True)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="eV/Å")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hipnn_aoti_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        model = load_model(args.model)
    else:
        torch.manual_seed(0)
        model = HIPNN(species=(1, 6, 8), cutoff=5.0, soft_max_distance=4.5)
    model = model.float().eval()

    start = time.perf_counter()
    program = export_energy_forces(model, workdir / "model.pt2")
    exported = time.perf_counter()
    package = compile_aoti(program, workdir / "model_aoti.pt2",
                           export_metadata(model, EnergyForces(model)))
    compiled = time.perf_counter()
    binary = build_consumer(workdir / "hipnn_aoti_consumer")
    built = time.perf_counter()
    print(f"torch {torch.__version__}; export {exported - start:.0f} s, AOTInductor "
          f"{compiled - exported:.0f} s, C++ consumer build {built - compiled:.0f} s")

    worst = 0.0
    for name, (z, pos, cell) in structures().items():
        pos32 = pos.float()
        pbc = None if cell is None else torch.ones(1, 3, dtype=torch.bool)
        edge_index, offsets = pair_list(pos32, model.cutoff, None if cell is None
                                        else cell.float(), pbc)
        kernels = [str(library_path())] if extension_available() else []
        run = subprocess.run([str(binary), str(package), "float32", *kernels], check=True,
                             capture_output=True, text=True,
                             input=as_text(z, pos32.double(), edge_index, offsets.double()))
        lines = run.stdout.splitlines()
        energy = float(lines[0])
        forces = torch.as_tensor(np.loadtxt(lines[1:-3], ndmin=2))
        reference = energy_forces_stress(model, z, pos32, cell=None if cell is None
                                         else cell.float(), pbc=pbc)
        force_error = float((forces - reference["forces"].double()).abs().max())
        energy_error = abs(energy - float(reference["energy"][0].detach()))
        worst = max(worst, force_error)
        print(f"{name}: {edge_index.size(1)} pairs; C++ energy {energy:.6f} eV "
              f"(|dE| {energy_error:.2e} eV against eager), max |dF| {force_error:.2e} eV/Å "
              f"(largest force {float(reference['forces'].abs().max()):.3f} eV/Å)")
    print(f"worst force difference {worst:.2e} eV/Å: "
          f"{'within' if worst <= args.tolerance else 'ABOVE'} {args.tolerance:g} eV/Å")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
