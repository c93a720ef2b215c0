"""The torch internals of hipnn_pyg.compat.torch: the fused lerp, an in-program assert
that torch.export keeps, symbolic tracing of sizes 0 and 1, and AOTInductor's entry
points."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim
from torch.fx.experimental.proxy_tensor import make_fx

from hipnn_pyg.compat import torch as compat


def test_lerp_all_moves_every_target_towards_its_source() -> None:
    targets, sources = [torch.zeros(3), torch.ones(2)], [torch.ones(3), torch.zeros(2)]
    compat.lerp_all(targets, sources, 0.25)
    torch.testing.assert_close(targets[0], torch.full((3,), 0.25))
    torch.testing.assert_close(targets[1], torch.full((2,), 0.75))


def test_an_in_program_assert_survives_export_at_symbolic_sizes_0_and_1() -> None:
    def checked(x: torch.Tensor) -> torch.Tensor:
        compat.assert_in_program((x >= 0).all(), "negative input")
        return x * 2

    example = torch.arange(4.0)
    with compat.sizes_traced_symbolically():
        traced = make_fx(checked, tracing_mode="symbolic")(example)
        program = torch.export.export(traced, (example,),
                                      dynamic_shapes=({0: Dim("n", min=0)},), strict=False)
    run = program.module()
    for size in (0, 1, 5):
        torch.testing.assert_close(run(torch.ones(size)), 2 * torch.ones(size))
    with pytest.raises(RuntimeError, match="negative input"):
        run(-torch.ones(3))


def test_aoti_entry_points_exist() -> None:
    from torch._inductor import aoti_compile_and_package, aoti_load_package

    assert callable(aoti_compile_and_package) and callable(aoti_load_package)
    assert callable(compat.aoti_compile) and callable(compat.aoti_load)
