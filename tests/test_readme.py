"""README.md's commands run as written: every Python block is executed (with ``<run>``
standing for the run folder of a small trained model), and every ``hipnn-*`` command of
its shell blocks composes its configuration (``--cfg job``: every override names a real
key and group; ``hipnn-lammps-build``, not a Hydra command, answers ``--help``). The
set-up and test commands are what CI itself runs (``.ci/run``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hipnn_pyg import save_model
from tests.nn.helpers import small_model, trained_looking

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def shell_commands() -> list[str]:
    commands = []
    for block in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("hipnn-"):
                commands.append(line)
    return commands


def test_the_readme_has_the_commands_this_test_checks() -> None:
    assert len(blocks("python")) >= 2
    assert "bash scripts/setup.sh && .venv/bin/hipnn-train experiment=rmd17_ethanol_quick" \
        in README
    assert "\n.venv/bin/python -m pytest -q -n 2\n" in README
    assert "\n.venv/bin/python -m pytest -q -n 2\n" in (REPO / ".ci" / "run").read_text()
    assert len(shell_commands()) >= 2


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_written(index: int, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "logs" / "train" / "runs" / "run"
    run.mkdir(parents=True)
    save_model(trained_looking(small_model(torch.float32), 0.05), run / "model.pt")
    code = blocks("python")[index].replace("<run>", "run")
    (tmp_path / "data").symlink_to(REPO / "data")  # the shipped data, as in a checkout
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("command", shell_commands())
def test_console_command_composes_its_config(command: str) -> None:
    console = shutil.which(command.split()[0], path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("console scripts not installed (pip install -e .)")
    arguments = shlex.split(command.replace("<run>", "logs/train/runs/run"))[1:]
    # The Hydra commands compose their config; the plugin builder (argparse) its help.
    check = ["--help"] if command.startswith("hipnn-lammps-build") else ["--cfg", "job"]
    process = subprocess.run([console, *arguments, *check], cwd=REPO, text=True,
                             capture_output=True, timeout=120,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert process.returncode == 0, process.stderr[-3000:]
