r"""Test errors of a saved model on an rMD17 test file, energy also without its mean
error (benchmark helper, not a test).

A force-weighted loss leaves the energy's constant offset to be learnt slowly, so the
energy MAE of a short run is mostly that offset; the MAE after removing the mean error
shows how well the energy surface itself is learnt (the same correction the same-loop
benchmark applies to both implementations).

``--refit-on <train file>`` first shifts the model's self-energies by a least-squares
fit of its residuals on the training split of that file (the split of
``conf/data/rmd17.yaml``: 950 of its 1000 frames), as training runs now do before
testing: it gives today's test errors for a model.pt written before that step existed.

Example::

    python scripts/rmd17_errors.py logs/bench/<run>/ethanol/model.pt \
        ../shared/data/rmd17/rmd17_ethanol_test_01.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch, Data

from hipnn_pyg.data import HIPNNDataModule
from hipnn_pyg.data.units import KCAL_MOL_TO_EV
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import load_model
from hipnn_pyg.train.resolvers import conf_dir
from hipnn_pyg.train.self_energy import refit_self_energies


def training_split(train_path: Path) -> Any:
    r"""The training split of an rMD17 train file, as ``conf/data/rmd17.yaml`` makes it."""
    split = OmegaConf.load(conf_dir() / "data" / "rmd17.yaml")
    datamodule = HIPNNDataModule(path=train_path, format="rmd17", num_train=split.num_train,
                                 num_val=split.num_val, seed=split.seed)
    datamodule.setup("fit")
    return datamodule.train_dataset


def rmd17_test_errors(model_path: Path, test_path: Path, batch_size: int = 100,
                      refit_on: Path | None = None) -> dict[str, float]:
    r"""Energy MAE, energy MAE with the mean error removed, mean energy error (meV) and
    force MAE (meV/Å) of ``model_path`` on every frame of ``test_path``; with
    ``refit_on``, after refitting the self-energies on that file's training split."""
    model = load_model(model_path)
    if refit_on is not None:
        refit_self_energies(model, training_split(refit_on))
    model.requires_grad_(False)
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
    parser.add_argument("--refit-on", type=Path, default=None, metavar="TRAIN_FILE",
                        help="refit the self-energies on this rMD17 train file's split first")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    errors = rmd17_test_errors(args.model, args.test_file, refit_on=args.refit_on)
    print(json.dumps({"model": str(args.model), "refit_on": str(args.refit_on), **errors}))


if __name__ == "__main__":
    main()
