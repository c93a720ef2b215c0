"""The sensitivities' closed-form and compiled derivatives equal autograd's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from hipnn_pyg.nn import InverseGaussianSensitivity
from hipnn_pyg.nn.envsum import available_backends
from hipnn_pyg.nn.sensitivity import _cut_gaussians_grad, _GaussianGrad

#: Where the compiled kernels build, both their path and the pure-torch one are checked.
PATHS = ["torch"] + [b for b in available_backends() if b == "cpp"]


@pytest.mark.parametrize("path", PATHS)
def test_distance_vjp_equals_autograd_including_floored_and_cut_pairs(path: str) -> None:
    sensitivity = InverseGaussianSensitivity(12, 0.8, 4.0, 5.0, backend=path).double()
    with torch.no_grad():
        sensitivity.sigma.mul_(3.0)  # narrow Gaussians: many exponents below the floor
    # From close pairs to beyond the cutoff, where every sensitivity is zero.
    distances = torch.linspace(0.5, 5.5, 400, dtype=torch.float64).requires_grad_(True)
    grad = torch.randn(400, 12, dtype=torch.float64)
    (reference,) = torch.autograd.grad(sensitivity(distances), distances, grad)
    closed_form = sensitivity.distance_vjp(distances.detach(), grad)
    assert reference.abs().max() > 1.0 and reference[distances > 5.0].abs().max() == 0
    torch.testing.assert_close(closed_form, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif("cpp" not in PATHS, reason="the C++ kernels do not build here")
def test_compiled_derivatives_equal_autograd_to_third_order(two_threads: None) -> None:
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        values = low + (high - low) * torch.rand(*shape, generator=generator,
                                                 dtype=torch.float64)
        return values.requires_grad_(True)

    # 600 edges: three of the kernel's 256-edge blocks, summed over two threads
    inputs = (draw(600, 7, low=-1.0), draw(600, low=0.8, high=5.0), draw(600),
              draw(7, low=0.2, high=1.2), draw(7, low=2.0, high=6.0))
    reference = _cut_gaussians_grad(*inputs)
    compiled = _GaussianGrad.apply(*inputs, "cpp")
    for ours, theirs in zip(compiled, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    upstream = [torch.randn(t.shape, generator=generator, dtype=torch.float64)
                for t in reference]
    # The kernel's own backward (no graph asked for), then autograd's algebra for a graph.
    plain = torch.autograd.grad(compiled, inputs, upstream, retain_graph=True)
    orders = []
    for outputs in (compiled, reference):  # second derivatives, then a third (graph kept)
        second = torch.autograd.grad(outputs, inputs, upstream, create_graph=True)
        third = torch.autograd.grad(sum(g.square().sum() for g in second), inputs)
        orders.append([*second, *third])
    for ours, theirs in zip([*plain, *orders[0]], [*orders[1][:5], *orders[1]], strict=True):
        assert theirs.abs().max() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-11)


def third_derivatives(device: torch.device) -> Callable[[str], list[torch.Tensor]]:
    r"""The third derivatives of a force-like loss in the distances and widths, by
    backend: the kernels' backward gets an upstream gradient outside the graph."""
    weights = torch.randn(23, 12, generator=torch.Generator().manual_seed(4),
                          dtype=torch.float64).to(device)

    def third(backend: str) -> list[torch.Tensor]:
        sensitivity = InverseGaussianSensitivity(12, 0.8, 4.0, 5.0, backend=backend)
        sensitivity = sensitivity.double().to(device)
        r = torch.linspace(0.5, 4.8, 23, dtype=torch.float64, device=device).requires_grad_()
        (slope,) = torch.autograd.grad((sensitivity(r) * weights).sum(), r, create_graph=True)
        second = torch.autograd.grad(slope.square().sum(), [r, sensitivity.sigma],
                                     create_graph=True)
        return list(torch.autograd.grad(second[0].sum(), [r, sensitivity.sigma]))

    return third


@pytest.mark.skipif("cpp" not in PATHS, reason="the C++ kernels do not build here")
def test_third_derivatives_of_a_force_loss_through_the_compiled_kernels() -> None:
    third = third_derivatives(torch.device("cpu"))
    expected = third("torch")
    assert all(t.abs().max() > 0 for t in expected)
    torch.testing.assert_close(third("cpp"), expected, rtol=1e-10, atol=1e-10)


def test_an_unknown_backend_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="unknown sensitivity backend 'cuda'"):
        InverseGaussianSensitivity(backend="cuda")
