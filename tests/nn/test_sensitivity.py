"""The sensitivities' closed-form distance derivative equals autograd's."""

from __future__ import annotations

import torch

from hipnn_pyg.nn import InverseGaussianSensitivity


def test_distance_vjp_equals_autograd_including_floored_and_cut_pairs() -> None:
    sensitivity = InverseGaussianSensitivity(12, 0.8, 4.0, 5.0).double()
    with torch.no_grad():
        sensitivity.sigma.mul_(3.0)  # narrow Gaussians: many exponents below the floor
    # From close pairs to beyond the cutoff, where every sensitivity is zero.
    distances = torch.linspace(0.5, 5.5, 400, dtype=torch.float64).requires_grad_(True)
    grad = torch.randn(400, 12, dtype=torch.float64)
    (reference,) = torch.autograd.grad(sensitivity(distances), distances, grad)
    closed_form = sensitivity.distance_vjp(distances.detach(), grad)
    assert reference.abs().max() > 1.0 and reference[distances > 5.0].abs().max() == 0
    torch.testing.assert_close(closed_form, reference, rtol=1e-12, atol=1e-12)
