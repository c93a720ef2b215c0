"""Atomic checkpoint writes and per-epoch reseeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hipnn_pyg.train import AtomicCheckpointIO, CpuTimeLimit, EpochSeed


def test_atomic_checkpoint_io_replaces_and_leaves_no_temporaries(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, path)
    io.save_checkpoint({"a": torch.zeros(2)}, path)
    assert torch.load(path)["a"].tolist() == [0.0, 0.0]
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]

    class Unpicklable:
        def __reduce__(self):  # noqa: D105
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_checkpoint({"a": Unpicklable()}, path)
    assert torch.load(path)["a"].tolist() == [0.0, 0.0]  # old file intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_epoch_seed_depends_on_epoch_only() -> None:
    callback = EpochSeed(seed=3)
    assert callback.epoch_seed(2) == EpochSeed(seed=3).epoch_seed(2)
    assert callback.epoch_seed(2) != callback.epoch_seed(3)


def test_cpu_time_limit_stops_training_and_keeps_its_clock_in_checkpoints(
        tmp_path: Path) -> None:
    from hipnn_pyg.serialization import torch_load
    from hipnn_pyg.train.run import train

    from .helpers import SHIPPED, TINY, compose_config

    run = [*SHIPPED, *TINY, "trainer.max_epochs=1000", "test=false",
           "callbacks=[default,cpu_time_limit]", "callbacks.cpu_time_limit.minutes=0.01"]
    train(compose_config("train", tmp_path, run))
    checkpoint = torch_load(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] < 999  # stopped by the budget, not by max_epochs
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "CpuTimeLimit" in k]
    assert 0.6 <= state["used_seconds"] < 60

    resumed = CpuTimeLimit(minutes=1)
    resumed.load_state_dict(state)
    assert resumed.used_seconds() == state["used_seconds"]  # the budget continues
    with pytest.raises(ValueError, match="positive budget"):
        CpuTimeLimit(minutes=0)
