"""A plain ``pip install .`` (a wheel, not editable): the console scripts find their
configs and the shipped data from any folder and write runs to ``./logs``.

The wheel of this checkout is installed into a fresh venv; torch and the other
dependencies come from the running venv through a ``.pth`` line (a plain path, so the
running venv's editable hipnn_pyg stays invisible).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
# build outputs and local state of the checkout that a copy of its sources leaves out
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "logs", "outputs", "multirun", "bench",
)


def _run(command: list[str], cwd: Path, env: dict[str, str], check: bool = True,
         ) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=300)
    if check:
        assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return process


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    r"""(venv, wheel): the wheel of this checkout installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    # local state a wheel must never carry
    for leftover in ("logs/train/runs/x/train.log", ".venv/leftover.py", "conf/local/default.yaml"):
        (source / leftover).parent.mkdir(parents=True, exist_ok=True)
        (source / leftover).write_text("trainer: {max_epochs: 1}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(tmp / "wheels"), str(source)], cwd=tmp, env=env)
    (wheel,) = (tmp / "wheels").glob("hipnn_pyg-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp, env=env)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp, env=env).stdout.strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "dev_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    return venv, wheel


def _user_env(venv: Path) -> dict[str, str]:
    r"""A user's shell after ``pip install .``: no checkout on the path, no HIPNN_* settings."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("HIPNN_")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_wheel_carries_configs_and_shipped_data_only(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"hipnn_pyg", "hipnn_pyg-0.1.0.dist-info"}, top_level
    configs = {n.removeprefix("hipnn_pyg/conf/") for n in names if n.startswith("hipnn_pyg/conf/")}
    in_checkout = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")
                   if p.parent.name != "local"}
    assert in_checkout <= configs and "local/default.yaml" not in configs
    assert "hipnn_pyg/shipped_data/rmd17_ethanol/rmd17_ethanol_train_01.npz" in names
    assert "hipnn_pyg/shipped_data/ethanol_gfn2/ethanol_gfn2.extxyz" in names
    # The C++ kernels build from these on first use; without them a wheel falls back to
    # the pure-torch kernels.
    assert {"hipnn_pyg/nn/csrc/envsum.cpp", "hipnn_pyg/nn/csrc/gaussians.cpp"} <= set(names)
    assert not [n for n in names if "leftover" in n or n.endswith(".log")]


def test_console_scripts_work_from_any_folder(installed: tuple[Path, Path], tmp_path: Path,
                                              ) -> None:
    venv, _ = installed
    env = _user_env(venv)
    # where `import hipnn_pyg` loads from (find_spec: without importing torch)
    package = _run([str(venv / "bin" / "python"), "-c",
                    "import importlib.util as u; print(u.find_spec('hipnn_pyg').origin)"],
                   cwd=tmp_path, env=env)
    assert Path(package.stdout.strip()).is_relative_to(venv), package.stdout
    # The installed package builds (or finds cached) its C++ kernels from its own sources.
    backends = _run([str(venv / "bin" / "python"), "-c",
                     "from hipnn_pyg.nn.envsum import available_backends as a; print(a())"],
                    cwd=tmp_path, env=env)
    assert "'cpp'" in backends.stdout, backends.stdout + backends.stderr

    _run([str(venv / "bin" / "hipnn-train"), "experiment=rmd17_ethanol_quick", "debug=fdr"],
         cwd=tmp_path, env=env)
    (run,) = (tmp_path / "logs" / "debug" / "runs").iterdir()
    assert "experiment=rmd17_ethanol_quick" in (run / ".hydra" / "overrides.yaml").read_text()
    assert (run / "model.pt").is_file() and (run / "debug.log").is_file()

    printed = _run([str(venv / "bin" / "hipnn-train"), "experiment=rmd17_ethanol_quick",
                    "--cfg", "job", "--resolve"], cwd=tmp_path, env=env).stdout
    shipped = Path(OmegaConf.create(printed).data.path)
    assert shipped.is_file() and shipped.is_relative_to(venv), shipped

    # The other consoles print their configs; run side by side (each starts Python).
    consoles = {"hipnn-eval": "split", "hipnn-md": "timestep_fs", "hipnn-label": "calculator",
                "hipnn-active": "selection", "hipnn-export": "aoti_output"}
    running = {console: subprocess.Popen([str(venv / "bin" / console), "--cfg", "job"],
                                         cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
               for console in consoles}
    for console, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{console}: {stdout[-2000:]}{stderr[-4000:]}"
        assert consoles[console] in OmegaConf.create(stdout), stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
