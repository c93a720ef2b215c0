r"""Which kernel path an interaction layer takes: chosen here, in one place, from what
the layer was configured with and where its tensors are, never from grad mode, so that
training, validation (an EMA copy), fine-tuning with frozen parts and evaluation run the
same path.

Paths (``KernelPath.name``):

* ``"envsum"``: the environment sum of :mod:`~hipnn_pyg.nn.envsum` (plain HIP-NN);
* ``"pairsum"``: the factorised HIP-NN-TS sum of :mod:`~hipnn_pyg.nn.pairsum`;
* ``"lean"``: the memory-lean sum of :mod:`~hipnn_pyg.nn.frozen`, only where the layer
  was asked for it (``set_lean``; the ASE calculator does, for MD), the layer is plain
  HIP-NN and the compiled kernels serve its tensors;
* ``"padded"``, ``"message_passing"``, ``"scatter"``: the reference methods of
  :class:`~hipnn_pyg.nn.HIPNNInteraction` (``method=...``).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from hipnn_pyg.nn.contraction import resolve_backend


class KernelPath(NamedTuple):
    r"""A layer's path: ``name`` (see the module docs) and the contraction backend
    (``"cpp"``, ``"triton"`` or ``"torch"``; :obj:`None` for the reference methods)."""

    name: str
    backend: str | None


def kernel_path(method: str, backend: str | None, tensor_order: int, lean: bool,
                features: Tensor) -> KernelPath:
    r"""The path of a layer with these settings on ``features``' device.

    Args:
        method (str): The layer's ``method`` (``"envsum"`` or a reference method).
        backend (str, optional): Its ``envsum_backend`` (:obj:`None`: the default).
        tensor_order (int): 0 for HIP-NN, 1 or 2 for HIP-NN-TS.
        lean (bool): Whether lean inference was asked for.
        features (torch.Tensor): The layer's input features (their device decides the
            default backend).
    """
    if method != "envsum":
        return KernelPath(method, None)
    backend = resolve_backend(features, backend)
    if tensor_order > 0:
        return KernelPath("pairsum", backend)
    if lean and backend == "cpp":
        return KernelPath("lean", backend)
    return KernelPath("envsum", backend)


def layer_path(layer: object, features: Tensor) -> KernelPath:
    r"""The path of a :class:`~hipnn_pyg.nn.HIPNNInteraction` on ``features``."""
    return kernel_path(layer.method, layer.envsum_backend, layer.tensor_order,  # type: ignore[attr-defined]
                       layer.lean, features)  # type: ignore[attr-defined]


__all__ = ["KernelPath", "kernel_path", "layer_path"]
