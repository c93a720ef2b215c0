r"""The ``"torch"`` backend's layout of an edge grouping: rows grouped by their edge
count into a few degree classes (counts within 25% of each other), each class laid out
as a ``[rows, width]`` block of edge slots, so one batched matrix product per block does
the work. Padding stays within 25% of the edge count whatever the batch mixes (a crystal
beside molecules pads only its own class), unlike one block padded to the largest count.

Laying out the blocks reads their sizes back to the host (:func:`degree_blocks`, once
per grouping and forward): a synchronisation intrinsic to this backend, whose batched
products need concrete shapes. The ``"triton"`` backend reads nothing back
(:mod:`~hipnn_pyg.nn.triton_kernels`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Bound on the edge slots one batched product touches, so transient gathers stay small
# (4096 * 64 features * 8 bytes = 2 MiB) whatever the system size.
CHUNK_SLOTS = 4096


class DegreeBlock(NamedTuple):
    r"""Rows sharing one padded width.

    Attributes:
        rows (torch.Tensor): Scatter rows (atoms) ``[n]``.
        edges (torch.Tensor): Edge of each slot ``[n, width]``; padding slots hold
            ``num_edges`` (a zero row appended to the per-edge input).
        gathered (torch.Tensor): Gather row of each slot ``[n, width]``; padding slots
            hold 0 (their per-edge value is zero).
    """

    rows: Tensor
    edges: Tensor
    gathered: Tensor


def _class_widths(limit: int) -> list[int]:
    # Widths 1..8, then growing by 25%: padding is below 25% of any row's degree.
    widths = list(range(1, 9))
    while widths[-1] < limit:
        widths.append(int(math.ceil(widths[-1] * 1.25)))
    return widths


# Degrees up to 2^24 edges, a fixed table: class sizes need no host sync to define.
_WIDTHS = _class_widths(1 << 24)


def degree_blocks(gather: Tensor, scatter: Tensor, degree: Tensor) -> tuple[DegreeBlock, ...]:
    r"""The blocks of a grouping (edges reading ``gather`` rows, summing into
    ``scatter`` rows of the given ``degree``), split into chunks of at most
    :data:`CHUNK_SLOTS` slots; one host synchronisation."""
    device = scatter.device
    num_edges = scatter.numel()
    widths = torch.tensor(_WIDTHS, device=device)
    # Class k holds degrees in (widths[k-2], widths[k-1]]; class 0 is degree 0.
    row_class = torch.where(degree > 0, torch.bucketize(degree, widths) + 1, 0)
    row_order = torch.argsort(row_class, stable=True)
    rank = torch.empty_like(row_order)
    rank[row_order] = torch.arange(row_order.numel(), device=device)
    edge_order = torch.argsort(rank[scatter], stable=True)
    row_start = degree.new_zeros(degree.numel() + 1)
    torch.cumsum(degree[row_order], 0, out=row_start[1:])

    class_sizes = torch.bincount(row_class, minlength=len(_WIDTHS) + 1)
    class_edges = torch.zeros_like(class_sizes).index_add_(0, row_class, degree)
    sizes = torch.stack([class_sizes, class_edges]).tolist()  # the one host sync
    row = rank[scatter[edge_order]]
    slot = torch.arange(num_edges, device=device) - row_start[row]
    blocks: list[DegreeBlock] = []
    row_first, edge_first = sizes[0][0], 0
    for k in range(1, len(_WIDTHS) + 1):
        count, edges = sizes[0][k], sizes[1][k]
        if count == 0:
            continue
        width = _WIDTHS[k - 1]
        edge_slice = slice(edge_first, edge_first + edges)
        rows, cols = row[edge_slice] - row_first, slot[edge_slice]
        slot_edges = torch.full((count, width), num_edges, device=device)
        slot_edges[rows, cols] = edge_order[edge_slice]
        slot_gathered = torch.zeros((count, width), dtype=torch.long, device=device)
        slot_gathered[rows, cols] = gather[edge_order[edge_slice]]
        class_rows = row_order[row_first : row_first + count]
        step = max(1, CHUNK_SLOTS // width)
        for first in range(0, count, step):
            part = slice(first, first + step)
            blocks.append(DegreeBlock(class_rows[part], slot_edges[part], slot_gathered[part]))
        row_first += count
        edge_first += edges
    return tuple(blocks)
