r"""The ``"triton"`` backend of the edge contractions (:mod:`~hipnn_pyg.nn.contraction`)
and of the Gaussian sensitivities' derivatives (:mod:`~hipnn_pyg.nn.sensitivity`):
Triton kernels (:mod:`~hipnn_pyg.nn._triton_jit`) behind the PyTorch operators
``torch.ops.hipnn_triton.{envsum,sensesum,featsum}`` and
``torch.ops.hipnn_triton.{gaussian_grad,gaussian_grad_backward}``, the latter two with
the signatures of the compiled CPU operators ``torch.ops.hipnn.gaussian_grad*``.

They are :func:`torch.library.custom_op`\ s with shape functions, not
``torch.library.triton_op``\ s: ``torch.compile`` and ``torch.export`` keep each as one
opaque operator (as they keep the compiled CPU operators ``torch.ops.hipnn.*``) instead
of tracing into the kernels. The autograd rules stay those of
:class:`~hipnn_pyg.nn.contraction.Contraction`, whose backward applies the other two
contractions, and of the sensitivities' autograd functions.

``envsum`` and ``featsum`` are segment sums over the grouping's CSR orders (edges sorted
by scatter row, by gather row), one program per output row: no atomics. ``sensesum`` has
one output per edge, and so has ``featsum`` over edges that are rows of their own
(HIP-NN-TS messages), which takes blocks of edges per program instead. Nothing here
reads a value back to the host: sizes come from shapes, and the CSR orders are built on
the device (:attr:`~hipnn_pyg.nn.contraction.EdgeGrouping.scatter_segments`). The
kernels trust their indices (no bounds check, which would need a read-back): pair lists
are checked where they are made (:func:`~hipnn_pyg.nn.envsum.neighbour_layout`).

Triton is imported only when a kernel first runs, so the package imports without it
(``pip install 'hipnn_pyg[gpu]'`` installs it). The kernels run on CUDA tensors; with
``TRITON_INTERPRET=1`` Triton's interpreter runs them on CPU tensors too (slowly: for
tests).
"""

import contextlib
import functools
import importlib.util
import os
from typing import Any

import torch
from torch import Tensor

#: The operators' namespace: ``torch.ops.hipnn_triton``.
NAMESPACE = "hipnn_triton"
#: How a user gets the backend.
HOW_TO_INSTALL = "pip install 'hipnn_pyg[gpu]' (or pip install triton)"
# Elements of one [BLOCK_E, BLOCK_S, BLOCK_F] product tile: registers on a GPU; larger
# under the interpreter, where every tile step costs Python overhead instead.
_TILE_ELEMENTS = 1 << 12
_INTERPRETER_TILE_ELEMENTS = 1 << 15
# Elements of one [BLOCK_E, BLOCK_S] tile of the Gaussians' derivative kernels.
_GAUSSIAN_TILE_ELEMENTS = 1 << 10


_available: bool | None = None


def triton_available() -> bool:
    r"""Whether triton imports here (tried once)."""
    global _available
    if _available is None:  # a plain global, not functools.cache: torch.compile reads it
        _available = _imports()
    return _available


def _imports() -> bool:
    try:
        if importlib.util.find_spec("triton") is None:
            return False
        import triton  # noqa: F401
    except Exception:  # a broken install counts as none
        return False
    return True


