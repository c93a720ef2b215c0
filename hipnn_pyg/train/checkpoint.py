r"""Crash-safe checkpoints: every Lightning checkpoint is written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from hipnn_pyg.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    r"""A :class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` that writes a local
    checkpoint to a temporary file in the same folder, fsyncs it and renames it over
    the target (``os.replace``), so a run killed mid-write leaves the previous
    ``last.ckpt``/``best`` intact, never a truncated file. Remote paths (``s3://``...)
    fall back to Lightning's writer.

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
