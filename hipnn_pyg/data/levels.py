r"""Data of several levels of theory in one training run (multi-fidelity): each level's
data set splits as on its own, and every structure carries ``level``, the index of its
level, with NaN for the labels its level lacks (CCSD(T) energies without forces beside
PBE energies and forces), which the loss and the metrics skip.

Hydra example (``conf/data/ethanol_multifidelity.yaml``)::

    _target_: hipnn_pyg.data.MultiFidelityDataModule
    levels:
      pbe: {_target_: hipnn_pyg.data.HIPNNDataModule, path: ..., format: rmd17, ...}
      ccsdt: {_target_: hipnn_pyg.data.HIPNNDataModule, path: ..., num_train: 50, ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from hipnn_pyg.data.base import ATOM_KEYS, GRAPH_KEYS, REQUIRED_KEYS

#: Labels that a level may lack (filled with NaN for its structures).
LABELS = tuple(key for key in (*GRAPH_KEYS, *ATOM_KEYS) if key not in (*REQUIRED_KEYS, "z", "pos"))


class LevelledDataset(Dataset):
    r"""The structures of several data sets, each marked with the index of its level
    and given NaN for the labels its data set lacks but another has.

    Args:
        parts (Mapping[str, Dataset] or Sequence[tuple[str, Dataset]]): Each level's
            data set (e.g. an :class:`~hipnn_pyg.data.AtomsDataset` split), in level
            order; a level may have several (pairs with a repeated name: CCSD(T)
            energies and forces in one file, energies only in another).
    """

    def __init__(self, parts: Mapping[str, Dataset] | Sequence[tuple[str, Dataset]],
                 levels: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        pairs = list(parts.items()) if isinstance(parts, Mapping) else list(parts)
        self._pairs = [(str(name), part) for name, part in pairs]
        self.levels = (list(levels) if levels is not None
                       else list(dict.fromkeys(name for name, _ in self._pairs)))
        self._sizes = [len(part) for _, part in self._pairs]
        self.labels = list(labels) if labels is not None else [
            key for key in LABELS if any(self._has(part, key) for _, part in self._pairs)]

    @staticmethod
    def _has(part: Any, key: str) -> bool:
        return bool(part.has(key)) if hasattr(part, "has") else False

    @property
    def mixed(self) -> bool:
        r"""Whether its structures come from more than one level."""
        return len({name for name, _ in self._pairs}) > 1

    @property
    def parts(self) -> dict[str, LevelledDataset]:
        r"""Each level's structures alone (with the same level indices and labels)."""
        return {name: LevelledDataset([pair for pair in self._pairs if pair[0] == name],
                                      self.levels, self.labels) for name in self.levels}

    def __len__(self) -> int:
        return sum(self._sizes)

    def __getitem__(self, index: int) -> Data:
        index = int(index)
        if index < 0:
            index += len(self)
        for (name, part), size in zip(self._pairs, self._sizes, strict=True):
            if index < size:
                data = part[index].clone()
                data.level = torch.tensor([self.levels.index(name)])
                for key in self.labels:
                    if getattr(data, key, None) is None:
                        setattr(data, key, self._missing(key, data))
                return data
            index -= size
        raise IndexError(f"index out of range for {len(self)} structures")

    @staticmethod
    def _missing(key: str, data: Data) -> torch.Tensor:
        per_atom = key in ATOM_KEYS
        shape = (data.z.numel(), *ATOM_KEYS[key]) if per_atom else (1, *GRAPH_KEYS[key])
        dtype = torch.float64 if key == "energy" else data.pos.dtype
        return torch.full(shape, float("nan"), dtype=dtype)

    def has(self, key: str) -> bool:
        r"""Whether any level labels ``key``."""
        return key in self.labels or key in ("z", "pos")

    def missing_message(self, key: str) -> str:
        return f"no level's data have '{key}' (levels: {self.levels})"

    def species(self) -> list[int]:
        r"""The elements of every level's structures."""
        found: set[int] = set()
        for _, part in self._pairs:
            if len(part) and hasattr(part, "species"):
                found |= set(part.species())
        return sorted(found)


class MultiFidelityDataModule(L.LightningDataModule):
    r"""Combines the data of several levels of theory; each level's data module splits
    its own data (sizes, seed, test file), and the splits are merged level by level.

    Args:
        levels (Mapping[str, LightningDataModule or list]): Each level's data module
            (e.g. a :class:`~hipnn_pyg.data.HIPNNDataModule`) or list of them, by level
            name, in the order of the model's
            :class:`~hipnn_pyg.nn.fidelity.MultiFidelityHead` levels.
        batch_size (int): Training batch size (structures of every level mixed).
            (default: :obj:`16`)
        val_batch_size (int, optional): Validation and test batch size.
            (default: :obj:`None`, ``batch_size``)
        num_workers (int): Loader workers. (default: :obj:`0`)
    """

    def __init__(self, levels: Mapping[str, L.LightningDataModule], batch_size: int = 16,
                 val_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if not levels:
            raise ValueError("MultiFidelityDataModule needs at least one level")
        self.level_modules = [(str(name), module) for name, entry in levels.items()
                              for module in (entry if isinstance(entry, Sequence)
                                             else [entry])]
        self.levels = list(levels)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.train_dataset: LevelledDataset | None = None
        self.val_dataset: LevelledDataset | None = None
        self.test_dataset: LevelledDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        for _, module in self.level_modules:
            module.setup(stage)
        for split in ("train", "val", "test"):
            # every level keeps its index, also where one has no structures in a split
            parts = [(name, getattr(module, f"{split}_dataset") or [])
                     for name, module in self.level_modules]
            setattr(self, f"{split}_dataset", LevelledDataset(parts))

    def species(self) -> list[int]:
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        return self.train_dataset.species()

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() first")
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, self.val_batch_size, shuffle=False)


__all__ = ["LevelledDataset", "MultiFidelityDataModule"]