def interpreting() -> bool:
    r"""Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (read at every call,
    as triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _kernels(interpret: bool) -> dict[str, Any]:
    # Wrapped per mode: the backend follows TRITON_INTERPRET at each call (a test sets it
    # for its own module only). The interpreter also needs it set when triton was first
    # imported, for triton.language's own helpers (tl.sum): checked here.
    from hipnn_pyg.nn import _triton_jit as source

    if interpret:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction

        if isinstance(source.tl.sum, JITFunction):
            raise RuntimeError(
                "Triton's interpreter needs TRITON_INTERPRET=1 set before triton is first "
                "imported (torch imports it with dynamo): triton.language's own helpers "
                "were built for the GPU. Set it when the process starts")
        return {name: InterpretedFunction(fn) for name, fn in source.KERNELS.items()}
    return {name: source.triton.jit(fn) for name, fn in source.KERNELS.items()}


def _power_of_two(n: int, most: int) -> int:
    return min(most, 1 << max(0, n - 1).bit_length())


def _blocks(num_sensitivities: int, num_features: int) -> dict[str, Any]:
    r"""Tile sizes of a launch (compile-time constants)."""
    block_s = _power_of_two(num_sensitivities, 32)
    block_f = _power_of_two(num_features, 64)
    budget = _INTERPRETER_TILE_ELEMENTS if interpreting() else _TILE_ELEMENTS
    block_e = _power_of_two(max(1, budget // (block_s * block_f)), 64)
    return {"BLOCK_E": block_e, "BLOCK_S": block_s, "BLOCK_F": block_f}


def _launch(op: str, grid: tuple[int, ...], like: Tensor, *args: Any, **meta: Any) -> None:
    import triton.language as tl

    meta["ACC"] = tl.float64 if like.dtype == torch.float64 else tl.float32
    kernel = _kernels(interpreting())[op]
    device = torch.cuda.device(like.device) if like.device.type == "cuda" \
        else contextlib.nullcontext()
    with device:  # triton launches on the current device
        kernel[grid](*args, **meta)


def _check(op: str, values: tuple[Tensor, ...], indices: tuple[Tensor, ...]) -> None:
    # Host-side facts only (dtypes, devices, layout): no value is read.
    if any(t.dtype != values[0].dtype for t in values):
        raise RuntimeError(f"hipnn_triton::{op} takes inputs of one dtype, got "
                           f"{[t.dtype for t in values]}")
    if any(t.dtype != torch.int64 for t in indices):
        raise RuntimeError(f"hipnn_triton::{op} takes int64 indices, got "
                           f"{[t.dtype for t in indices]}")
    if any(t.device != values[0].device for t in values + indices):
        raise RuntimeError(f"hipnn_triton::{op} takes tensors on one device, got "
                           f"{[str(t.device) for t in values + indices]}")
    if not all(t.is_contiguous() for t in values + indices):
        raise RuntimeError(f"hipnn_triton::{op}: every input must be contiguous")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@torch.library.custom_op(f"{NAMESPACE}::envsum", mutates_args=())
def envsum(s: Tensor, x: Tensor, start: Tensor, edges: Tensor, gather: Tensor,
           num_rows: int) -> Tensor:
    r"""``out[r, ν, f] = Σ_{e in row r} s[e, ν] x[gather[e], f]``, rows in CSR order.

    Args:
        s (torch.Tensor): ``[num_edges, S]``.
        x (torch.Tensor): ``[num_gather_rows, F]``.
        start (torch.Tensor): ``[num_rows + 1]`` offsets of each row's edges in ``edges``.
        edges (torch.Tensor): ``[num_edges]``, edges sorted by their scatter row.
        gather (torch.Tensor): ``[num_edges]``, the row of ``x`` each edge reads.
        num_rows (int): Rows of the output.
    """
    _check("envsum", (s, x), (start, edges, gather))
    num_sensitivities, num_features = s.size(1), x.size(1)
    out = s.new_empty(num_rows, num_sensitivities, num_features)
    if out.numel():
        meta = _blocks(num_sensitivities, num_features)
        grid = (num_rows, _cdiv(num_features, meta["BLOCK_F"]),
                _cdiv(num_sensitivities, meta["BLOCK_S"]))
        _launch("envsum", grid, s, s, x, start, edges, gather, out, num_sensitivities,
                num_features, **meta)
    return out


@torch.library.custom_op(f"{NAMESPACE}::sensesum", mutates_args=())
def sensesum(env: Tensor, x: Tensor, gather: Tensor, scatter: Tensor) -> Tensor:
    r"""``out[e, ν] = Σ_f env[scatter[e], ν, f] x[gather[e], f]``.

    Args:
        env (torch.Tensor): ``[num_scatter_rows, S, F]``.
        x (torch.Tensor): ``[num_gather_rows, F]``.
        gather (torch.Tensor): ``[num_edges]``.
        scatter (torch.Tensor): ``[num_edges]``.
    """
    _check("sensesum", (env, x), (gather, scatter))
    num_edges, num_sensitivities, num_features = scatter.numel(), env.size(1), env.size(2)
    out = env.new_empty(num_edges, num_sensitivities)
    if out.numel():
        meta = _blocks(num_sensitivities, num_features)
        grid = (_cdiv(num_edges, meta["BLOCK_E"]), _cdiv(num_sensitivities, meta["BLOCK_S"]))
        _launch("sensesum", grid, env, env, x, gather, scatter, out, num_edges,
                num_sensitivities, num_features, **meta)
    return out


@torch.library.custom_op(f"{NAMESPACE}::featsum", mutates_args=())
def featsum(env: Tensor, s: Tensor, start: Tensor, edges: Tensor, scatter: Tensor,
            num_rows: int, gather_is_identity: bool) -> Tensor:
    r"""``out[q, f] = Σ_{e in row q} Σ_ν s[e, ν] env[scatter[e], ν, f]``, rows in CSR
    order.

    Args:
        env (torch.Tensor): ``[num_scatter_rows, S, F]``.
        s (torch.Tensor): ``[num_edges, S]``.
        start (torch.Tensor): ``[num_rows + 1]`` offsets of each row's edges in ``edges``.
        edges (torch.Tensor): ``[num_edges]``, edges sorted by their gather row.
        scatter (torch.Tensor): ``[num_edges]``, the row of ``env`` each edge reads.
        num_rows (int): Rows of the output.
        gather_is_identity (bool): Edge ``e`` is row ``e`` (messages; ``num_rows`` is
            the number of edges, ``start`` and ``edges`` are not read): blocks of edges
            per program instead of one row each.
    """
    _check("featsum", (env, s), (start, edges, scatter))
    num_sensitivities, num_features = env.size(1), env.size(2)
    out = env.new_empty(num_rows, num_features)
    if out.numel():
        meta = _blocks(num_sensitivities, num_features)
        if gather_is_identity:
            grid = (_cdiv(num_rows, meta["BLOCK_E"]), _cdiv(num_features, meta["BLOCK_F"]))
            _launch("featsum_edges", grid, env, env, s, scatter, out, num_rows,
                    num_sensitivities, num_features, **meta)
        else:
            grid = (num_rows, _cdiv(num_features, meta["BLOCK_F"]))
            _launch("featsum", grid, env, env, s, start, edges, scatter, out,
                    num_sensitivities, num_features, **meta)
    return out


@envsum.register_fake
def _(s: Tensor, x: Tensor, start: Tensor, edges: Tensor, gather: Tensor,
      num_rows: int) -> Tensor:
    return s.new_empty(num_rows, s.size(1), x.size(1))


@sensesum.register_fake
def _(env: Tensor, x: Tensor, gather: Tensor, scatter: Tensor) -> Tensor:
    return env.new_empty(scatter.size(0), env.size(1))


@featsum.register_fake
def _(env: Tensor, s: Tensor, start: Tensor, edges: Tensor, scatter: Tensor,
      num_rows: int, gather_is_identity: bool) -> Tensor:
    return env.new_empty(num_rows, env.size(2))


def _gaussian_blocks(num_sensitivities: int, like: Tensor, backward: bool) -> dict[str, Any]:
    # Smaller tiles than the contractions': every [BLOCK_E, BLOCK_S] temporary of these
    # kernels is live at once, and 128 x 32 spilled registers when compiled for sm_90
    # (ptxas -v); 32 x 32 (16 x 32 for the float64 backward) did not.
    block_s = _power_of_two(num_sensitivities, 32)
    if interpreting():
        budget = _INTERPRETER_TILE_ELEMENTS
    else:
        budget = _GAUSSIAN_TILE_ELEMENTS // (2 if backward and like.dtype == torch.float64
                                             else 1)
    return {"BLOCK_E": _power_of_two(max(1, budget // block_s), 1024), "BLOCK_S": block_s}


def _launch_gaussians(op: str, g: Tensor, r: Tensor, floor: float,
                      arguments: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    r"""Launches a Gaussian derivative kernel over blocks of edges with its tensor
    ``arguments`` (inputs, then per-edge outputs) and returns its two sums over edges
    (centres, widths), added from the per-program parts in the accumulator's dtype."""
    num_edges, num_sensitivities = g.shape
    meta = _gaussian_blocks(num_sensitivities, r, backward=op.endswith("backward"))
    programs = _cdiv(num_edges, meta["BLOCK_E"])
    accumulator = torch.float64 if r.dtype == torch.float64 else torch.float32  # _launch's ACC
    parts = r.new_zeros(2, programs, num_sensitivities, dtype=accumulator)
    if num_edges and num_sensitivities:
        _launch(op, (programs,), r, *arguments, parts[0], parts[1], num_edges,
                num_sensitivities, FLOOR=floor, **meta)
    return parts[0].sum(0).to(r.dtype), parts[1].sum(0).to(r.dtype)


