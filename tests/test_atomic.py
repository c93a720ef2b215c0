"""Atomic writes: the old file or the complete new one, never a mix, no temporary left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from hipnn_pyg import atomic
from hipnn_pyg.atomic import atomic_torch_save, atomic_write


def test_writes_and_replaces_with_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "new" / "log.csv"
    with atomic_write(path, "w", newline="") as stream:
        stream.write("step,energy\n")
    assert path.read_text() == "step,energy\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    path.chmod(0o640)
    with atomic_write(path, "w") as stream:
        stream.write("new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file keeps its mode
    assert list(path.parent.iterdir()) == [path]


def test_an_error_in_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save({"a": torch.zeros(2)}, path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": torch.ones(2), "x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "split.npz"
    atomic_torch_save({"a": torch.zeros(2)}, path)
    before = path.read_bytes()

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"a": torch.ones(1000)}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_only_whole_file_writes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must start with 'w'"), atomic_write(
            tmp_path / "x", "a"):
        pass
