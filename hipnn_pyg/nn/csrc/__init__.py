r"""The compiled CPU environment-sum kernel (``envsum.cpp``), built on first use.

:func:`torch.utils.cpp_extension.load` compiles it once into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); later processes
load the cached library. Without a C++ compiler (or ninja) the build fails once, and
:func:`extension_available` reports :obj:`False` so callers use the pure-torch kernel.
Set ``HIPNN_NO_CPP_EXTENSION=1`` to skip the build altogether.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("envsum.cpp")


@functools.cache
def _load() -> ModuleType | None:
    if os.environ.get("HIPNN_NO_CPP_EXTENSION", "") not in ("", "0"):
        return None
    try:
        from torch.utils.cpp_extension import load

        # Tuned for this CPU (-march=native): the cache entry is named after the CPU's
        # instruction sets, so a shared cache never hands it to a different machine.
        return load(name=f"hipnn_envsum_{_cpu_tag()}", sources=[str(SOURCE)],
                    extra_cflags=["-O3", "-march=native", "-fopenmp-simd"], verbose=False)
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(
            f"the C++ environment-sum kernel did not build ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); using the pure-torch "
            "kernel",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


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
