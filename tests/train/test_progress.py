"""The progress display: Lightning's bar on a terminal, one line per epoch elsewhere, and
one override to switch it off."""

from __future__ import annotations

import io

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from hipnn_pyg.train.progress import EpochLines, progress_bar
from hipnn_pyg.train.run import trainer_callbacks

from .helpers import compose_config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_on_a_terminal_and_epoch_lines_elsewhere() -> None:
    assert isinstance(progress_bar(stream=Terminal()), TQDMProgressBar)
    assert isinstance(progress_bar(stream=io.StringIO()), EpochLines)


def test_one_override_switches_the_display_off(tmp_path) -> None:
    on = trainer_callbacks(compose_config("train", tmp_path, []))
    assert any(isinstance(c, ProgressBar) for c in on)
    quiet = ["trainer.enable_progress_bar=false"]
    off = trainer_callbacks(compose_config("train", tmp_path, quiet))
    assert not any(isinstance(c, ProgressBar) for c in off)
    assert len(off) == len(on) - 1  # the rest stay
