"""The Lightning internals of hipnn_pyg.compat.lightning still exist and behave as used:
a rename or a changed signature fails here, by name, not as a silent loss of the DDP
SIGTERM handling or of last.ckpt after every epoch."""

from __future__ import annotations

import inspect
import signal

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from hipnn_pyg.compat import lightning as compat


def test_the_signal_connector_and_its_sigterm_notifier_exist() -> None:
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    connector = compat.signal_connector(trainer)
    assert hasattr(connector, "received_sigterm")
    assert callable(compat.sigterm_notifier(trainer))
    # what the notifier is composed with on SIGTERM: Lightning's handler list
    source = inspect.getsource(type(connector))
    assert "signal_handlers" in source and "_sigterm_notifier_fn" in source


def test_sigterm_handlers_reads_and_replaces_a_composed_handler() -> None:
    class Composed:
        def __init__(self, handlers: list) -> None:
            self.signal_handlers = handlers

        def __call__(self, signum, frame) -> None:
            for handler in self.signal_handlers:
                handler(signum, frame)

    def old(signum, frame) -> None: ...

    def new(signum, frame) -> None: ...

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, Composed([old]))
        assert compat.sigterm_handlers() == [old]
        compat.replace_sigterm_handler(old, new)
        assert compat.sigterm_handlers() == [new]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert compat.sigterm_handlers() is None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_model_checkpoint_keeps_the_private_methods_the_hook_overrides() -> None:
    for name, parameters in [("_save_last_checkpoint", ["self", "trainer", "monitor_candidates"]),
                             ("_monitor_candidates", ["self", "trainer"]),
                             ("_should_save_on_train_epoch_end", ["self", "trainer"])]:
        method = getattr(ModelCheckpoint, name)
        assert list(inspect.signature(method).parameters) == parameters, name
    # Lightning writes last.ckpt through _save_last_checkpoint: the hook sees every write
    source = inspect.getsource(ModelCheckpoint)
    assert "self._save_last_checkpoint(" in source


def test_a_detached_module_has_no_trainer() -> None:
    assert compat.attached_trainer(LightningModule()) is None
