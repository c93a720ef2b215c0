"""The weight average and its callback: warm-up, one update per optimizer step, and the
averaged weights in the checkpoints, the test metrics and model.pt (as hipnn-eval reads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hipnn_pyg.train import EMA, ExponentialMovingAverage
from hipnn_pyg.train.run import evaluate, train

from .helpers import SHIPPED, TINY, compose_config, results

WITH_EMA = ["callbacks=[default,ema]", "callbacks.ema.decay=0.5"]


def test_ema_follows_weights_with_warmup() -> None:
    model = nn.Linear(2, 1)
    ema = ExponentialMovingAverage(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    expected = 0.1 * start + 0.9 * model.weight.detach()
    torch.testing.assert_close(ema.module.weight, expected)
    assert int(ema.num_updates) == 1
    ema.reset(model)
    torch.testing.assert_close(ema.module.weight, model.weight)
    with pytest.raises(ValueError):
        ExponentialMovingAverage(model, decay=1.0)
    with pytest.raises(ValueError, match="callbacks.ema.decay"):
        EMA(decay=1.5)


def test_one_update_per_optimizer_step(tmp_path: Path) -> None:
    # 16 frames in batches of 4, two batches per step: 2 optimizer steps per epoch
    train(compose_config("train", tmp_path, [*SHIPPED, *TINY, *WITH_EMA, "test=false",
                                             "trainer.max_epochs=2",
                                             "+trainer.accumulate_grad_batches=2"]))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4
    assert int(checkpoint["state_dict"]["ema.num_updates"]) == 4


def test_test_metrics_and_model_pt_use_the_best_checkpoints_average(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config("train", run, [*SHIPPED, *TINY, *WITH_EMA, "trainer.max_epochs=2"]))
    tested = results(run)["metrics"]
    evaluated = evaluate(compose_config("eval", tmp_path / "eval", [
        *SHIPPED[:1], *SHIPPED[2:], f"ckpt_path={run / 'model.pt'}", "plots=false"]))
    for key in ("test/energy_mae", "test/forces_rmse", "test/energy_per_atom_mae"):
        assert evaluated[key] == pytest.approx(tested[key], rel=1e-5), key
