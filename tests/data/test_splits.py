"""Deterministic splits, saved and re-used."""

from __future__ import annotations

import numpy as np
import pytest

from hipnn_pyg.data import DataFormatError, load_split, split_dataset, split_indices, split_sizes


def test_sizes():
    assert split_sizes(100, 0.8, 0.1) == (80, 10, 10)
    assert split_sizes(100, 50, 0.1, 5) == (50, 10, 5)
    assert split_sizes(100, None, 10, 20) == (70, 10, 20)
    assert split_sizes(214, 0.9, 0.1, 0) == (193, 21, 0)  # fractions summing to 1 use all
    with pytest.raises(ValueError, match="add up to 110 > 100"):
        split_sizes(100, 100, 10)
    with pytest.raises(ValueError, match="at most one"):
        split_sizes(100, None, None)
    with pytest.raises(ValueError, match="fraction"):
        split_sizes(100, 1.5)


def test_deterministic_and_disjoint():
    a, b = split_indices(1000, 600, 200, seed=3), split_indices(1000, 600, 200, seed=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, split_indices(1000, 600, 200, seed=4).train)
    everything = np.concatenate(a)
    assert len(everything) == 1000 and len(np.unique(everything)) == 1000


def test_saved_and_reloaded(tmp_path):
    path = tmp_path / "splits" / "split.npz"
    first = split_dataset(500, 300, 100, seed=1, split_file=path)
    assert path.exists()
    again = split_dataset(500, 300, 100, seed=99, split_file=path)  # file wins over seed
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(load_split(path).val, first.val)
    with pytest.raises(DataFormatError, match="made for 500 configurations.*has 400"):
        split_dataset(400, 300, 50, split_file=path)
    with pytest.raises(DataFormatError, match=r"sizes.*\(300, 100, 100\).*\(200, 100, 200\)"):
        split_dataset(500, 200, 100, split_file=path)
