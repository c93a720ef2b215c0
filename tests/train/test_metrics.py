"""MAE/RMSE arithmetic and the summary table."""

from __future__ import annotations

import math

import pytest
import torch

from hipnn_pyg.train.metrics import ErrorMetric, format_table, mae, rmse


def test_mae_rmse() -> None:
    r = torch.tensor([[1.0, -2.0], [2.0, -1.0]])
    assert mae(r) == pytest.approx(1.5)
    assert rmse(r) == pytest.approx(math.sqrt(2.5))
    assert math.isnan(mae(torch.zeros(0)))


def test_error_metric_is_independent_of_batching() -> None:
    values = torch.randn(101, 3)
    whole, chunks = ErrorMetric(), ErrorMetric()
    whole.update(values)
    for part in values.split(7):
        chunks.update(part)
    a, b = whole.compute(), chunks.compute()
    for key in ("mae", "rmse", "mse"):
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-12)
    assert float(a["mae"]) == pytest.approx(mae(values), rel=1e-6)
    assert float(a["rmse"]) == pytest.approx(rmse(values), rel=1e-6)
    whole.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(whole.compute()["mae"]))


def test_format_table_converts_to_mev() -> None:
    table = format_table({"test/energy_mae": 0.0012, "test/energy_rmse": 0.002,
                          "test/forces_mae": 0.05, "test/loss": 1.0})
    assert "meV/Å" in table and "1.2000" in table and "50.0000" in table
    assert "loss" not in table
