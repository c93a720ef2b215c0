r"""The compiled CPU kernels (``envsum.cpp``: the environment sum; ``gaussians.cpp``:
the sensitivities' derivatives), built on first use into one shared library that
registers them as PyTorch operators ``torch.ops.hipnn.*`` (``TORCH_LIBRARY``).

The library links libtorch only (no Python), so C++ programs load it too: the LAMMPS
plugin and the AOTInductor consumer ``dlopen`` it before they run an exported model
that calls the operators (:func:`library_path`).

It is compiled once into :func:`cache_dir` (under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); later processes load the cached library without taking
any lock. A cached library that is damaged (it carries a checksum) or does not load
(linked to another torch) is rebuilt. When the build fails (no C++ compiler, no ninja),
one warning quotes the compiler's error and says how to get the fast path,
:func:`build_error` keeps it, and callers use the pure-torch kernels;
``HIPNN_NO_CPP_EXTENSION=1`` skips the build altogether.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

#: The kernels' sources, built into one library.
SOURCES = [Path(__file__).with_name(name) for name in ("envsum.cpp", "gaussians.cpp")]
#: How a user gets the compiled kernels when the build failed.
HOW_TO_BUILD = ("install a C++ compiler (g++ or clang++) and ninja (pip install ninja), "
                "then start a new process; set HIPNN_NO_CPP_EXTENSION=1 to use the "
                "pure-torch kernels without this warning")


class KernelBuildError(RuntimeError):
    r"""The compiled kernels could not be built or loaded; the message quotes why."""


_build_error: KernelBuildError | None = None


@functools.cache
def _load() -> Path | None:
    global _build_error
    if os.environ.get("HIPNN_NO_CPP_EXTENSION", "") not in ("", "0"):
        return None
    try:
        return _load_or_build()
    except Exception as error:  # no compiler, no ninja, read-only cache...
        _build_error = error if isinstance(error, KernelBuildError) else KernelBuildError(
            f"{type(error).__name__}: {error}")
        warnings.warn(
            f"hipnn_pyg's C++ kernels did not build, so the slower pure-torch kernels run "
            f"instead. {_build_error}\nTo get the fast path: {HOW_TO_BUILD}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def cache_dir() -> Path:
    r"""Where the built library is kept: ``$TORCH_EXTENSIONS_DIR`` (else
    ``~/.cache/torch_extensions``)/``hipnn_pyg-<torch version>``."""
    import torch

    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(base) / f"hipnn_pyg-{torch.__version__}"


def _library_name() -> str:
    # Tuned for this CPU (-march=native): the name carries the CPU's instruction sets and
    # the sources' hash, so a shared cache never hands over a stale or foreign build.
    digest = hashlib.sha1(b"".join(s.read_bytes() for s in SOURCES)).hexdigest()[:10]
    return f"hipnn_kernels_{_cpu_tag()}_{digest}"


def _load_or_build() -> Path:
    r"""Loads the cached library, or builds it in a folder of this process's own and
    renames it into the cache. No lock file is shared between processes: torch's own
    cache takes one for every load, and a process killed while holding it (Ctrl-C,
    a preempted job) would leave every later run waiting on it for ever. Builders
    that race each produce the same file; the last rename wins.

    A library is loaded only when it matches the checksum written beside it at build
    time: loading a truncated shared library can crash the process (SIGBUS) instead of
    raising, so a damaged one is rebuilt without being opened."""
    import torch

    library = cache_dir() / f"{_library_name()}.so"
    if library.is_file():
        if _checksum_matches(library):
            try:
                torch.ops.load_library(str(library))
                _register_shapes()
                return library
            except OSError as error:  # linked to another torch, a missing dependency
                reason = f"does not load ({error})"
        else:
            reason = "does not match its checksum (truncated or damaged)"
        warnings.warn(f"the cached kernel library {library} {reason}; rebuilding it",
                      RuntimeWarning, stacklevel=4)
        library.unlink(missing_ok=True)
    _build(library)
    torch.ops.load_library(str(library))
    _register_shapes()
    return library


def _register_shapes() -> None:
    r"""The operators' shape functions (fake kernels): what ``torch.compile`` and
    ``torch.export`` trace with, symbolic sizes included."""
    from torch.library import register_fake

    @register_fake("hipnn::envsum")
    def _envsum(s, x, order, start, edges, neighbours, num_rows):
        return s.new_empty(num_rows, s.size(1), x.size(1))

    @register_fake("hipnn::sensesum")
    def _sensesum(env, x, neighbours, centres):
        return env.new_empty(neighbours.size(0), env.size(1))

    @register_fake("hipnn::featsum")
    def _featsum(env, s, start, edges, centres, num_rows):
        return env.new_empty(num_rows, env.size(2))

    @register_fake("hipnn::gaussian_grad")
    def _gaussian_grad(g, r, c, m, sigma, floor):
        return [r.new_empty(r.size(0)), r.new_empty(r.size(0)), m.new_empty(m.size(0)),
                m.new_empty(m.size(0))]

    @register_fake("hipnn::gaussian_grad_backward")
    def _gaussian_grad_backward(g, r, c, m, sigma, floor, h_r, h_c, h_m, h_sigma):
        return [g.new_empty(g.shape), r.new_empty(r.size(0)), r.new_empty(r.size(0)),
                m.new_empty(m.size(0)), m.new_empty(m.size(0))]


def _checksum_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksum_matches(library: Path) -> bool:
    try:
        return _checksum_file(library).read_text().strip() == _digest(library)
    except OSError:
        return False


def _build(library: Path) -> None:
    r"""Compiles :data:`SOURCES` into ``library`` and writes its checksum; raises
    :class:`KernelBuildError` with the compiler's own error lines."""
    from torch.utils.cpp_extension import load

    library.parent.mkdir(parents=True, exist_ok=True)
    name = library.stem
    build = Path(tempfile.mkdtemp(prefix=f".{name}.build.", dir=library.parent))
    try:
        # --as-needed drops libtorch_python, which torch adds to every extension: the
        # library then loads in processes without Python (LAMMPS, the AOTI consumer).
        load(name=name, sources=[str(s) for s in SOURCES], build_directory=str(build),
             extra_cflags=["-O3", "-march=native", "-fopenmp-simd"],
             extra_ldflags=["-Wl,--as-needed"], is_python_module=False, verbose=False)
        built = build / f"{name}.so"
        (build / "checksum").write_text(_digest(built))
        os.replace(build / "checksum", _checksum_file(library))
        os.replace(built, library)
    except Exception as error:
        raise KernelBuildError(f"building {name} failed: {_compiler_errors(error)}") from error
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _compiler_errors(error: BaseException, most: int = 6) -> str:
    r"""The lines of a failed build that say what failed (``error:``, ``not found``...),
    or the error's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    keys = ("error", "not found", "no such file", "command not found", "ninja")
    wanted = [line for line in lines if any(key in line.lower() for key in keys)]
    chosen = wanted[:most] or lines[:1] or [type(error).__name__]
    return " | ".join(chosen)


def _cpu_tag() -> str:
    flags = platform.machine() + sys.platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def extension_available() -> bool:
    r"""Whether the compiled kernels are loaded (builds them on the first call)."""
    return _load() is not None


def library_path() -> Path:
    r"""The loaded kernel library, for C++ programs that run exported models; raises
    like :func:`load_extension`."""
    load_extension()
    path = _load()
    assert path is not None
    return path


def build_error() -> KernelBuildError | None:
    r"""Why the kernels did not build in this process, or :obj:`None`."""
    _load()
    return _build_error


def load_extension():
    r"""The compiled operators (``torch.ops.hipnn``); raises :class:`KernelBuildError`
    naming why when they are not available."""
    import torch

    if _load() is None:
        if os.environ.get("HIPNN_NO_CPP_EXTENSION", "") not in ("", "0"):
            raise KernelBuildError("the C++ kernels are switched off (HIPNN_NO_CPP_EXTENSION "
                                   "is set); use backend='torch'")
        raise KernelBuildError(f"the C++ kernels are not available: {_build_error}. "
                               f"{HOW_TO_BUILD}; or use backend='torch'")
    return torch.ops.hipnn
