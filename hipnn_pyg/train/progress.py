r"""Progress display that suits where it writes: Lightning's bar on a terminal, one line
per epoch in a log file, a pipe or CI (a bar there is hundreds of KB of carriage-return
lines over a 100-epoch run)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar


class EpochLines(ProgressBar):
    r"""One line per epoch on ``stream`` (rank 0 only): epoch, steps, seconds, and the
    logged metrics (training loss, validation errors, learning rate).

    Args:
        stream (TextIO, optional): Where to write. (default: :obj:`None`, stdout)
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._enabled = True
        self._epoch_start = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = " ".join(f"{name}={_format(value)}" for name, value in sorted(metrics.items())
                         if name != "v_num")
        seconds = time.perf_counter() - self._epoch_start
        stream = self._stream or sys.stdout
        stream.write(f"epoch {trainer.current_epoch:4d} step {trainer.global_step:7d} "
                     f"{seconds:7.1f}s {shown}\n")
        stream.flush()


def _format(value: Any) -> str:
    try:
        return f"{float(value):.5g}"
    except (TypeError, ValueError):
        return str(value)


def progress_bar(refresh_rate: int = 10, stream: TextIO | None = None) -> ProgressBar:
    r"""Lightning's :class:`~lightning.pytorch.callbacks.TQDMProgressBar` when ``stream``
    (default stderr, where the bar writes) is a terminal, else :class:`EpochLines`.

    Args:
        refresh_rate (int): Steps between updates of the bar. (default: :obj:`10`)
        stream (TextIO, optional): The stream to test. (default: :obj:`None`, stderr)
    """
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return EpochLines()


__all__ = ["EpochLines", "progress_bar"]
