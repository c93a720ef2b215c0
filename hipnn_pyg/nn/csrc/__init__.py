r"""The compiled CPU kernels (``envsum.cpp``: the environment sum; ``gaussians.cpp``:
the sensitivities' derivatives), built on first use into one module.

:func:`torch.utils.cpp_extension.load` compiles it once into :func:`cache_dir`
(under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); later
processes import the cached library without taking any lock. Without a C++ compiler
(or ninja) the build fails once, and :func:`extension_available` reports :obj:`False`
so callers use the pure-torch kernel.
Set ``HIPNN_NO_CPP_EXTENSION=1`` to skip the build altogether.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

#: The kernels' sources, built into one module (envsum.cpp defines it).
SOURCES = [Path(__file__).with_name(name) for name in ("envsum.cpp", "gaussians.cpp")]


@functools.cache
def _load() -> ModuleType | None:
    if os.environ.get("HIPNN_NO_CPP_EXTENSION", "") not in ("", "0"):
        return None
    try:
        return _load_or_build()
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(
            f"the C++ environment-sum kernel did not build ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); using the pure-torch "
            "kernel",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def cache_dir() -> Path:
    r"""Where the built kernel is kept: ``$TORCH_EXTENSIONS_DIR`` (else
    ``~/.cache/torch_extensions``)/``hipnn_pyg-<torch version>``."""
    import torch

    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(base) / f"hipnn_pyg-{torch.__version__}"


def _load_or_build() -> ModuleType:
    r"""Imports the cached library, or builds it in a folder of this process's own and
    renames it into the cache. No lock file is shared between processes: torch's own
    cache takes one for every load, and a process killed while holding it (Ctrl-C,
    a preempted job) would leave every later run waiting on it for ever. Builders
    that race each produce the same file; the last rename wins."""
    import importlib.util

    from torch.utils.cpp_extension import load

    # Tuned for this CPU (-march=native): the name carries the CPU's instruction sets and
    # the source's hash, so a shared cache never hands over a stale or foreign build.
    digest = hashlib.sha1(b"".join(s.read_bytes() for s in SOURCES)).hexdigest()[:10]
    name = f"hipnn_envsum_{_cpu_tag()}_{digest}"
    cache = cache_dir()
    library = cache / f"{name}.so"
    if library.is_file():
        spec = importlib.util.spec_from_file_location(name, library)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {library}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    cache.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{name}.build.", dir=cache))
    try:
        module = load(name=name, sources=[str(s) for s in SOURCES], build_directory=str(build),
                      extra_cflags=["-O3", "-march=native", "-fopenmp-simd"], verbose=False)
        os.replace(build / f"{name}.so", library)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return module


def _cpu_tag() -> str:
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def extension_available() -> bool:
    r"""Whether the compiled kernel loads (builds it on the first call)."""
    return _load() is not None


def load_extension() -> ModuleType:
    r"""The compiled kernel module; raises :obj:`RuntimeError` when it cannot build."""
    module = _load()
    if module is None:
        raise RuntimeError(
            "the C++ environment-sum kernel is not available here (no compiler, or "
            "HIPNN_NO_CPP_EXTENSION is set); use backend='torch'"
        )
    return module
