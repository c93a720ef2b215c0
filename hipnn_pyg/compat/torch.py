r"""torch internals hipnn_pyg relies on (``tests/compat/test_torch.py``).

* ``torch._foreach_lerp_``: the EMA's one fused update of every parameter;
* ``torch._assert_async``: the exported program's element check, kept by
  ``torch.export`` and AOTInductor;
* ``torch.fx.experimental._config.backed_size_oblivious``: tracing sizes 0 and 1 as
  symbolic (the exported program serves an isolated atom and an empty MD rank);
* ``torch._inductor.aoti_compile_and_package`` / ``aoti_load_package``: AOTInductor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def lerp_all(targets: Sequence[Tensor], sources: Sequence[Tensor], weight: float) -> None:
    r"""``target += weight * (source - target)`` for every pair, in one fused call."""
    torch._foreach_lerp_(list(targets), list(sources), weight)


def assert_in_program(condition: Tensor, message: str) -> None:
    r"""A check that a traced program keeps and runs (raising ``RuntimeError``)."""
    torch._assert_async(condition, message)


@contextmanager
def sizes_traced_symbolically() -> Iterator[None]:
    r"""Traces sizes 0 and 1 as symbolic too, not specialised to constants."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


def aoti_compile(program: Any, package_path: Any, inductor_configs: dict) -> Any:
    r"""AOTInductor's compile of an exported program into a ``.pt2`` package."""
    from torch._inductor import aoti_compile_and_package

    return aoti_compile_and_package(program, package_path=package_path,
                                    inductor_configs=inductor_configs)


def aoti_load(path: str | Path) -> Any:
    r"""AOTInductor's loader of a ``.pt2`` package (a callable)."""
    from torch._inductor import aoti_load_package

    return aoti_load_package(str(path))


__all__ = ["aoti_compile", "aoti_load", "assert_in_program", "lerp_all",
           "sizes_traced_symbolically"]
