r"""Error metrics: MAE and RMSE, exact under data parallelism.

Each :class:`ErrorMetric` accumulates sums (``Σ|r|``, ``Σr²``, count) in float64;
torchmetrics sums these over processes before :meth:`ErrorMetric.compute`, so the MAE
and RMSE of a split do not depend on how it was sharded or batched (unlike averaging
per-batch or per-process means).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

#: Units of each target in eV-based data, and the factor to the display unit.
DISPLAY_UNITS: dict[str, tuple[str, float]] = {
    "energy": ("meV", 1000.0),
    "energy_per_atom": ("meV/atom", 1000.0),
    "forces": ("meV/Å", 1000.0),
    "stress": ("meV/Å³", 1000.0),
    "dipole": ("me·Å", 1000.0),
    "dipole_magnitude": ("me·Å", 1000.0),
    "quadrupole": ("me·Å²", 1000.0),
    "charge": ("me", 1000.0),
}


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
    lines = [title, f"{'split':<6} {'target':<18} {'MAE':>12} {'RMSE':>12}  unit"]
    for (split, target), values in rows.items():
        unit, factor = DISPLAY_UNITS.get(target, ("", 1.0))
        mae_value = values.get("mae", math.nan) * factor
        rmse_value = values.get("rmse", math.nan) * factor
        lines.append(f"{split:<6} {target:<18} {mae_value:>12.4f} {rmse_value:>12.4f}  {unit}")
    return "\n".join(lines)
