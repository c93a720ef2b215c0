r"""Deterministic train/validation/test splits, saved to ``.npz`` for re-use."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hipnn_pyg.atomic import atomic_write
from hipnn_pyg.data.base import DataFormatError, PathLike
from hipnn_pyg.data.npz import read_npz

Size = int | float | None


class Split(NamedTuple):
    r"""Index arrays (int64) into a dataset; disjoint."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _check(size: Size, name: str) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be an int count, a float fraction or None, got {size!r}")
    if isinstance(size, float | np.floating) and not 0.0 <= size <= 1.0:
        raise ValueError(f"{name}={size} is a fraction and must lie in [0, 1]")
    if size < 0:
        raise ValueError(f"{name}={size} must not be negative")


def split_sizes(n: int, train: Size, val: Size = 0, test: Size = None) -> tuple[int, int, int]:
    r"""Counts of the three parts; ``None`` takes what is left (at most one may be).

    Fractions are rounded by the largest-remainder rule, so that fractions summing
    to 1 use every configuration (``0.9, 0.1`` of 214 gives 193 and 21).

    Args:
        n: number of configurations.
        train, val, test: a count (int), a fraction of ``n`` (float) or ``None`` for
            the remainder.
    """
    sizes = {"train": train, "val": val, "test": test}
    for name, size in sizes.items():
        _check(size, name)
    if sum(size is None for size in sizes.values()) > 1:
        raise ValueError("at most one of train, val, test may be None (the remainder)")
    fractions = {k: float(v) * n for k, v in sizes.items() if isinstance(v, float | np.floating)}
    counts = {k: (None if v is None else int(v)) for k, v in sizes.items()}
    counts.update({k: int(np.floor(v)) for k, v in fractions.items()})
    extra = int(round(sum(fractions.values()))) - sum(counts[k] for k in fractions)
    for k in sorted(fractions, key=lambda k: counts[k] - fractions[k])[:extra]:
        counts[k] += 1
    used = sum(c for c in counts.values() if c is not None)
    if used > n:
        raise ValueError(
            f"split sizes {list(counts.values())} add up to {used} > {n} configurations"
        )
    remainder = {k: n - used for k, c in counts.items() if c is None}
    counts.update(remainder)
    return counts["train"], counts["val"], counts["test"]


def split_indices(
    n: int | Sized, train: Size, val: Size = 0, test: Size = None, seed: int = 0
) -> Split:
    r"""A random split of ``range(n)`` from a seeded permutation.

    Args:
        n: number of configurations, or a sized dataset.
        train, val, test: see :func:`split_sizes`.
        seed: seed of :func:`numpy.random.default_rng`; equal seeds give equal splits.
    """
    n = n if isinstance(n, int) else len(n)
    num_train, num_val, num_test = split_sizes(n, train, val, test)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return Split(
        train=np.sort(order[:num_train]),
        val=np.sort(order[num_train : num_train + num_val]),
        test=np.sort(order[num_train + num_val : num_train + num_val + num_test]),
    )


def save_split(path: PathLike, split: Split, n: int, seed: int | None = None) -> None:
    r"""Writes ``split`` with the dataset size ``n`` (and ``seed``) atomically to ``path``."""
    with atomic_write(path) as stream:
        np.savez(
            stream,
            train=split.train,
            val=split.val,
            test=split.test,
            n=n,
            seed=-1 if seed is None else seed,
        )


def load_split(path: PathLike, n: int | None = None) -> Split:
    r"""Reads a split written by :func:`save_split`.

    Args:
        path: the ``.npz`` file.
        n: if given, the dataset size the split must have been made for.

    Raises:
        DataFormatError: if the file is unreadable or was made for another size.
    """
    arrays = read_npz(path)
    missing = {"train", "val", "test", "n"} - set(arrays)
    if missing:
        raise DataFormatError(f"{path}: not a split file, keys {sorted(missing)} missing")
    saved_n = int(arrays["n"])
    if n is not None and saved_n != n:
        raise DataFormatError(
            f"{path}: split was made for {saved_n} configurations, the dataset has {n}; "
            "delete the file or point split_file elsewhere"
        )
    split = Split(*(arrays[k].astype(np.int64) for k in ("train", "val", "test")))
    for name, idx in zip(Split._fields, split, strict=True):
        if idx.size and (idx.min() < 0 or idx.max() >= saved_n):
            raise DataFormatError(f"{path}: '{name}' indices outside 0..{saved_n - 1}")
    return split


def split_dataset(
    n: int | Sized,
    train: Size,
    val: Size = 0,
    test: Size = None,
    seed: int = 0,
    split_file: PathLike | None = None,
) -> Split:
    r"""A deterministic split, re-used from ``split_file`` when that exists.

    Without ``split_file`` this is :func:`split_indices`. With one, an existing file is
    loaded (and must match ``n`` and the requested sizes), otherwise the new split is
    saved there, so re-runs and other processes see the same indices.

    Args:
        n: number of configurations, or a sized dataset.
        train, val, test: counts, fractions or ``None`` (remainder); see
            :func:`split_sizes`.
        seed: random seed.
        split_file: ``.npz`` path to load from or save to.

    Raises:
        DataFormatError: if a saved split does not match ``n`` or the sizes.
    """
    n = n if isinstance(n, int) else len(n)
    if split_file is not None and Path(split_file).exists():
        split = load_split(split_file, n)
        sizes = tuple(len(part) for part in split)
        wanted = split_sizes(n, train, val, test)
        if sizes != wanted:
            raise DataFormatError(
                f"{split_file}: saved split has sizes (train, val, test) = {sizes}, "
                f"requested {wanted}; delete the file or point split_file elsewhere"
            )
        return split
    split = split_indices(n, train, val, test, seed)
    if split_file is not None:
        save_split(split_file, split, n, seed)
    return split
