"""The learning rate over a CPU-time budget: the peak at the start, the floor only at the
budget's end, driven by a fake clock; and a hipnn-train run ending at its floor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from hipnn_pyg.train import BudgetSchedule, CpuTimeLimit
from hipnn_pyg.train.budget import budget_lr

from .helpers import SHIPPED, TINY, compose_config

PEAK, FLOOR = 1e-3, 1e-5


class FakeClock:
    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


def _rates(fractions: list[float], shape: str = "cosine") -> list[float]:
    clock = FakeClock()
    limit = CpuTimeLimit(minutes=2, clock=clock)
    schedule = BudgetSchedule(min_lr=FLOOR, shape=shape)
    trainer = Trainer(callbacks=[limit, schedule], logger=False, accelerator="cpu", devices=1,
                      enable_checkpointing=False, enable_progress_bar=False)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=PEAK)
    trainer.strategy.optimizers = [optimizer]
    limit.on_train_start(trainer, None)  # type: ignore[arg-type]
    start, rates = clock.seconds, []
    for fraction in fractions:
        clock.seconds = start + fraction * 120.0
        schedule.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_floor_only_at_the_end_of_the_budget() -> None:
    at_0, at_50, at_99, at_100, after = _rates([0.0, 0.5, 0.99, 1.0, 1.3])
    assert at_0 == pytest.approx(PEAK, rel=1e-12)
    assert at_50 == pytest.approx((PEAK + FLOOR) / 2, rel=1e-12)  # half way down the cosine
    cosine_99 = FLOOR + (PEAK - FLOOR) * 0.5 * (1 + math.cos(0.99 * math.pi))
    assert at_99 == pytest.approx(cosine_99, rel=1e-9)
    assert at_99 > FLOOR * 1.01  # not yet at the floor at 99%
    assert at_100 == pytest.approx(FLOOR, rel=1e-12) and after == at_100
    linear = _rates([0.0, 0.5, 0.99, 1.0], "linear")
    assert linear == pytest.approx([PEAK, (PEAK + FLOOR) / 2, FLOOR + 0.01 * (PEAK - FLOOR),
                                    FLOOR], rel=1e-9)
    assert budget_lr(-0.5, PEAK, FLOOR) == PEAK
    with pytest.raises(ValueError, match="shape"):
        BudgetSchedule(shape="step")


def test_needs_a_budget_and_no_other_schedule(tmp_path: Path) -> None:
    from hipnn_pyg.train.run import train

    common = [*SHIPPED, *TINY, "test=false", "trainer.max_epochs=2"]
    with pytest.raises(ValueError, match="cpu_time_limit"):
        train(compose_config("train", tmp_path / "a", [
            *common, "callbacks=[default,budget_schedule]", "module.scheduler=null"]))
    with pytest.raises(ValueError, match="module.scheduler=null"):
        train(compose_config("train", tmp_path / "b", [
            *common, "callbacks=[default,cpu_time_limit,budget_schedule]"]))


def test_hipnn_train_run_ends_at_its_floor(tmp_path: Path) -> None:
    from hipnn_pyg.serialization import torch_load
    from hipnn_pyg.train.run import train

    train(compose_config("train", tmp_path, [
        *SHIPPED, *TINY, "test=false", "trainer.max_epochs=10000", "module.scheduler=null",
        "callbacks=[default,cpu_time_limit,budget_schedule]",
        "callbacks.cpu_time_limit.minutes=0.03", "callbacks.early_stopping=null"]))
    checkpoint = torch_load(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] < 9999  # stopped by the budget
    (group, *_) = checkpoint["optimizer_states"][0]["param_groups"]
    # the last step ran within its own step time (ms) of the 1.8 s budget's end
    assert FLOOR <= group["lr"] < FLOOR + 0.02 * (1e-3 - FLOOR)
