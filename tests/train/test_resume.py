"""A run killed mid-epoch and resumed from last.ckpt ends exactly like an
uninterrupted one (same weights, EMA and metrics), on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hipnn_pyg.serialization import UnsafeFileError
from hipnn_pyg.train.run import train
from tests.test_serialization import RunsCode

from .helpers import SHIPPED, TINY, compose_config, crash_at, results

RUN = [
    *SHIPPED,
    *TINY,
    "trainer.max_epochs=3",
    "callbacks=[default,ema]",
    "callbacks.ema.decay=0.9",
    "module.warmup_steps=3",
    "module.scheduler.patience=0",  # the plateau schedule acts, and must resume too
    "test=false",
]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_resume_after_crash_equals_uninterrupted(tmp_path: Path) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(compose_config("train", whole, RUN))

    crash = crash_at(epoch=2, batch=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config("train", broken, [*RUN, *crash]))
    killed = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert killed["epoch"] == 1  # the last complete epoch

    train(compose_config("train", broken, [*RUN, "resume=true"]))

    expected, actual = _state(whole), _state(broken)
    assert expected.keys() == actual.keys()
    assert any(k.startswith("ema.") for k in expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-6, atol=1e-7)
    # the plateau schedule (stepped before each checkpoint) and optimizer resume too
    a, b = (torch.load(p / "checkpoints" / "last.ckpt", weights_only=True)
            for p in (whole, broken))
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert a["lr_schedulers"][0]["last_epoch"] == 3
    assert a["global_step"] == b["global_step"]
    want, got = results(whole)["metrics"], results(broken)["metrics"]
    for key in ("val/loss", "val/energy_mae", "val/forces_mae", "val/forces_rmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # a second CSV version holds the resumed epochs; the first one is kept
    assert len(list((broken / "csv").iterdir())) == 2


def test_resume_without_checkpoint_starts_fresh_and_resume_from_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train(compose_config("train", first, [*RUN, "resume=true", "trainer.max_epochs=1"]))
    assert (first / "checkpoints" / "last.ckpt").is_file()
    train(compose_config("train", second, [*RUN, f"resume={first}", "trainer.max_epochs=2"]))
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 8
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(compose_config("train", tmp_path / "x", [*RUN, f"resume={tmp_path / 'none'}"]))


def test_resume_reads_checkpoints_weights_only(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(compose_config("train", first, [*RUN, "trainer.max_epochs=1"]))
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "code_ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({**checkpoint, "payload": RunsCode(marker)}, crafted)
    for override in (f"ckpt_path={crafted}", f"resume={crafted}"):
        with pytest.raises(UnsafeFileError, match=r"refusing to load .*crafted\.ckpt"):
            train(compose_config("train", tmp_path / "second", [*RUN, override]))
    assert not marker.exists()


def test_resuming_a_finished_run_reports_its_final_metrics(tmp_path: Path) -> None:
    # a run killed after its last checkpoint but before results.json: resuming trains
    # nothing, and must still report the final validation errors
    run = [*RUN, "trainer.max_epochs=1"]
    train(compose_config("train", tmp_path, run))
    first = results(tmp_path)["metrics"]
    (tmp_path / "results.json").unlink()
    train(compose_config("train", tmp_path, [*run, "resume=true"]))
    again = results(tmp_path)["metrics"]
    for key in ("val/loss", "val/energy_mae", "val/forces_mae"):
        assert again[key] == pytest.approx(first[key], rel=1e-6), key


def test_last_checkpoint_follows_every_epoch_without_improvement(tmp_path: Path) -> None:
    # Lightning writes last.ckpt only with a new best; a killed run would lose every epoch
    # since the loss last improved (here: never after epoch 0, the weights do not move)
    train(compose_config("train", tmp_path, [*RUN, "trainer.max_epochs=3",
                                             "module.optimizer.lr=0.0",
                                             "module.warmup_steps=0"]))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 12


def test_a_new_run_refuses_a_folder_holding_another_runs_files(tmp_path: Path) -> None:
    # a folder given by hand (hydra.run.dir=...) that an earlier run used: starting again
    # there without resume=true would overwrite its model.pt and checkpoints
    run = [*RUN, "trainer.max_epochs=1"]
    train(compose_config("train", tmp_path / "other", run))
    train(compose_config("train", tmp_path, run))
    kept = {path: path.read_bytes() for path in tmp_path.rglob("*")
            if path.is_file() and path.suffix in (".pt", ".ckpt", ".json")}
    message = (r"already holds another run's model\.pt, results\.json, "
               r"checkpoints/epoch_000\.ckpt, checkpoints/last\.ckpt")
    for again in ([*run, "seed=2"], [*run, f"resume={tmp_path / 'other'}"]):
        with pytest.raises(FileExistsError, match=message):
            train(compose_config("train", tmp_path, again))
    assert {path: path.read_bytes() for path in kept} == kept
    train(compose_config("train", tmp_path, [*run, "resume=true"]))  # its own: continues
