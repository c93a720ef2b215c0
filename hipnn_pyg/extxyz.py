r"""Crash-safe extended-XYZ output: one frame per ``write`` + ``fsync``, and repair of a
half-written last frame left by a killed process.

Labelling runs and MD trajectories append frames for hours; a kill must never cost more
than the frame being written, and never leave a file that ASE cannot read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import ase.io
from ase import Atoms

PathLike = str | os.PathLike[str]


def frame_text(atoms: Atoms) -> str:
    r"""``atoms`` (with its calculator results, info and arrays) as one extxyz frame."""
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def append_frame(path: PathLike, atoms: Atoms) -> None:
    r"""Appends one extxyz frame with a single ``write`` and ``fsync``, so a frame is
    either on disk entirely or (after a kill mid-write) a tail that
    :func:`repair_extxyz` removes."""
    data = frame_text(atoms).encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = 0
        while written < len(data):
            written += os.write(descriptor, data[written:])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def complete_frames_size(path: PathLike) -> tuple[int, int]:
    r"""Byte length of the complete extxyz frames at the start of ``path`` and their
    number. A frame is complete when its atom-count line, comment line and all atom
    lines are there, each ending in a newline.

    Raises:
        ValueError: A malformed frame before the end of the file (not a torn tail).
    """
    size, count = 0, 0
    with open(path, "rb") as stream:
        lines = stream.readlines()
    i = 0
    while i < len(lines):
        head = lines[i]
        if not head.endswith(b"\n"):
            break  # torn atom-count line
        try:
            num_atoms = int(head.strip())
        except ValueError:
            if i + 1 == len(lines):
                break
            raise ValueError(f"{path}: line {i + 1} should hold an atom count, got "
                             f"{head[:60]!r}") from None
        frame = lines[i:i + num_atoms + 2]
        if len(frame) < num_atoms + 2 or not frame[-1].endswith(b"\n"):
            break  # torn frame at the end
        size += sum(len(line) for line in frame)
        count += 1
        i += num_atoms + 2
    return size, count


def repair_extxyz(path: PathLike) -> int:
    r"""Truncates a torn last frame (from a kill mid-write) and returns the number of
    complete frames; a missing file has 0."""
    path = Path(path)
    if not path.exists():
        return 0
    size, count = complete_frames_size(path)
    if size < path.stat().st_size:
        with open(path, "r+b") as stream:
            stream.truncate(size)
            stream.flush()
            os.fsync(stream.fileno())
    return count


def read_frames(path: PathLike) -> list[Atoms]:
    r"""All complete frames of an extxyz file (ignoring a torn tail, not repairing it)."""
    path = Path(path)
    if not path.exists():
        return []
    size, count = complete_frames_size(path)
    if count == 0:
        return []
    with open(path, "rb") as stream:
        text = stream.read(size).decode()
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")  # type: ignore[return-value]
