"""The committee's training pieces: warm start and the shipped active configs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from hipnn_pyg.active.explore import LangevinExplorer, NormalModeExplorer
from hipnn_pyg.active.oracle import Oracle
from hipnn_pyg.active.training import WarmStart, compose
from hipnn_pyg.serialization import save_model
from tests.active.helpers import tiny_models


def test_warm_start_loads_weights_and_self_energies(tmp_path) -> None:
    source, target = tiny_models(2)
    source.set_self_energies(torch.tensor([-3.5], dtype=source.self_energies.dtype))
    save_model(source, tmp_path / "model.pt")
    WarmStart(str(tmp_path / "model.pt")).setup(None, SimpleNamespace(model=target), "fit")
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_warm_start_refuses_another_architecture(tmp_path) -> None:
    (source,) = tiny_models(1)
    (other,) = tiny_models(1, species=(1, 29))
    save_model(source, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="does not match the configured one"):
        WarmStart(str(tmp_path / "model.pt")).setup(None, SimpleNamespace(model=other), "fit")


@pytest.mark.parametrize("name", ["copper_emt", "ethanol_gfn2"])
def test_shipped_configs_build(name: str, tmp_path) -> None:
    cfg = compose("active", [f"active={name}", f"run_dir={tmp_path}"])
    assert cfg.selection == "qbc" and cfg.active.ensemble.size == 4
    assert isinstance(instantiate(cfg.active.oracle), Oracle)
    assert isinstance(instantiate(cfg.active.explorers.md), LangevinExplorer)
    md = instantiate(cfg.active.explorers.md)
    # an absolute threshold, or one relative to the committee's training-set disagreement
    assert md.stop_threshold == cfg.active.threshold or md.stop_relative > 0
    frames = instantiate(cfg.active.initial)
    assert 2 <= len(frames) <= 20
    if name == "ethanol_gfn2":
        assert isinstance(instantiate(cfg.active.explorers.normal_modes), NormalModeExplorer)
        assert all("energy" in atoms.calc.results for atoms in frames)


@pytest.mark.parametrize(("frames", "steps", "validations", "expected"), [
    (20, 1500, 10, 1500),   # 3 steps an epoch: 500 epochs, validated every 50
    (8, 7, 2, 8),           # 1 step an epoch: 7 rounded up to 2 intervals of 4 epochs
    (480, 100, 10, 100),    # 60 steps an epoch, longer than 10: validated by steps
    (20000, 1500, 10, 1500),  # 2500 steps an epoch: stops inside the first epoch
])
def test_a_step_budget_stays_near_its_steps(frames: int, steps: int, validations: int,
                                            expected: int, tmp_path) -> None:
    from omegaconf import OmegaConf

    from hipnn_pyg.active.training import StepBudget

    cfg = OmegaConf.create({"trainer": {}, "data": {"batch_size": 8},
                            "module": {"optimizer": {"lr": 1e-3}, "warmup_steps": 100},
                            "callbacks": {"early_stopping": {"patience": 5}}})
    StepBudget(steps, validations).apply(cfg, frames)
    per_epoch = -(-frames // 8)
    total = (cfg.trainer.max_steps if cfg.trainer.max_steps > 0
             else cfg.trainer.max_epochs * per_epoch)
    assert total == expected == cfg.module.scheduler.T_max
    assert steps - validations < total <= steps + steps // validations + per_epoch
    assert cfg.module.scheduler.eta_min == pytest.approx(1e-5)
    assert cfg.module.warmup_steps == 0 and "early_stopping" not in cfg.callbacks
