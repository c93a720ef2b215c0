"""Atomic checkpoint writes and per-epoch reseeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hipnn_pyg.train import AtomicCheckpointIO, EpochSeed


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
