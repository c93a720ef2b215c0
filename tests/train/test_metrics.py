"""MAE/RMSE arithmetic, error sums and padding masks for data parallelism, the table."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from hipnn_pyg.train.metrics import (
    EpochErrors,
    ErrorMetric,
    ErrorSums,
    distributed_padding_mask,
    format_table,
    mae,
    rmse,
)
from hipnn_pyg.train.targets import build_targets, num_atoms


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


def test_error_sums_rows_are_fixed_and_sum_over_processes() -> None:
    names = ["energy", "forces", "charges"]
    first, second = ErrorSums(names), ErrorSums(names)
    forces = torch.randn(40, 3)
    first.update("forces", forces[:15])
    second.update("forces", forces[15:])
    first.update("charges", torch.tensor([0.5]))
    # same shape and row order whatever was updated: one all-reduce sums them
    assert first.sums.shape == second.sums.shape == (3, 3)
    combined = first.results(first.sums + second.sums)
    assert sorted(combined) == ["charges", "forces"]  # rows without data are left out
    assert combined["forces"]["mae"] == pytest.approx(mae(forces), rel=1e-6)
    assert combined["forces"]["rmse"] == pytest.approx(rmse(forces), rel=1e-6)
    assert combined["charges"] == pytest.approx({"mae": 0.5, "rmse": 0.5, "mse": 0.25})
    with pytest.raises(KeyError, match="'charge'.*rows"):
        first.update("charge", torch.zeros(1))
    first.reset()
    assert first.results() == {}


def test_epoch_errors_accumulate_the_norm_loss_exactly_over_batches() -> None:
    forces = next(t for t in build_targets({"forces": 1.0}, force_loss="norm")
                  if t.name == "forces")
    torch.manual_seed(1)
    predicted, reference = torch.randn(7, 3), torch.randn(7, 3)
    lengths = (predicted - reference).double().norm(dim=1)
    errors = EpochErrors(forces.metrics)

    def batch(atoms: slice, count: int) -> SimpleNamespace:
        return SimpleNamespace(forces=reference[atoms], batch=torch.zeros(count, dtype=torch.long),
                               ptr=torch.tensor([0, count]), num_graphs=1)

    errors.add_errors([forces], {"forces": predicted[:3]}, batch(slice(0, 3), 3))
    errors.add_errors([forces], {"forces": predicted[3:]}, batch(slice(3, 7), 4))
    results, _ = errors.reduce(None)
    assert results["forces_norm"]["mae"] == pytest.approx(float(lengths.mean()))
    # a batch without force labels, or of padding only (keep all False), adds nothing
    unlabelled = batch(slice(0, 3), 3)
    unlabelled.forces = torch.full((3, 3), float("nan"))
    errors.add_errors([forces], {"forces": predicted[:3]}, unlabelled)
    errors.add_errors([forces], {"forces": predicted[:3]}, batch(slice(0, 3), 3),
                      keep=torch.tensor([False]))
    assert errors.reduce(None)[0] == {}
    whole = batch(slice(0, 7), 7)
    assert float(forces.loss_term({"forces": predicted}, whole, num_atoms(whole))) == \
        pytest.approx(results["forces_norm"]["mae"])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_padding_mask_keeps_each_sample_once(world_size: int, shuffle: bool) -> None:
    for size in range(1, 12):
        for batch_size in (1, 2, 3, 5):
            kept = []
            for rank in range(world_size):
                sampler = DistributedSampler(range(size), num_replicas=world_size, rank=rank,
                                             shuffle=shuffle, seed=size)
                loader = DataLoader(range(size), batch_size=batch_size, sampler=sampler)
                for batch_idx, batch in enumerate(loader):
                    keep = distributed_padding_mask(loader, batch_idx, len(batch))
                    kept += batch.tolist() if keep is None else batch[keep].tolist()
            assert sorted(kept) == list(range(size)), (size, batch_size)


def test_padding_mask_edge_cases() -> None:
    assert distributed_padding_mask(DataLoader(range(5), batch_size=2), 0, 2) is None
    sampler = DistributedSampler(range(4), num_replicas=2, rank=1, shuffle=False)
    assert distributed_padding_mask(DataLoader(range(4), sampler=sampler), 1, 1) is None
    padded = DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
    batches = BatchSampler(padded, batch_size=2, drop_last=False)
    with pytest.raises(ValueError, match="fixed batch size"):
        distributed_padding_mask(SimpleNamespace(sampler=padded, batch_size=None), 0, 2)
    mask = distributed_padding_mask(DataLoader(range(5), batch_sampler=batches), 1, 1)
    assert mask is not None and mask.tolist() == [False]  # rank 1's third draw: padding


def test_format_table_names_the_running_train_errors_and_charges() -> None:
    table = format_table({"train_running/energy_mae": 0.2, "val/energy_mae": 0.01,
                          "test/charges_mae": 0.003, "test/charges_rmse": 0.004})
    lines = table.splitlines()
    assert lines[2].startswith("train_running energy")
    assert "3.0000" in table and table.rstrip().endswith("me")
