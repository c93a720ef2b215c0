"""Which earlier run folders a new training run may use (hipnn_pyg/train/folders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hipnn_pyg.train.folders import refuse_used_folder, used_files


def _run(folder: Path, *, finished: bool = True, last: bool = True) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "epoch_000.ckpt").write_bytes(b"best")
    if last:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"last")
    if finished:
        (folder / "model.pt").write_bytes(b"model")
        (folder / "results.json").write_text("{}")
    return folder


def _allowed(folder: Path, **cfg: object) -> bool:
    try:
        refuse_used_folder(folder, OmegaConf.create({"train": True, **cfg}))
    except FileExistsError:
        return False
    return True


def test_an_empty_or_new_folder_is_free(tmp_path: Path) -> None:
    assert used_files(tmp_path / "new") == []
    (tmp_path / ".hydra").mkdir()  # Hydra's own files and logs are not a run's results
    (tmp_path / "train.log").write_text("")
    assert _allowed(tmp_path) and _allowed(tmp_path / "new")


def test_a_finished_run_is_refused_unless_continued(tmp_path: Path) -> None:
    folder = _run(tmp_path / "run")
    with pytest.raises(FileExistsError, match=r"run already holds another run's model\.pt, "
                       r"results\.json, checkpoints/epoch_000\.ckpt, checkpoints/last\.ckpt"):
        refuse_used_folder(folder, OmegaConf.create({"train": True, "resume": False}))
    assert _allowed(folder, resume=True) and _allowed(folder, resume="true")
    assert _allowed(folder, resume=str(folder))  # its own folder, by name
    assert _allowed(folder, ckpt_path=str(folder / "checkpoints" / "epoch_000.ckpt"))
    other = _run(tmp_path / "other")
    assert not _allowed(folder, resume=str(other))  # would write other's run into it
    assert not _allowed(folder, ckpt_path=str(other / "checkpoints" / "last.ckpt"))
    # test only: it would write its own model.pt over the trained one
    assert not _allowed(folder, train=False, resume=True)
    # hipnn-eval reads a checkpoint of the folder but never continues its run
    with pytest.raises(FileExistsError):
        refuse_used_folder(folder, OmegaConf.create(
            {"ckpt_path": str(folder / "checkpoints" / "last.ckpt")}), resumable=False)


def test_a_checkpoint_linked_from_elsewhere_counts_where_the_link_is(tmp_path: Path) -> None:
    folder = _run(tmp_path / "run")
    link = folder / "checkpoints" / "linked.ckpt"
    link.symlink_to(tmp_path / "elsewhere.ckpt")
    (tmp_path / "elsewhere.ckpt").write_bytes(b"x")
    assert _allowed(folder, ckpt_path=str(link))


def test_a_checkpoint_folder_outside_the_run_is_checked_too(tmp_path: Path) -> None:
    shared = _run(tmp_path / "earlier") / "checkpoints"
    fresh = tmp_path / "fresh"

    def elsewhere(**cfg: object) -> dict:
        return {"callbacks": {"model_checkpoint": {"dirpath": str(shared)}}, **cfg}

    with pytest.raises(FileExistsError, match=r"callbacks\.model_checkpoint\.dirpath=.*"
                       r"earlier/checkpoints already holds another run's epoch_000\.ckpt, "
                       r"last\.ckpt"):
        refuse_used_folder(fresh, OmegaConf.create({"train": True, **elsewhere()}))
    assert not _allowed(fresh, **elsewhere(resume=True))  # resume=true reads fresh's own
    assert _allowed(fresh, **elsewhere(ckpt_path=str(shared / "last.ckpt")))
    assert _allowed(fresh, **elsewhere(train=False))  # a test-only run writes none
    (tmp_path / "empty").mkdir()
    assert _allowed(fresh, callbacks={"model_checkpoint": {"dirpath": str(tmp_path / "empty")}})
    (shared / "last.ckpt").unlink()  # the message names a checkpoint that is there
    with pytest.raises(FileExistsError, match=r"ckpt_path=.*earlier/checkpoints/epoch_000\.ckpt"):
        refuse_used_folder(fresh, OmegaConf.create({"train": True, **elsewhere()}))


def test_a_checkpoint_folder_from_home_is_read_as_lightning_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _run(tmp_path / "earlier")
    with pytest.raises(FileExistsError, match="already holds another run's epoch_000"):
        refuse_used_folder(tmp_path / "fresh", OmegaConf.create(
            {"train": True, "callbacks": {"model_checkpoint": {
                "dirpath": "~/earlier/checkpoints"}}}))


def test_a_checkpoint_named_from_home_continues_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _run(tmp_path / "earlier")
    assert _allowed(tmp_path / "fresh", ckpt_path="~/earlier/checkpoints/last.ckpt",
                    callbacks={"model_checkpoint": {"dirpath": "~/earlier/checkpoints"}})


def test_a_new_sweep_checks_its_checkpoint_folder(tmp_path: Path) -> None:
    from hipnn_pyg.train.folders import RefuseUsedFolder

    shared = _run(tmp_path / "earlier") / "checkpoints"
    config = OmegaConf.create({"train": True,
                               "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}},
                               "callbacks": {"model_checkpoint": {"dirpath": str(shared)}}})
    with pytest.raises(SystemExit):
        RefuseUsedFolder().on_multirun_start(config)


def test_an_unfinished_run_without_last_checkpoint_starts_again_on_resume(tmp_path: Path) -> None:
    # killed between the best checkpoint and last.ckpt: resume=true starts it again
    unfinished = _run(tmp_path / "unfinished", finished=False, last=False)
    assert _allowed(unfinished, resume=True)
    assert not _allowed(unfinished, resume=False)
    # a finished run without last.ckpt (save_last off) is not restarted over its model
    finished = _run(tmp_path / "finished", last=False)
    assert not _allowed(finished, resume=True)


def test_the_checkpoint_a_config_names(tmp_path) -> None:
    # ckpt_path and resume read alike: a file, or a run folder's checkpoints/last.ckpt
    from hipnn_pyg.train.folders import named_checkpoint

    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    last = folder / "checkpoints" / "last.ckpt"
    for key in ("ckpt_path", "resume"):
        assert named_checkpoint(OmegaConf.create({key: str(folder)})) == (
            f"{key}={folder}", last)
        assert named_checkpoint(OmegaConf.create({key: str(last)}))[1] == last
    for switch in (True, False, "true", "False", None):
        assert named_checkpoint(OmegaConf.create({"resume": switch})) is None
    both = OmegaConf.create({"ckpt_path": str(last), "resume": str(tmp_path / "other")})
    assert named_checkpoint(both)[0].startswith("ckpt_path=")
    for number in (0, 1, 2.5):  # Hydra reads resume=0 as a number, not a switch
        with pytest.raises(ValueError, match=f"resume={number}: give a .ckpt file"):
            named_checkpoint(OmegaConf.create({"resume": number}))
    for key in ("resume", "ckpt_path"):  # an unset shell variable: not the working dir
        with pytest.raises(ValueError, match=f"{key}='' is empty: give a .ckpt file"):
            named_checkpoint(OmegaConf.create({key: ""}))
