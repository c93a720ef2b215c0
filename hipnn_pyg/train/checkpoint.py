r"""Crash-safe checkpoints: every Lightning checkpoint is written atomically and read
weights-only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from hipnn_pyg.atomic import atomic_torch_save
from hipnn_pyg.serialization import torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    r"""A :class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` that writes a local
    checkpoint with :func:`hipnn_pyg.atomic.atomic_write` (a temporary file in the
    same folder, fsynced and renamed over the target), so a run killed mid-write
    leaves the previous ``last.ckpt``/``best`` intact, never a truncated file. Remote
    paths (``s3://``...) fall back to Lightning's writer.

    Local checkpoints are read weights-only (:func:`hipnn_pyg.serialization.torch_load`), also
    when resuming (``trainer.fit(ckpt_path=...)``) or testing from one, whatever
    ``weights_only`` Lightning asks for: a crafted checkpoint cannot run code.

    Use it as a Trainer plugin: ``Trainer(plugins=[AtomicCheckpointIO()])``
    (``conf/trainer/default.yaml`` does).
    """

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        # weights_only is ignored on purpose: True whatever the caller asks for
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True,
                                           **kwargs)
        return torch_load(path, map_location=map_location)
