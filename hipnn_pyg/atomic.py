r"""Crash-safe file writes: a file is either its old version or its complete new one.

Every file that hipnn_pyg writes for a user (models, checkpoints, splits, MD logs)
goes through :func:`atomic_write`: the content goes to a uniquely named temporary
file in the target's folder, is flushed and fsynced, renamed over the target with
:func:`os.replace` (atomic on POSIX and Windows), and the folder is fsynced so that
the rename itself survives a power cut. On any error, the temporary file is removed
and the old file is untouched.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

#: Test hook (fault injection): seconds to wait between writing the temporary file and
#: renaming it, so that a test can kill a process in the middle of a write. Unset (the
#: default) means no wait.
PAUSE_VARIABLE = "HIPNN_PYG_TEST_WRITE_PAUSE"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Files are created with the permissions a plain ``open(path, "w")`` would give.
_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_directory(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on Windows: the rename is durable there
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(descriptor)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any
) -> Iterator[IO[Any]]:
    r"""Opens a temporary file to write ``path``'s new content to; on leaving the
    block, the file replaces ``path`` atomically. If the block raises, ``path`` keeps
    its old content and no temporary file is left behind.

    Example::

        with atomic_write("md.csv", "w", newline="") as stream:
            csv.writer(stream).writerows(rows)

    Args:
        path (str or os.PathLike): The file to write; missing parent folders are
            created.
        mode (str): A write mode of :func:`open`, ``"wb"`` or ``"w"``.
            (default: :obj:`"wb"`)
        **open_kwargs: Further arguments of :func:`open` (``encoding``,
            ``newline``...).
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes whole files: mode must start with 'w', got {mode}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_mode = path.stat().st_mode & 0o777 if path.exists() else _NEW_FILE_MODE
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, file_mode)  # mkstemp makes owner-only files
        pause = os.environ.get(PAUSE_VARIABLE)
        if pause:
            time.sleep(float(pause))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    r"""Writes ``torch.save(obj)`` to ``path`` with :func:`atomic_write`.

    Args:
        obj: What to save.
        path (str or os.PathLike): The target file.
    """
    with atomic_write(path) as stream:
        torch.save(obj, stream)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    r"""Writes ``text`` to ``path`` with :func:`atomic_write`."""
    with atomic_write(path, "w") as stream:
        stream.write(text)
