"""Helpers of the active-learning tests: tiny copper committees and configs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from omegaconf import DictConfig, open_dict

from hipnn_pyg import HIPNN
from hipnn_pyg.active.committee import Prediction
from tests.train.helpers import compose_config

#: A tiny HIP-NN for copper (seconds per training on one core).
TINY_TRAIN = [
    "model=hipnn_small", "model.representation.species=[29]",
    "model.representation.hidden_channels=8", "model.representation.num_interactions=1",
    "model.representation.num_atom_layers=1",
    "model.representation.sensitivity.num_sensitivities=4",
    "data.batch_size=4", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "callbacks.progress_bar=null",
    "callbacks.model_summary=null", "callbacks.early_stopping=null",
]


def tiny_models(count: int = 2, species: Sequence[int] = (29,)) -> list[HIPNN]:
    r"""``count`` untrained tiny HIP-NNs with different weights (they disagree)."""
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(HIPNN(species=list(species), hidden_channels=8, num_interactions=1,
                            num_atom_layers=1, num_sensitivities=4, cutoff=5.0,
                            soft_max_distance=4.5))
    return models


def copper(seed: int = 0, stdev: float = 0.05) -> Atoms:
    atoms = bulk("Cu", cubic=True).repeat((2, 1, 1))
    atoms.rattle(stdev, seed=seed)
    return atoms


def active_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    r"""``conf/active.yaml`` for a 2-round EMT copper loop with a 2-model tiny ensemble;
    ``overrides`` come last."""
    base = [
        "active=copper_emt", "active.ensemble.size=2", "active.max_rounds=2",
        "active.max_selected=3", "active.initial.count=8", "active.initial.size=[2,1,1]",
        "active.explorers.md.steps=60", "active.explorers.md.check_interval=10",
        "active.explorers.md.temperatures_K=[600]", "active.explorers.md.max_seeds=1",
        "active.explorers.md.trajectories=2", "active.threshold=0.0",
        "active.explorers.md.stop_threshold=null", "progress=false",
    ]
    cfg = compose_config("active", run_dir, [*base, *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
        cfg.active.ensemble.train_overrides = list(TINY_TRAIN)
    return cfg


class EMTCommittee(EMT):
    r"""A stand-in committee that answers with EMT and no disagreement."""

    species = {29}

    def predict(self, atoms: Atoms) -> Prediction:
        work = atoms.copy()
        work.calc = EMT()
        return Prediction(work.get_potential_energy(), work.get_forces(), 0.0, 0.0)


def rho_of(frames: Sequence[Atoms]) -> np.ndarray:
    return np.array([float(a.info["rho"]) for a in frames])
