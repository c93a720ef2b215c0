"""A new run's start: after the automatic fit on the training split, an untrained model's
energies are within 1 eV of the training energies (the untrained network alone adds
eV to tens of eV, which the plain self-energy fit leaves in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch_geometric.loader import DataLoader

from hipnn_pyg.nn.predict import predict
from hipnn_pyg.train import run
from hipnn_pyg.train.self_energy import scale_readouts

from .helpers import compose_config

#: the shipped ethanol file's first 100 frames, all for training; hipnn_small (width 32,
#: 2 interactions of 2 on-site layers)
FIRST_100 = ["data=rmd17_shipped", "model=hipnn_small", "model.representation.species=[1,6,8]",
             "+data.max_frames=100", "data.num_train=100", "data.num_val=0", "data.num_test=0",
             "num_threads=1"]


def _start_mae(tmp_path: Path, seed: int, overrides: list[str]) -> float:
    cfg = compose_config("train", tmp_path, [*FIRST_100, *overrides])
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    run.start_from_training_split(cfg, model, datamodule)
    frames = datamodule.train_dataset
    assert len(frames) == 100
    batch = next(iter(DataLoader(frames, batch_size=100)))
    energy = predict(model, batch, compute_forces=False)["energy"].detach().view(-1).double()
    return float((energy - batch.energy.view(-1).double()).abs().mean())  # eV per molecule


@pytest.mark.filterwarnings("ignore:element counts have rank")
def test_untrained_model_starts_within_1_eV(tmp_path: Path) -> None:
    automatic = [_start_mae(tmp_path, seed, []) for seed in range(3)]
    assert max(automatic) < 1.0, automatic
    # the check can fail: the self-energy fit alone leaves the network's own offset
    plain = [_start_mae(tmp_path, seed, ["fit_network_offset=false"]) for seed in range(3)]
    assert max(plain) > 1.0, plain


@pytest.mark.filterwarnings("ignore:element counts have rank")
def test_readout_decay_leaves_the_self_energies_alone(tmp_path: Path) -> None:
    # hippynn's start: readouts of layers 1, 2 scaled by 0.01 and 1e-4, so the plain
    # self-energy fit is nearly enough (the data's own spread is ~0.17 eV)
    assert _start_mae(tmp_path, 0, ["fit_network_offset=false",
                                    "initial_readout_decay=0.01"]) < 0.5
    cfg = compose_config("train", tmp_path, FIRST_100)
    model = instantiate(cfg.model)
    before = [r.weight.detach().clone() for r in model.energy_head.readouts]
    scale_readouts(model, 0.1)
    after = [r.weight.detach() for r in model.energy_head.readouts]
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], 0.1 * before[1])
    torch.testing.assert_close(after[2], 0.01 * before[2])
