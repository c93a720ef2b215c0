r"""Error metrics: MAE and RMSE, exact under data parallelism.

Errors are accumulated as sums (``Σ|r|``, ``Σr²``, count) in float64 and summed over
processes before the MAE and RMSE are formed, so the errors of a split do not depend on
how it was sharded or batched (unlike averaging per-batch or per-process means).

:class:`ErrorSums` holds the sums of every quantity of a split in one tensor whose rows
are fixed when it is built: the training module sums it over processes with a single
all-reduce that every process makes at the same point, whatever the data held.
:class:`EpochErrors` adds the residuals of :class:`~hipnn_pyg.train.targets.Target`
objects and a training objective, reduced together. :class:`ErrorMetric` is the
one-quantity torchmetrics form, for single-process use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler
from torchmetrics import Metric

from hipnn_pyg.train.targets import (
    DISPLAY_UNITS,
    Target,
    labelled_residual,
    labelled_row_lengths,
    num_atoms,
)


def mae(residual: Tensor) -> float:
    r"""Mean absolute value of all elements of ``residual``."""
    return float(residual.abs().double().mean()) if residual.numel() else math.nan


def rmse(residual: Tensor) -> float:
    r"""Root of the mean square of all elements of ``residual``."""
    return float(residual.double().pow(2).mean().sqrt()) if residual.numel() else math.nan


class ErrorMetric(Metric):
    r"""Running MAE and RMSE of residuals (``prediction - reference``), counting every
    element (every force component, every structure's energy).

    Example:
        >>> metric = ErrorMetric()
        >>> metric.update(torch.tensor([1.0, -3.0]))
        >>> metric.compute()["rmse"]
        tensor(2.2361, dtype=torch.float64)
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("abs_sum", "sq_sum", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, residual: Tensor) -> None:  # type: ignore[override]
        r"""Adds the elements of ``residual`` (any shape)."""
        residual = residual.detach().double()
        self.abs_sum += residual.abs().sum()
        self.sq_sum += residual.pow(2).sum()
        self.count += residual.numel()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        r"""``{"mae", "rmse", "mse"}``, NaN before any update."""
        count = self.count  # 0/0 gives NaN: no data, no error
        return {
            "mae": self.abs_sum / count,
            "rmse": (self.sq_sum / count).sqrt(),
            "mse": self.sq_sum / count,
        }


class ErrorSums:
    r"""``Σ|r|``, ``Σr²`` and the element count of residuals ``r`` of several named
    quantities, as one float64 tensor ``[len(names), 3]`` with a fixed row per name.

    The fixed layout is what makes data-parallel training safe: every process holds a
    tensor of the same shape, in the same order, whether or not its batches carried a
    given target, so summing over processes is one all-reduce that all of them make
    (metrics created on first use could differ between processes and deadlock).

    Example:
        >>> sums = ErrorSums(["energy", "forces"])
        >>> sums.update("forces", torch.tensor([1.0, -3.0]))
        >>> sums.results()
        {'forces': {'mae': 2.0, 'rmse': 2.23606797749979, 'mse': 5.0}}

    Args:
        names (Sequence[str]): The quantities, e.g. ``["energy", "forces"]``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(dict.fromkeys(names))
        self._rows = {name: row for row, name in enumerate(self.names)}
        self.sums = torch.zeros(len(self.names), 3, dtype=torch.float64)

    def update(self, name: str, residual: Tensor) -> None:
        r"""Adds the elements of ``residual`` (any shape) to the row of ``name``."""
        if name not in self._rows:
            raise KeyError(f"no error row '{name}'; rows: {list(self.names)}")
        residual = residual.detach().double()
        if self.sums.device != residual.device:
            self.sums = self.sums.to(residual.device)
        count = torch.tensor(float(residual.numel()), dtype=torch.float64, device=residual.device)
        self.sums[self._rows[name]] += torch.stack(
            [residual.abs().sum(), residual.pow(2).sum(), count]
        )

    def reset(self) -> None:
        r"""Zeroes all sums."""
        self.sums.zero_()

    def results(self, sums: Tensor | None = None) -> dict[str, dict[str, float]]:
        r"""``{name: {"mae", "rmse", "mse"}}`` of the names with at least one element.

        Args:
            sums (torch.Tensor, optional): Sums to use instead of :attr:`sums`, e.g. their
                sum over processes. (default: :obj:`None`)
        """
        table = (self.sums if sums is None else sums).detach().double().cpu()
        results = {}
        for name, (abs_sum, sq_sum, count) in zip(self.names, table.tolist(), strict=True):
            if count > 0:
                results[name] = {"mae": abs_sum / count, "rmse": math.sqrt(sq_sum / count),
                                 "mse": sq_sum / count}
        return results


class EpochErrors(ErrorSums):
    r""":class:`ErrorSums` of one split over an epoch, and the sum and sample count of a
    per-batch objective (the training loss) beside them, summed over processes together
    by one all-reduce in :meth:`reduce`.

    Args:
        names (Sequence[str]): The quantities, e.g. ``["energy", "forces"]``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self.objective = torch.zeros(2, dtype=torch.float64)

    def add_errors(
        self, targets: Sequence[Target], prediction: Mapping[str, Tensor], data: Any,
        keep: Tensor | None = None,
    ) -> None:
        r"""Adds the residuals of every target that both ``prediction`` and ``data`` hold.

        Args:
            targets (Sequence[Target]): The targets, e.g. a module's ``targets``.
            prediction (Mapping[str, torch.Tensor]): The model's output on ``data``.
            data: A batch with the labels, ``batch`` and ``ptr``.
            keep (torch.Tensor, optional): Which structures count (see
                :func:`distributed_padding_mask`). (default: :obj:`None`, all)
        """
        atoms = num_atoms(data)
        detached = {name: value.detach() for name, value in prediction.items()}
        for target in (t for t in targets if t.available(detached, data)):
            for metric, (predicted, reference) in target.pairs(detached, data, atoms).items():
                if keep is not None:  # drop padding duplicates (graph- or atom-level rows)
                    rows = keep if predicted.size(0) == keep.numel() else keep[data.batch]
                    predicted, reference = predicted[rows], reference[rows]
                self.update(metric, labelled_residual(predicted, reference))
                if target.loss == "norm" and metric == target.loss_metric:
                    self.update(target.norm_metric,
                                labelled_row_lengths(predicted, reference)[0])

    def add_objective(self, value: Tensor, samples: int) -> None:
        r"""Adds a batch's mean objective ``value`` over ``samples`` samples."""
        self.objective = self.objective.to(value.device) + torch.stack(
            [value.detach().double() * samples, value.new_tensor(samples, dtype=torch.float64)])

    def reset(self) -> None:
        super().reset()
        self.objective.zero_()

    def reduce(
        self, trainer: Any | None, device: torch.device | str | None = None
    ) -> tuple[dict[str, dict[str, float]], float | None]:
        r"""The :meth:`results` and the mean objective (:obj:`None` without samples) over
        all processes (see :func:`sum_over_processes`), then :meth:`reset`."""
        local = torch.cat([self.sums.flatten(), self.objective.to(self.sums.device)])
        total = sum_over_processes(local, trainer, device)
        self.reset()
        objective_sum, samples = total[-2:].tolist()
        results = self.results(total[:-2].view_as(self.sums))
        return results, (objective_sum / samples if samples > 0 else None)


def distributed_padding_mask(
    loader: Any, batch_idx: int, num_graphs: int, device: torch.device | str | None = None
) -> Tensor | None:
    r"""Which samples of batch ``batch_idx`` of ``loader`` are real, not the padding that a
    :class:`~torch.utils.data.DistributedSampler` appends so that every process gets as
    many samples (otherwise the first samples of a split would count twice).

    Rank ``r`` of ``W`` processes draws positions ``r, r + W, r + 2W, ...`` of the
    sampler's (shuffled or not) list padded to a multiple of ``W``; positions
    ``>= len(dataset)`` are padding. With a fixed batch size ``B``, sample ``k`` of batch
    ``b`` is this process's draw ``b·B + k``, so the mask depends on the batch alone, not
    on the order or number of earlier calls, and each loader is masked on its own.

    Args:
        loader: An evaluation data loader (anything with ``sampler`` or ``batch_sampler``
            and a ``batch_size``).
        batch_idx (int): Index of the batch within ``loader``.
        num_graphs (int): Samples in the batch.
        device (torch.device, optional): Device of the mask. (default: :obj:`None`)

    Returns:
        A boolean mask ``[num_graphs]``, or ``None`` if every sample is real (no
        distributed sampler, ``drop_last``, or no padding in this batch).

    Raises:
        ValueError: The loader pads but has no fixed batch size.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):  # e.g. inside a batch sampler
        sampler = getattr(batch_sampler, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    if sampler.total_size == len(sampler.dataset):  # type: ignore[arg-type]
        return None  # nothing padded
    batch_size = getattr(loader, "batch_size", None) or getattr(batch_sampler, "batch_size", None)
    if not batch_size:
        raise ValueError(
            "a DistributedSampler pads this evaluation loader with duplicates, which can "
            "only be masked with a fixed batch size; give the loader a batch_size"
        )
    draws = batch_idx * batch_size + torch.arange(num_graphs, device=device)
    keep = sampler.rank + sampler.num_replicas * draws < len(sampler.dataset)  # type: ignore[arg-type]
    return None if bool(keep.all()) else keep


def loader_padding_mask(
    loaders: Any, dataloader_idx: int, batch_idx: int, num_graphs: int,
    device: torch.device | str | None = None,
) -> Tensor | None:
    r""":func:`distributed_padding_mask` of batch ``batch_idx`` of loader
    ``dataloader_idx`` among a trainer's evaluation ``loaders`` (one loader, a list or a
    dict of them)."""
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    return distributed_padding_mask(loader, batch_idx, num_graphs, device)


def sum_over_processes(
    tensor: Tensor, trainer: Any | None, device: torch.device | str | None = None
) -> Tensor:
    r"""A float64 CPU copy of ``tensor`` summed over the processes of ``trainer`` (a
    Lightning trainer, or :obj:`None` for one process) with one all-reduce on ``device``,
    which every process must call at the same point."""
    total = tensor.to(device, copy=True)  # the all-reduce works in place
    if trainer is not None and trainer.world_size > 1:
        total = trainer.strategy.reduce(total, reduce_op="sum")
    return total.double().cpu()


def format_table(results: dict[str, float], title: str = "Errors") -> str:
    r"""Renders ``{"test/energy_mae": 0.0012, ...}`` (eV units) as a table in display
    units (meV, meV/Å): one row per split and target, MAE and RMSE columns."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in results.items():
        split, _, name = key.partition("/")
        target, _, kind = name.rpartition("_")
        if kind not in ("mae", "rmse") or not target:
            continue
        rows.setdefault((split, target), {})[kind] = float(value)
    if not rows:
        return f"{title}: no errors computed"
    width = max(6, *(len(split) for split, _ in rows))
    lines = [title, f"{'split':<{width}} {'target':<18} {'MAE':>12} {'RMSE':>12}  unit"]
    for (split, target), values in rows.items():
        unit, factor = DISPLAY_UNITS.get(target, ("", 1.0))
        mae_value = values.get("mae", math.nan) * factor
        rmse_value = values.get("rmse", math.nan) * factor
        lines.append(
            f"{split:<{width}} {target:<18} {mae_value:>12.4f} {rmse_value:>12.4f}  {unit}"
        )
    return "\n".join(lines)
