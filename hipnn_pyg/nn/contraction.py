r"""The three edge contractions behind every HIP-NN environment, their backends and their
one autograd rule.

For a grouping of edges :math:`e` that read row ``gather[e]`` of a per-row input and
sum into row ``scatter[e]`` of an environment:

* ``envsum(s, x)[r, ν, f] = Σ_{e: scatter[e] = r} s[e, ν] x[gather[e], f]``,
* ``sensesum(env, x)[e, ν] = Σ_f env[scatter[e], ν, f] x[gather[e], f]``,
* ``featsum(env, s)[q, f] = Σ_{e: gather[e] = q} Σ_ν s[e, ν] env[scatter[e], ν, f]``.

The derivatives of each are the other two (:func:`_backward`), so derivatives of any
order never build a ``[num_edges, S, F]`` tensor. The plain HIP-NN environment is
``envsum`` over (neighbour → centre) edges; the factorised HIP-NN-TS environment is a
``featsum`` with one edge per group (messages) followed by an ``envsum`` (see
:mod:`~hipnn_pyg.nn.pairsum`): the same three operations over two other groupings.

Backends: ``"cpp"``, the compiled CPU operators ``torch.ops.hipnn.*``
(:mod:`~hipnn_pyg.nn.csrc`), which ``torch.compile``, ``torch.export`` and
AOTInductor keep as single operators (their shape functions are registered here);
``"triton"``, Triton kernels for CUDA tensors registered as the operators
``torch.ops.hipnn_triton.*`` (:mod:`~hipnn_pyg.nn.triton_kernels`; CPU tensors only
under ``TRITON_INTERPRET=1``), which read nothing back to the host;
``"torch"``, batched matrix products over degree blocks of rows
(:mod:`~hipnn_pyg.nn.blocks`; chunks of edges where each edge is a row), on any device,
at the cost of one host synchronisation per grouping (the blocks' sizes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from hipnn_pyg.nn import triton_kernels
from hipnn_pyg.nn.blocks import DegreeBlock, degree_blocks

OPS = ("envsum", "sensesum", "featsum")
#: Backends by name (:func:`available_backends` says which work here).
BACKENDS = ("torch", "cpp", "triton")
# Elements of the largest transient a "torch" chunk builds ([chunk, S, F]): 8 MB in float64.
_CHUNK_ELEMENTS = 1 << 20


def _offsets(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _counts(rows: Tensor, num_rows: int) -> Tensor:
    # bincount's length depends on the values; this one's only on num_rows (traceable).
    return rows.new_zeros(num_rows).index_add_(0, rows, torch.ones_like(rows))


def _concrete(values: Tensor) -> bool:
    # A CPU tensor of known size, whose values a check may read (not one being traced
    # with symbolic sizes, as torch.export does, nor a GPU tensor: no host sync).
    return values.device.type == "cpu" and not isinstance(values.size(0), torch.SymInt)


class EdgeGrouping:
    r"""How edges meet rows in the three contractions: edge ``e`` reads row
    ``gather[e]`` (of ``x``) and belongs to row ``scatter[e]`` (of the environment).
    The compiled kernels' CSR orders are built on first use.

    Args:
        gather (torch.Tensor): ``[num_edges]`` (int64), rows in ``[0, num_gather_rows)``.
        scatter (torch.Tensor): ``[num_edges]`` (int64), rows in ``[0, num_scatter_rows)``.
        num_scatter_rows (int): Rows of the environment (atoms).
        num_gather_rows (int): Rows of ``x`` and of ``featsum``'s output.
        gather_is_identity (bool): ``gather[e] == e`` (one edge per group; messages).
            (default: :obj:`False`)
    """

    def __init__(self, gather: Tensor, scatter: Tensor, num_scatter_rows: int,
                 num_gather_rows: int, gather_is_identity: bool = False) -> None:
        self.gather, self.scatter = gather, scatter
        self.num_scatter_rows, self.num_gather_rows = num_scatter_rows, num_gather_rows
        self.num_edges = scatter.numel()
        self.gather_is_identity = gather_is_identity

    @functools.cached_property
    def scatter_degree(self) -> Tensor:
        return _counts(self.scatter, self.num_scatter_rows)

    @functools.cached_property
    def scatter_segments(self) -> tuple[Tensor, Tensor]:
        r"""``(offsets, edges)`` by scatter row, for the Triton envsum: edges sorted
        (stably) by row, built on the device without reading any value back."""
        return _offsets(self.scatter_degree), torch.argsort(self.scatter, stable=True)

    @functools.cached_property
    def scatter_csr(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(row order, offsets, edges)`` by scatter row, for the compiled envsum:
        edges sorted by row (none to sort when they already are, as pair lists of
        :func:`~hipnn_pyg.graph.radius_graph` are: a check that reads the CPU values),
        rows in their own order."""
        device = self.scatter.device
        rows = torch.arange(self.num_scatter_rows, device=device)
        scatter = self.scatter
        if _concrete(scatter) and bool((scatter[1:] >= scatter[:-1]).all()):
            return (rows, _offsets(self.scatter_degree),
                    torch.arange(self.num_edges, device=device))
        return (rows, *self.scatter_segments)

    @functools.cached_property
    def blocks(self) -> tuple[DegreeBlock, ...]:
        r"""The ``"torch"`` backend's degree blocks (:mod:`~hipnn_pyg.nn.blocks`): one
        host synchronisation per grouping, for the blocks' sizes."""
        return degree_blocks(self.gather, self.scatter, self.scatter_degree)

    @functools.cached_property
    def gather_csr(self) -> tuple[Tensor, Tensor]:
        r"""``(offsets, edges)`` by gather row, for the compiled and Triton featsums;
        built on the device without reading any value back."""
        device = self.gather.device
        if self.gather_is_identity:
            return (torch.arange(self.num_edges + 1, device=device),
                    torch.arange(self.num_edges, device=device))
        degree = _counts(self.gather, self.num_gather_rows)
        return _offsets(degree), torch.argsort(self.gather, stable=True)


