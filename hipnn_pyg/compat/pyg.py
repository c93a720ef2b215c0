r"""PyTorch Geometric internals hipnn_pyg relies on (``tests/compat/test_pyg.py``).

* :class:`~torch_geometric.data.Data`'s attribute store (``data._store``), filled
  directly by the fast dataset ``get``;
* what :meth:`~torch_geometric.data.Batch.from_data_list` records (``_num_graphs``,
  ``_slice_dict``, ``_inc_dict``), so that a batch gathered without it still splits
  back into its graphs (``to_data_list``, ``get_example``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.data import Batch, Data


def attribute_store(data: Data) -> Any:
    r"""The mapping behind ``data``'s attributes (assignment skips ``__setattr__``)."""
    return data._store


def record_collation(batch: Batch, num_graphs: int, slices: dict[str, Tensor],
                     increments: dict[str, Tensor]) -> None:
    r"""Marks ``batch`` as ``from_data_list`` would have: its graph count, each key's
    slices and increments."""
    batch._num_graphs = num_graphs
    batch._slice_dict = slices
    batch._inc_dict = increments


__all__ = ["attribute_store", "record_collation"]
