r"""Distance sensitivities of HIP-NN: inverse-distance Gaussians times a cosine cutoff."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from hipnn_pyg.nn.contraction import BACKENDS
from hipnn_pyg.nn.spec import Configurable


class CosineCutoff(Configurable, nn.Module):
    r"""The smooth cutoff :math:`\varphi(r) = \cos^2(\pi r / 2 r_c)` for :math:`r < r_c`,
    zero beyond, so that energies and forces go continuously to zero at the cutoff.

    Args:
        cutoff (float): The hard cutoff :math:`r_c` in Å. (default: :obj:`6.5`)
    """

    def __init__(self, cutoff: float = 6.5) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, distances: Tensor) -> Tensor:
        value = torch.cos(distances * (math.pi / (2.0 * self.cutoff))).square()
        return value * (distances < self.cutoff).to(distances.dtype)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


#: Floor of the Gaussians' exponent: exp(-60) = 9e-27 is zero for any purpose, and torch's
#: vectorised exp takes a slow path far below it (10x slower over [-200, 0] in float32),
#: which most pairs of a large system reach.
MIN_EXPONENT = -60.0


def _cut_gaussians(distances: Tensor, cutoff: Tensor, inverse_mu: Tensor, sigma: Tensor):
    delta = distances.reciprocal().unsqueeze(-1) - inverse_mu
    gaussian = torch.exp((-0.5 * (delta * sigma).square()).clamp_min(MIN_EXPONENT))
    return delta, gaussian, gaussian * cutoff.unsqueeze(-1)


class _CutGaussians(torch.autograd.Function):
    r"""The sensitivities, keeping only their ``[num_edges]`` inputs for the backward
    (autograd would keep three ``[num_edges, num_sensitivities]`` intermediates). The
    backward runs the compiled kernel of ``csrc/gaussians.cpp`` on CPU (through
    :class:`_GaussianGrad` when a graph is asked for, as force training does), else
    recomputes the values with differentiable operations; derivatives of every order
    work on both. On CUDA tensors the same two kernels run in Triton
    (:mod:`~hipnn_pyg.nn.triton_kernels`) where triton is installed."""

    @staticmethod
    def forward(ctx, distances: Tensor, cutoff: Tensor, inverse_mu: Tensor, sigma: Tensor,
                backend: str | None = None):
        ctx.save_for_backward(distances, cutoff, inverse_mu, sigma)
        ctx.backend = backend
        # The same values as _cut_gaussians, computed in place: one [num_edges, S] buffer
        # instead of five transient ones (1.6 GB at 10^5 atoms of water).
        values = distances.reciprocal().unsqueeze(-1) - inverse_mu
        values.mul_(sigma).square_().mul_(-0.5).clamp_(min=MIN_EXPONENT).exp_()
        return values.mul_(cutoff.unsqueeze(-1))

    @staticmethod
    def backward(ctx, grad: Tensor):
        distances, cutoff, inverse_mu, sigma = ctx.saved_tensors
        inputs = (grad, distances, cutoff, inverse_mu, sigma)
        ops = _kernel_ops(distances, ctx.backend)
        if ops is not None:  # one pass over [E, S], no temporaries of that size
            if torch.is_grad_enabled():  # force training: a graph for the loss's backward
                return *_GaussianGrad.apply(*inputs, ctx.backend), None
            return *ops.gaussian_grad(*_contiguous(inputs), MIN_EXPONENT), None
        # With a graph asked for, or in a trace with a symbolic edge count (export,
        # torch.compile) where chunks would fix the count: one differentiable pass.
        if torch.is_grad_enabled() or isinstance(distances.size(0), torch.SymInt):
            return *_cut_gaussians_grad(*inputs), None
        # First derivatives only: chunks of edges bound the temporaries.
        parts = [
            _cut_gaussians_grad(grad[start:stop], distances[start:stop], cutoff[start:stop],
                                inverse_mu, sigma)
            for start, stop in _chunks(distances.numel(), 1 << 15)
        ]
        grad_distances, grad_cutoff = (torch.cat([p[k] for p in parts]) for k in (0, 1))
        grad_mu, grad_sigma = (sum(p[k] for p in parts) for k in (2, 3))
        return grad_distances, grad_cutoff, grad_mu, grad_sigma, None


class _GaussianGrad(torch.autograd.Function):
    r"""The first derivatives of the sensitivities contracted with ``grad`` (what
    :class:`_CutGaussians` returns), on the compiled kernel, with the kernel's
    vector-Jacobian product as backward: force training's second derivatives in one
    pass over the edges each. Higher orders recompute it with differentiable
    operations (:func:`_cut_gaussians_grad`)."""

    @staticmethod
    def forward(ctx, grad: Tensor, distances: Tensor, cutoff: Tensor, inverse_mu: Tensor,
                sigma: Tensor, backend: str | None):
        inputs = _contiguous((grad, distances, cutoff, inverse_mu, sigma))
        ctx.save_for_backward(*inputs)
        ctx.backend = backend
        return tuple(_kernel_ops(distances, backend).gaussian_grad(*inputs, MIN_EXPONENT))

    @staticmethod
    def backward(ctx, *upstream: Tensor):
        inputs = ctx.saved_tensors
        if not torch.is_grad_enabled():
            return *_kernel_ops(inputs[1], ctx.backend).gaussian_grad_backward(
                *inputs, MIN_EXPONENT, *_contiguous(upstream)), None
        with torch.enable_grad():  # third derivatives and beyond: autograd's own algebra
            aliases = [t.view_as(t) for t in inputs]
            # Only the inputs asked for and in a graph (the upstream gradient often is not).
            wanted = [i for i, t in enumerate(aliases)
                      if ctx.needs_input_grad[i] and t.requires_grad]
            grads: list[Tensor | None] = [None] * len(aliases)
            if wanted:
                found = torch.autograd.grad(_cut_gaussians_grad(*aliases),
                                            [aliases[i] for i in wanted], upstream,
                                            create_graph=True, allow_unused=True)
                for i, grad in zip(wanted, found, strict=True):
                    grads[i] = grad
            return *grads, None


def _kernel_ops(distances: Tensor, backend: str | None) -> Any:
    r"""The operators of the derivatives' kernels for ``distances`` by the environment
    sum's rule (:func:`~hipnn_pyg.nn.contraction.resolve_backend`): the compiled CPU
    ones (``torch.ops.hipnn``), the Triton ones (``torch.ops.hipnn_triton``), or
    :obj:`None` for torch operations."""
    from hipnn_pyg.nn.contraction import resolve_backend

    chosen = resolve_backend(distances, backend)
    if chosen == "cpp":
        from hipnn_pyg.nn.csrc import load_extension

        return load_extension()
    if chosen == "triton":
        return torch.ops.hipnn_triton  # registered by the import of contraction
    return None


def _contiguous(tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


def _chunks(size: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, size)) for start in range(0, max(size, 1), step)]


def _cut_gaussians_grad(
    grad: Tensor, distances: Tensor, cutoff: Tensor, inverse_mu: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    delta, gaussian, _ = _cut_gaussians(distances, cutoff, inverse_mu, sigma)
    weighted = grad * gaussian
    # d gaussian / d delta = -sigma^2 delta gaussian; d delta / d r = -1 / r^2.
    slope = weighted * cutoff.unsqueeze(-1) * delta
    grad_distances = (slope @ sigma.square()) * distances.reciprocal().square()
    grad_mu = slope.sum(0) * sigma.square()
    grad_sigma = -(slope * delta).sum(0) * sigma
    return grad_distances, weighted.sum(-1), grad_mu, grad_sigma


class InverseGaussianSensitivity(Configurable, nn.Module):
    r"""The HIP-NN sensitivity functions from `"Hierarchical modeling of molecular
    energies using a deep neural network" <https://arxiv.org/abs/1710.00017>`_

    .. math::
        s_\nu(r) = \exp\left(-\frac{(r^{-1} - \mu_\nu^{-1})^2}{2\sigma_\nu^{-2}}\right)
        \varphi(r),

    Gaussians in inverse distance, so that they are narrow at short range and broad at
    long range. Both :math:`\mu_\nu^{-1}` and :math:`\sigma_\nu` are learnable.
    The cutoff radius (:attr:`cutoff`) is also the radius of the pair list of a
    :class:`~hipnn_pyg.nn.HIPNNRepresentation` that uses this sensitivity.

    Args:
        num_sensitivities (int): Number of functions :math:`\nu`. (default: :obj:`20`)
        soft_min_distance (float): Smallest centre :math:`\mu` in Å. (default: :obj:`0.75`)
        soft_max_distance (float): Largest centre :math:`\mu` in Å. (default: :obj:`5.5`)
        cutoff (nn.Module or float): The cutoff function, or the radius of a
            :class:`CosineCutoff`. (default: :obj:`6.5`)
        backend (str, optional): Kernel of the derivatives, ``"torch"``, ``"cpp"`` or
            ``"triton"``, as the environment sum's. (default: :obj:`None`: the compiled
            CPU kernel for CPU tensors, Triton for CUDA tensors where triton is
            installed, else torch operations)
    """

    def __init__(
        self,
        num_sensitivities: int = 20,
        soft_min_distance: float = 0.75,
        soft_max_distance: float = 5.5,
        cutoff: nn.Module | float = 6.5,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < soft_min_distance < soft_max_distance:
            raise ValueError(
                "need 0 < soft_min_distance < soft_max_distance, got "
                f"{soft_min_distance} and {soft_max_distance}"
            )
        self.cutoff_fn = cutoff if isinstance(cutoff, nn.Module) else CosineCutoff(cutoff)
        if soft_max_distance > self.cutoff:
            raise ValueError(
                f"soft_max_distance={soft_max_distance} Å lies beyond cutoff={self.cutoff} Å"
            )
        self.num_sensitivities = num_sensitivities
        self.soft_min_distance = soft_min_distance
        self.soft_max_distance = soft_max_distance
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown sensitivity backend {backend!r}; choose from "
                             f"{list(BACKENDS)} or None (by device)")
        self.backend = backend
        self.inverse_mu = nn.Parameter(torch.empty(num_sensitivities))
        self.sigma = nn.Parameter(torch.empty(num_sensitivities))
        self.reset_parameters()

    @property
    def cutoff(self) -> float:
        r"""The radius (Å) beyond which every sensitivity vanishes."""
        return float(self.cutoff_fn.cutoff)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.inverse_mu.copy_(
                torch.linspace(
                    1.0 / self.soft_max_distance,
                    1.0 / self.soft_min_distance,
                    self.num_sensitivities,
                )
            )
            # hippynn's choice: the Gaussians overlap their neighbours in 1/r.
            self.sigma.fill_(self.soft_min_distance * 2.0 * self.num_sensitivities)

    def forward(self, distances: Tensor) -> Tensor:
        r"""Returns ``[num_edges, num_sensitivities]`` for ``distances [num_edges]``."""
        return _CutGaussians.apply(
            distances, self.cutoff_fn(distances), self.inverse_mu, self.sigma, self.backend
        )

    @torch.no_grad()
    def distance_vjp(self, distances: Tensor, grad: Tensor) -> Tensor:
        r"""The vector-Jacobian product :math:`\sum_\nu g_{e\nu}\, \partial
        s_\nu(r_e) / \partial r_e` for ``grad [num_edges, num_sensitivities]``, in
        closed form: the distances' gradient of a frozen layer (inference, MD) without
        autograd's recomputation of the values and the parameters' gradients.

        With :math:`G_\nu = \exp(-\tfrac12 \sigma_\nu^2 \delta_\nu^2)`,
        :math:`\delta_\nu = r^{-1} - \mu_\nu^{-1}` and the cutoff :math:`\varphi`:
        :math:`\partial s_\nu / \partial r = G_\nu (\varphi' + \varphi\,
        \sigma_\nu^2 \delta_\nu / r^2)`. Where the exponent is floored at
        :data:`MIN_EXPONENT` autograd's derivative is zero and this one keeps the
        :math:`e^{-60}`-small term (no mask pass for it).
        """
        with torch.enable_grad():  # the cutoff's slope, by autograd on [num_edges] only
            leaf = distances.detach().requires_grad_(True)
            cut = self.cutoff_fn(leaf)
        ops = _kernel_ops(distances, self.backend)
        if ops is not None:
            inputs = (grad, distances, cut.detach(), self.inverse_mu, self.sigma)
            radial, by_cut, _, _ = ops.gaussian_grad(*_contiguous(inputs), MIN_EXPONENT)
        else:
            inverse = distances.reciprocal()
            delta = inverse.unsqueeze(-1) - self.inverse_mu
            exponent = (delta * self.sigma).square_().mul_(-0.5)
            weighted = exponent.clamp_min_(MIN_EXPONENT).exp_().mul_(grad)
            by_cut = weighted.sum(-1)
            radial = cut.detach() * ((weighted * delta) @ self.sigma.square()) * inverse.square()
        (slope,) = torch.autograd.grad(cut, leaf, by_cut)
        return slope + radial

    def extra_repr(self) -> str:
        return (
            f"num_sensitivities={self.num_sensitivities}, "
            f"soft_min_distance={self.soft_min_distance}, "
            f"soft_max_distance={self.soft_max_distance}"
        )
