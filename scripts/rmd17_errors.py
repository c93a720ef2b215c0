r"""Test errors of a saved model on an rMD17 test file, energy also without its mean
error (benchmark helper, not a test).

A force-weighted loss leaves the energy's constant offset to be learnt slowly, so the
energy MAE of a short run is mostly that offset; the MAE after removing the mean error
shows how well the energy surface itself is learnt (the same correction the same-loop
benchmark applies to both implementations).

Example::

    python scripts/rmd17_errors.py logs/bench/<run>/ethanol/model.pt \
        ../shared/data/rmd17/rmd17_ethanol_test_01.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from hipnn_pyg.data.units import KCAL_MOL_TO_EV
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import load_model


def rmd17_test_errors(model_path: Path, test_path: Path, batch_size: int = 100) -> dict[str, float]:
    r"""Energy MAE, energy MAE with the mean error removed, mean energy error (meV) and
    force MAE (meV/Å) of ``model_path`` on every frame of ``test_path``."""
    model = load_model(model_path).requires_grad_(False)
    dtype = next(model.parameters()).dtype
    with np.load(test_path) as raw:  # rMD17 units: kcal/mol, kcal/mol/Å
        z = torch.as_tensor(raw["nuclear_charges"].astype(np.int64))
        coords = torch.as_tensor(raw["coords"], dtype=dtype)
        energies = torch.as_tensor(raw["energies"] * KCAL_MOL_TO_EV, dtype=torch.float64)
        forces = torch.as_tensor(raw["forces"] * KCAL_MOL_TO_EV, dtype=torch.float64)
    energy_errors, force_errors = [], []
    for start in range(0, len(coords), batch_size):
        part = slice(start, start + batch_size)
        batch = Batch.from_data_list([Data(z=z, pos=pos) for pos in coords[part]])
        out = predict(model, batch, compute_forces=True)
        energy_errors.append(out["energy"].double().view(-1) - energies[part])
        force_errors.append(out["forces"].double() - forces[part].reshape(-1, 3))
    energy_error, force_error = torch.cat(energy_errors), torch.cat(force_errors)
    offset_free = energy_error - energy_error.mean()
    return {
        "energy_mae_meV": 1000 * energy_error.abs().mean().item(),
        "energy_mae_offset_free_meV": 1000 * offset_free.abs().mean().item(),
        "mean_energy_error_meV": 1000 * energy_error.mean().item(),
        "forces_mae_meV_per_A": 1000 * force_error.abs().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model.pt (or Lightning .ckpt)")
    parser.add_argument("test_file", type=Path, help="an rMD17 test .npz")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"model": str(args.model), **rmd17_test_errors(args.model, args.test_file)}))


if __name__ == "__main__":
    main()
