r"""Lightning internals hipnn_pyg relies on (checked by ``tests/compat/test_lightning.py``).

* the trainer's SIGTERM notifier (``trainer._signal_connector._sigterm_notifier_fn``)
  among the handlers Lightning composes on SIGTERM (``.signal_handlers``), replaced for
  data-parallel runs (:func:`hipnn_pyg.train.callbacks.install_sigterm_flag_handler`);
* :class:`~lightning.pytorch.callbacks.ModelCheckpoint`'s ``_save_last_checkpoint`` and
  ``_monitor_candidates``, to write ``last.ckpt`` after every epoch;
* a module's trainer without the error ``LightningModule.trainer`` raises when detached.
"""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


def signal_connector(trainer: Trainer) -> Any:
    r"""The trainer's signal connector (holds ``received_sigterm``)."""
    return trainer._signal_connector


def sigterm_notifier(trainer: Trainer) -> Any:
    r"""Lightning's own SIGTERM handler function, as installed in the signal handlers."""
    return signal_connector(trainer)._sigterm_notifier_fn


def sigterm_handlers() -> list | None:
    r"""The handlers Lightning runs on SIGTERM (its composed handler's list), or
    :obj:`None` when the installed handler is not Lightning's."""
    import signal

    handlers = getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", None)
    return handlers if isinstance(handlers, list) else None


def replace_sigterm_handler(old: Any, new: Any) -> None:
    r"""Puts ``new`` in ``old``'s place among Lightning's SIGTERM handlers."""
    import signal

    composed = signal.getsignal(signal.SIGTERM)
    composed.signal_handlers = [new if h == old else h for h in composed.signal_handlers]


class LastCheckpointHook(ModelCheckpoint):
    r"""A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that calls
    :meth:`on_last_saved` whenever Lightning writes ``last.ckpt``, and can write it."""

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self.on_last_saved(trainer)

    def on_last_saved(self, trainer: Trainer) -> None:
        r"""Called after each write of ``last.ckpt``."""

    def save_last_now(self, trainer: Trainer) -> None:
        r"""Writes ``last.ckpt`` with the metrics of this moment."""
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def saves_on_train_epoch_end(self, trainer: Trainer) -> bool:
        r"""Whether this callback saves at the end of training epochs (else after
        validation)."""
        return self._should_save_on_train_epoch_end(trainer)


def attached_trainer(module: LightningModule) -> Trainer | None:
    r"""The trainer a module is attached to, or :obj:`None` (``module.trainer`` raises)."""
    return module._trainer


__all__ = ["LastCheckpointHook", "attached_trainer", "replace_sigterm_handler",
           "sigterm_handlers", "sigterm_notifier", "signal_connector"]
