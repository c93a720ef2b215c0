"""Helpers of the bad-input corpus (``tests/**/test_bad_inputs.py``): the command-line
programs as subprocesses, byte snapshots of the user's files, and a model file whose
pickle runs code."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO

SCRIPTS = {name: REPO / "scripts" / f"{name}.py"
           for name in ("train", "eval", "md", "label", "active")}


def run_cli(program: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python scripts/<program>.py args...`` (what ``hipnn-<program>`` runs), with this
    checkout first on the path and one thread."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(SCRIPTS[program]), *args], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def failed_with(process: subprocess.CompletedProcess[str]) -> str:
    """The output of a run that must have failed; fails the test if it succeeded."""
    output = process.stdout + process.stderr
    assert process.returncode != 0, f"expected a failure, got exit 0:\n{output[-3000:]}"
    return output


def snapshot(*paths: Path) -> dict[Path, str]:
    """SHA-256 of every file under ``paths``, to prove afterwards that nothing changed."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def assert_unchanged(before: dict[Path, str]) -> None:
    assert before, "nothing to compare"
    assert snapshot(*before) == before


class _RunsCode:
    """Unpickling this calls ``os.system(command)``: what a malicious model file does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def crafted_model(path: Path, marker: Path) -> Path:
    """A ``model.pt`` that looks like a saved model but whose pickle creates ``marker``
    when loaded with full unpickling; a safe loader refuses it and ``marker`` stays
    absent."""
    torch.save({"format_version": 1, "class": "hipnn_pyg.nn.model.HIPNN",
                "hyperparameters": {"species": [1, 6, 8]}, "state_dict": {},
                "payload": _RunsCode(f"touch {shlex.quote(str(marker))}")}, path)
    return path


#: What the message about a crafted pickle must say: it is refused as unsafe.
UNSAFE = r"(?i)(unsafe|safely|arbitrary code|beyond tensors|more than weights|weights.only)"