# --- "torch": degree blocks of rows, or chunks of edges when each edge is its own row --


def _chunks(grouping: EdgeGrouping, width: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [slice(start, start + step) for start in range(0, grouping.num_edges, step)]


def _pad_edges(values: Tensor) -> Tensor:
    # A zero row at index num_edges, where padding slots point.
    return torch.cat([values, values.new_zeros(1, values.size(1))])


def _envsum_torch(s: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    out = x.new_zeros(grouping.num_scatter_rows, s.size(1), x.size(1))
    if grouping.gather_is_identity:
        for part in _chunks(grouping, s.size(1) * x.size(1)):
            out.index_add_(0, grouping.scatter[part],
                           s[part].unsqueeze(2) * x[grouping.gather[part]].unsqueeze(1))
        return out
    padded = _pad_edges(s)
    for block in grouping.blocks:
        product = torch.bmm(padded[block.edges].transpose(1, 2), x[block.gathered])
        out.index_copy_(0, block.rows, product)
    return out


def _sensesum_torch(env: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    if grouping.gather_is_identity:
        out = env.new_empty(grouping.num_edges, env.size(1))
        for part in _chunks(grouping, env.size(1) * env.size(2)):
            out[part] = torch.bmm(env[grouping.scatter[part]],
                                  x[grouping.gather[part]].unsqueeze(2)).squeeze(2)
        return out
    # Padding slots write into the extra row num_edges, dropped at the end.
    out = env.new_zeros(grouping.num_edges + 1, env.size(1))
    for block in grouping.blocks:
        product = torch.bmm(x[block.gathered], env[block.rows].transpose(1, 2))
        out.index_copy_(0, block.edges.flatten(), product.flatten(0, 1))
    return out[:-1]


def _featsum_torch(env: Tensor, s: Tensor, grouping: EdgeGrouping) -> Tensor:
    out = env.new_zeros(grouping.num_gather_rows, env.size(2))
    if grouping.gather_is_identity:
        for part in _chunks(grouping, env.size(1) * env.size(2)):
            product = torch.bmm(s[part].unsqueeze(1), env[grouping.scatter[part]]).squeeze(1)
            out.index_add_(0, grouping.gather[part], product)
        return out
    # Padding slots have zero sensitivity: they add zeros to row 0.
    padded = _pad_edges(s)
    for block in grouping.blocks:
        product = torch.bmm(padded[block.edges], env[block.rows])
        out.index_add_(0, block.gathered.flatten(), product.flatten(0, 1))
    return out


# --- "cpp": the compiled operators over the grouping's CSR orders ---------------------


def _envsum_cpp(s: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    return _ops().envsum(s.contiguous(), x.contiguous(), *grouping.scatter_csr,
                         grouping.gather, grouping.num_scatter_rows)


def _sensesum_cpp(env: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    return _ops().sensesum(env.contiguous(), x.contiguous(), grouping.gather,
                           grouping.scatter)


def _featsum_cpp(env: Tensor, s: Tensor, grouping: EdgeGrouping) -> Tensor:
    return _ops().featsum(env.contiguous(), s.contiguous(), *grouping.gather_csr,
                          grouping.scatter, grouping.num_gather_rows)


def _ops():
    from hipnn_pyg.nn.csrc import load_extension

    return load_extension()


# --- "triton": the Triton operators over the grouping's CSR orders, no host reads -----


def _envsum_triton(s: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    return triton_kernels.envsum(s.contiguous(), x.contiguous(), *grouping.scatter_segments,
                                 grouping.gather, grouping.num_scatter_rows)


def _sensesum_triton(env: Tensor, x: Tensor, grouping: EdgeGrouping) -> Tensor:
    return triton_kernels.sensesum(env.contiguous(), x.contiguous(), grouping.gather,
                                   grouping.scatter)


def _featsum_triton(env: Tensor, s: Tensor, grouping: EdgeGrouping) -> Tensor:
    return triton_kernels.featsum(env.contiguous(), s.contiguous(), *grouping.gather_csr,
                                  grouping.scatter, grouping.num_gather_rows,
                                  grouping.gather_is_identity)


_Kernel = Callable[[Tensor, Tensor, EdgeGrouping], Tensor]
KERNELS: dict[str, dict[str, _Kernel]] = {
    "torch": {"envsum": _envsum_torch, "sensesum": _sensesum_torch, "featsum": _featsum_torch},
    "cpp": {"envsum": _envsum_cpp, "sensesum": _sensesum_cpp, "featsum": _featsum_cpp},
    "triton": {"envsum": _envsum_triton, "sensesum": _sensesum_triton,
               "featsum": _featsum_triton},
}


# --- the one autograd rule -------------------------------------------------------------


def _backward(op: str, grad: Tensor, a: Tensor | None, b: Tensor | None,
              needs: tuple[bool, bool], apply: Callable[[str, Tensor, Tensor], Tensor]
              ) -> tuple[Tensor | None, Tensor | None]:
    r"""The gradients of ``op(a, b)`` in ``a`` and ``b``, each one of the other two
    contractions (``apply``) of ``grad`` with the other input."""
    grad_a = grad_b = None
    if op == "envsum":  # a = s, b = x
        grad_a = apply("sensesum", grad, b) if needs[0] else None
        grad_b = apply("featsum", grad, a) if needs[1] else None
    elif op == "sensesum":  # a = env, b = x
        grad_a = apply("envsum", grad, b) if needs[0] else None
        grad_b = apply("featsum", a, grad) if needs[1] else None
    else:  # featsum: a = env, b = s
        grad_a = apply("envsum", b, grad) if needs[0] else None
        grad_b = apply("sensesum", a, grad) if needs[1] else None
    return grad_a, grad_b


class Contraction(torch.autograd.Function):
    r"""``op(a, b)`` over ``grouping`` on ``backend``, differentiable to any order: its
    backward applies the other contractions (this same Function), so the derivatives
    of the derivatives follow."""

    @staticmethod
    def forward(ctx, op: str, a: Tensor, b: Tensor, grouping: EdgeGrouping,
                backend: str) -> Tensor:
        # Each input's gradient needs the other: keep only those that will be asked for.
        ctx.save_for_backward(a if ctx.needs_input_grad[2] else None,
                              b if ctx.needs_input_grad[1] else None)
        ctx.op, ctx.grouping, ctx.backend = op, grouping, backend
        return KERNELS[backend][op](a, b, grouping)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors

        def apply(op: str, first: Tensor, second: Tensor) -> Tensor:
            return Contraction.apply(op, first, second, ctx.grouping, ctx.backend)

        grad_a, grad_b = _backward(ctx.op, grad, a, b, tuple(ctx.needs_input_grad[1:3]),
                                   apply)
        return None, grad_a, grad_b, None, None


def contract(op: str, a: Tensor, b: Tensor, grouping: EdgeGrouping, backend: str) -> Tensor:
    r"""``op(a, b)`` (one of :data:`OPS`, see the module docs) over ``grouping`` on a
    resolved ``backend`` (:func:`resolve_backend`)."""
    return Contraction.apply(op, a, b, grouping, backend)


# --- backends: which exist, which one a call takes --------------------------------------


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    r"""Backends usable here for tensors on ``device``: ``"torch"`` always; on the CPU
    ``"cpp"`` once it compiles and ``"triton"`` under ``TRITON_INTERPRET=1``; on CUDA
    ``"triton"`` where triton imports and a GPU is present.

    Args:
        device (torch.device or str): Where the tensors are. (default: :obj:`"cpu"`)
    """
    from hipnn_pyg.nn.csrc import extension_available

    kind = torch.device(device).type
    backends = ["torch"]
    if kind == "cpu" and extension_available():
        backends.append("cpp")
    if _triton_serves(kind):
        backends.append("triton")
    return backends


def _triton_serves(kind: str) -> bool:
    if not triton_kernels.triton_available():
        return False
    if kind == "cuda":
        return torch.cuda.is_available()
    return kind == "cpu" and triton_kernels.interpreting()


def resolve_backend(features: Tensor, backend: str | None) -> str:
    r"""``backend``, checked; or, when :obj:`None`, the compiled CPU kernel for CPU
    tensors when it is available, the Triton kernels for CUDA tensors when triton
    imports, else ``"torch"``.

    Raises:
        ValueError: an unknown backend, ``"cpp"`` for tensors not on the CPU, or
            ``"triton"`` without triton, or for CPU tensors outside
            ``TRITON_INTERPRET=1``, or for tensors on neither.
        KernelBuildError: ``"cpp"`` asked for where the kernels did not build (why).
    """
    kind = features.device.type
    if backend is None:
        if kind == "cpu":
            return "cpp" if "cpp" in available_backends() else "torch"
        return "triton" if kind == "cuda" and triton_kernels.triton_available() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown envsum backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "cpp":
        if kind != "cpu":
            raise ValueError(f"envsum backend 'cpp' runs on the CPU only, but the tensors are "
                             f"on {features.device}; use backend='torch' (or None)")
        _ops()  # raises with the build's error when there is no kernel
    if backend == "triton":
        if not triton_kernels.triton_available():
            raise ValueError(f"envsum backend 'triton' needs triton, which does not import "
                             f"here: {triton_kernels.HOW_TO_INSTALL}; or use "
                             f"backend='torch' (or None)")
        if kind == "cpu" and not triton_kernels.interpreting():
            raise ValueError("envsum backend 'triton' runs CUDA tensors, but the tensors are "
                             "on cpu; set TRITON_INTERPRET=1 to run it in Triton's "
                             "interpreter (slow: for tests), or use backend='cpp' or "
                             "'torch' (or None) on the CPU")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"envsum backend 'triton' runs CUDA tensors, but the tensors "
                             f"are on {features.device}; use backend='torch' (or None)")
    return backend


__all__ = ["OPS", "BACKENDS", "KERNELS", "EdgeGrouping", "Contraction", "contract",
           "available_backends", "resolve_backend"]
