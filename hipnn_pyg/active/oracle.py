r"""Labelling the selected frames with a reference calculator (the oracle), resumably.

Each labelled frame is appended to an extxyz file with one ``write`` + ``fsync``
(:func:`hipnn_pyg.extxyz.append_frame`) together with the seconds it took
(``info["oracle_seconds"]``). A frame the working oracle cannot label (SCF not
converged, a geometry it refuses: a :data:`FRAME_FAILURES` error) is appended to a
JSON-lines file and skipped. A rerun skips every frame found in either file, so a label
that was paid for is never recomputed or lost.

An oracle that cannot work at all stops the run before any frame is charged: one whose
calculator cannot be made (a missing package, a wrong option) raises
:class:`OracleError` at once, and so does one whose first :data:`PROBE_FRAMES` frames
of a fresh run all fail; errors outside :data:`FRAME_FAILURES` (a bug, out of memory)
pass through and are not recorded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from hipnn_pyg.active.structures import ID_KEY
from hipnn_pyg.extxyz import PathLike, append_frame, frame_text, read_frames, repair_extxyz
from hipnn_pyg.label import label_one, make_calculator

log = logging.getLogger(__name__)

#: Errors of one frame by a working oracle: recorded, the frame skipped.
FRAME_FAILURES = (RuntimeError, ValueError, ArithmeticError)
#: A fresh run whose first this many frames all fail stops: the oracle does not work.
PROBE_FRAMES = 3


class OracleError(RuntimeError):
    r"""The oracle cannot label anything (it does not start, or fails on every frame
    it was tried on); nothing was charged to the budget."""


@dataclass
class Oracle:
    r"""A reference calculator by name (see :func:`hipnn_pyg.label.make_calculator`).

    Every structure gets a fresh calculator, so no state (a neighbour list, an SCF
    guess) carries over from the previous one: a label does not depend on what was
    labelled before it, and a resumed run gets the same numbers to the last bit.

    Args:
        name (str): ``"gfn2"`` (tblite GFN2-xTB), ``"gfn1"``, ``"pyscf"`` or ``"emt"``.
            (default: :obj:`"gfn2"`)
        options (dict): Keyword arguments of the calculator. (default: none)
    """

    name: str = "gfn2"
    options: dict[str, Any] | None = None

    def make(self) -> Calculator:
        r"""A new calculator; raises :class:`OracleError` when it cannot be made."""
        try:
            return make_calculator(self.name, **dict(self.options or {}))
        except Exception as error:  # ImportError, an unknown option or name...
            raise OracleError(f"oracle '{self.name}' (options {self.options or {}}) cannot "
                              f"start: {type(error).__name__}: {error}") from error


@dataclass
class LabelResult:
    r"""What :func:`label_frames` finds in its files when it returns."""

    labelled: list[Atoms]
    failed: list[dict[str, Any]]
    new: int
    seconds: float


def read_frames_text(text: str) -> list[Atoms]:
    import ase.io

    return ase.io.read(io.StringIO(text), index=":", format="extxyz")  # type: ignore[return-value]


def read_failures(path: PathLike) -> list[dict[str, Any]]:
    r"""The failure records of a JSON-lines file (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a kill mid-write: the frame is retried
    return records


def _append_failure(path: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _as_stored(atoms: Atoms) -> Atoms:
    r"""``atoms`` as extxyz stores it (positions to 8 decimals), so that a label belongs
    exactly to the geometry written next to it."""
    (stored,) = read_frames_text(frame_text(atoms))
    return stored


def label_frames(frames: Sequence[Atoms], oracle: Oracle, output: PathLike,
                 failures: PathLike, budget: int | None = None, progress: bool = False,
                 on_frame: Callable[[int], None] | None = None) -> LabelResult:
    r"""Labels ``frames`` (each with a unique ``info["active_id"]``) into ``output``,
    resuming from what ``output`` and ``failures`` already hold.

    Args:
        frames (Sequence[Atoms]): The structures to label.
        oracle (Oracle): The reference calculator.
        output: extxyz file of the labelled frames (appended to).
        failures: JSON-lines file of the failures (appended to).
        budget (int, optional): Most new oracle calls. (default: :obj:`None`)
        progress (bool): tqdm progress bar. (default: :obj:`False`)
        on_frame (Callable[[int], None], optional): Called with the index of each
            finished frame (used by tests). (default: :obj:`None`)

    Raises:
        ValueError: ``output`` holds a frame that is not one of ``frames``.
        OracleError: the oracle cannot be made, or fails on each of the first
            :data:`PROBE_FRAMES` frames of a run that has labelled nothing yet (those
            failures are not recorded).
    """
    from tqdm.auto import tqdm

    output, failures = Path(output), Path(failures)
    output.parent.mkdir(parents=True, exist_ok=True)
    repair_extxyz(output)
    ids = [str(atoms.info[ID_KEY]) for atoms in frames]
    done = {str(atoms.info.get(ID_KEY)) for atoms in read_frames(output)}
    unknown = done - set(ids)
    if unknown:
        raise ValueError(f"{output} holds frames {sorted(unknown)[:5]} that are not among "
                         "the selected ones; it belongs to another run")
    done |= {str(record["id"]) for record in read_failures(failures)}
    todo = [i for i, frame_id in enumerate(ids) if frame_id not in done]
    if budget is not None:
        todo = todo[:max(int(budget), 0)]
    if todo:
        oracle.make()  # a calculator that cannot be made stops here, nothing charged
    # Until the oracle has labelled one frame it is on probation: failures are held back.
    proven = bool(read_frames(output))
    held: list[dict[str, Any]] = []
    bar = tqdm(total=len(frames), initial=len(frames) - len(todo), disable=not progress,
               desc="labelling", unit="frame", leave=False)
    for i in todo:
        start = time.perf_counter()
        try:
            labelled = label_one(_as_stored(frames[i]), oracle.make())
        except FRAME_FAILURES as error:
            record = {"id": ids[i], "index": i, "seconds": time.perf_counter() - start,
                      "error": f"{type(error).__name__}: {error}"}
            log.warning("oracle failed on frame %s, skipped: %s", ids[i], record["error"])
            if proven:
                _append_failure(failures, record)
            else:
                held.append(record)
                if len(held) >= PROBE_FRAMES:
                    bar.close()
                    raise OracleError(
                        f"oracle '{oracle.name}' failed on each of the first {len(held)} "
                        f"frames it was given (nothing recorded or charged): "
                        f"{'; '.join(sorted({r['error'] for r in held}))}") from error
        else:
            labelled.info["oracle_seconds"] = time.perf_counter() - start
            append_frame(output, labelled)
            if not proven:
                proven = True
                for record in held:
                    _append_failure(failures, record)
                held.clear()
        bar.update(1)
        if on_frame is not None:
            on_frame(i)
    bar.close()
    for record in held:  # a short run with no success: its failures are real ones
        _append_failure(failures, record)
    labelled_frames = read_frames(output)
    failed = read_failures(failures)
    seconds = sum(float(a.info.get("oracle_seconds", 0.0)) for a in labelled_frames)
    seconds += sum(float(r.get("seconds", 0.0)) for r in failed)
    return LabelResult(labelled_frames, failed, len(todo), seconds)