def _check_gaussians(op: str, g: Tensor, r: Tensor, c: Tensor, m: Tensor,
                     sigma: Tensor) -> None:
    _check(op, (g, r, c, m, sigma), ())
    if g.dim() != 2 or g.size(0) != r.numel() or g.size(1) != m.numel() \
            or c.numel() != r.numel() or sigma.numel() != m.numel():
        raise RuntimeError(f"hipnn_triton::{op}: shapes g {list(g.shape)}, r {list(r.shape)}, "
                           f"c {list(c.shape)}, m {list(m.shape)}, sigma {list(sigma.shape)}; "
                           "need g [E, S], r and c [E], m and sigma [S]")


@torch.library.custom_op(f"{NAMESPACE}::gaussian_grad", mutates_args=())
def gaussian_grad(g: Tensor, r: Tensor, c: Tensor, m: Tensor, sigma: Tensor,
                  floor: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The first derivatives of the sensitivities :math:`s = G c` contracted with
    ``g``: ``(grad_r [E], grad_c [E], grad_m [S], grad_sigma [S])``, as
    ``torch.ops.hipnn.gaussian_grad`` (``csrc/gaussians.cpp``).

    Args:
        g (torch.Tensor): ``[E, S]``, the upstream gradient of the sensitivities.
        r (torch.Tensor): ``[E]`` distances.
        c (torch.Tensor): ``[E]`` cutoff values.
        m (torch.Tensor): ``[S]`` inverse centres.
        sigma (torch.Tensor): ``[S]`` widths.
        floor (float): Floor of the Gaussians' exponent.
    """
    _check_gaussians("gaussian_grad", g, r, c, m, sigma)
    num_edges = g.size(0)
    # Zeros, not empty: no launch writes them when there are no sensitivities.
    grad_r, grad_c = r.new_zeros(num_edges), r.new_zeros(num_edges)
    grad_m, grad_sigma = _launch_gaussians("gaussian_grad", g, r, floor,
                                           (g, r, c, m, sigma, grad_r, grad_c))
    return grad_r, grad_c, grad_m, grad_sigma


@torch.library.custom_op(f"{NAMESPACE}::gaussian_grad_backward", mutates_args=())
def gaussian_grad_backward(g: Tensor, r: Tensor, c: Tensor, m: Tensor, sigma: Tensor,
                           floor: float, h_r: Tensor, h_c: Tensor, h_m: Tensor,
                           h_sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The vector-Jacobian product of :func:`gaussian_grad`'s four outputs with
    ``(h_r, h_c, h_m, h_sigma)`` in its five inputs ``(g, r, c, m, sigma)``, as
    ``torch.ops.hipnn.gaussian_grad_backward``."""
    _check_gaussians("gaussian_grad_backward", g, r, c, m, sigma)
    _check("gaussian_grad_backward", (r, h_r, h_c, h_m, h_sigma), ())
    if h_r.numel() != r.numel() or h_c.numel() != r.numel() or h_m.numel() != m.numel() \
            or h_sigma.numel() != m.numel():
        raise RuntimeError("hipnn_triton::gaussian_grad_backward: gradients of the wrong length")
    num_edges = g.size(0)
    grad_g = torch.empty_like(g)
    grad_r, grad_c = r.new_zeros(num_edges), r.new_zeros(num_edges)
    grad_m, grad_sigma = _launch_gaussians(
        "gaussian_grad_backward", g, r, floor,
        (g, r, c, m, sigma, h_r, h_c, h_m, h_sigma, grad_g, grad_r, grad_c))
    return grad_g, grad_r, grad_c, grad_m, grad_sigma


@gaussian_grad.register_fake
def _(g: Tensor, r: Tensor, c: Tensor, m: Tensor, sigma: Tensor,
      floor: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return r.new_empty(r.size(0)), r.new_empty(r.size(0)), m.new_empty(m.size(0)), \
        m.new_empty(m.size(0))


@gaussian_grad_backward.register_fake
def _(g: Tensor, r: Tensor, c: Tensor, m: Tensor, sigma: Tensor, floor: float, h_r: Tensor,
      h_c: Tensor, h_m: Tensor, h_sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(g), r.new_empty(r.size(0)), r.new_empty(r.size(0)), \
        m.new_empty(m.size(0)), m.new_empty(m.size(0))


__all__ = ["NAMESPACE", "HOW_TO_INSTALL", "triton_available", "interpreting", "envsum",
           "sensesum", "featsum", "gaussian_grad", "gaussian_grad_backward"]
