r"""Lightning data module: one file (plus an optional test file), split and batched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch_geometric.loader import DataLoader

from hipnn_pyg.data.base import AtomsDataset, PathLike
from hipnn_pyg.data.formats import load_dataset
from hipnn_pyg.data.loader import AtomsLoader
from hipnn_pyg.data.splits import Size, Split, split_dataset, split_indices


class HIPNNDataModule(L.LightningDataModule):
    r"""Loads a dataset with :func:`~hipnn_pyg.data.load_dataset`, splits it
    deterministically and serves batches of PyG :class:`~torch_geometric.data.Batch`.

    All arguments are flat scalars or strings, so a Hydra config can build it with
    ``_target_: hipnn_pyg.data.HIPNNDataModule``. Extra keyword arguments go to the
    dataset class (e.g. ``target: U0`` for QM9, ``energy_key: REF_energy`` for extxyz).

    With ``test_path`` (e.g. the official rMD17 ``*_test_NN.npz`` next to
    ``*_train_NN.npz``), ``path`` is split into train and validation only and the test
    set comes from ``test_path``: all of it, or ``num_test`` configurations drawn with
    ``seed``. Without it, ``num_test`` configurations of ``path`` are held out (``None``:
    all that train and validation leave).

    With ``val_path``, the validation set is that file (all of it, fixed: active
    learning's committees validate on one external set however small their training
    set is) and ``path`` gives no validation frames (``num_val`` is not used).

    After :meth:`setup`, :attr:`train_dataset`, :attr:`val_dataset` and
    :attr:`test_dataset` hold the parts (fit self-energies on :attr:`train_dataset`
    only), :attr:`split` the indices into :attr:`dataset`.

    Args:
        path: data file.
        format: file format, ``"auto"`` to detect.
        test_path: optional separate test file (same format).
        val_path: optional separate validation file (same format).
        num_train: training configurations: count (int) or fraction (float).
        num_val: validation configurations: count or fraction.
        num_test: test configurations: count, fraction or ``None`` (the rest / all).
        batch_size: training batch size.
        val_batch_size: validation and test batch size (default ``batch_size``).
        seed: seed of the split (and of ``num_test`` drawn from ``test_path``).
        split_file: ``.npz`` to save the split to, or re-use it from if it exists.
        num_workers: data loader worker processes.
        require_forces: raise if the data carry no forces.
        require_energy: raise if the data carry no energies.
        pin_memory: pin batches in page-locked memory (for GPU training).
        fast_loader: batch with :class:`~hipnn_pyg.data.loader.AtomsLoader` (vectorised,
            identical batches); ``False`` uses PyG's
            :class:`~torch_geometric.loader.DataLoader`.
        **dataset_kwargs: keyword arguments for the dataset class.
    """

    def __init__(
        self,
        path: PathLike,
        format: str = "auto",
        test_path: PathLike | None = None,
        num_train: Size = 0.8,
        num_val: Size = 0.1,
        num_test: Size = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        seed: int = 0,
        split_file: PathLike | None = None,
        num_workers: int = 0,
        require_forces: bool = False,
        require_energy: bool = True,
        pin_memory: bool = False,
        fast_loader: bool = True,
        val_path: PathLike | None = None,
        **dataset_kwargs: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = Path(path)
        self.format = format
        self.test_path = None if test_path in (None, "") else Path(test_path)
        self.val_path = None if val_path in (None, "") else Path(val_path)
        if self.val_path is not None:
            num_val = 0
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.seed = seed
        self.split_file = None if split_file in (None, "") else Path(split_file)
        self.num_workers = num_workers
        self.require_forces = require_forces
        self.require_energy = require_energy
        self.pin_memory = pin_memory
        self.fast_loader = fast_loader
        self.dataset_kwargs = dataset_kwargs

        self.dataset: AtomsDataset | None = None
        self.split: Split | None = None
        self.train_dataset: AtomsDataset | None = None
        self.val_dataset: AtomsDataset | None = None
        self.test_dataset: AtomsDataset | None = None

    def _load(self, path: Path) -> AtomsDataset:
        dataset = load_dataset(path, self.format, **self.dataset_kwargs)
        if self.require_forces and not dataset.has("forces"):
            raise ValueError(f"require_forces=True, but {dataset.missing_message('forces')}")
        if self.require_energy and not dataset.has("energy"):
            raise ValueError(f"require_energy=True, but {dataset.missing_message('energy')}")
        return dataset

    def setup(self, stage: str | None = None) -> None:
        r"""Loads and splits the data (once; later calls do nothing)."""
        if self.dataset is not None:
            return
        self.dataset = self._load(self.path)
        if self.test_path is None:
            self.split = split_dataset(
                self.dataset,
                self.num_train,
                self.num_val,
                self.num_test,
                self.seed,
                self.split_file,
            )
            test_dataset = self.dataset[torch.as_tensor(self.split.test)]
        else:
            self.split = split_dataset(
                self.dataset, self.num_train, self.num_val, 0, self.seed, self.split_file
            )
            test_dataset = self._load(self.test_path)
            if self.num_test is not None:
                chosen = split_indices(test_dataset, self.num_test, 0, 0, self.seed).train
                test_dataset = test_dataset[torch.as_tensor(chosen)]
        self.train_dataset = self.dataset[torch.as_tensor(self.split.train)]
        self.val_dataset = (self._load(self.val_path) if self.val_path is not None
                            else self.dataset[torch.as_tensor(self.split.val)])
        self.test_dataset = test_dataset

    @property
    def species(self) -> list[int]:
        r"""Sorted atomic numbers present in the training set."""
        if self.train_dataset is None:
            raise RuntimeError("call setup() first")
        return self.train_dataset.species()

    def _loader(
        self, dataset: AtomsDataset | None, batch_size: int, shuffle: bool
    ) -> DataLoader | AtomsLoader:
        if dataset is None:
            raise RuntimeError("call setup() first")
        loader_cls = AtomsLoader if self.fast_loader else DataLoader
        return loader_cls(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader | AtomsLoader:
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | AtomsLoader:
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | AtomsLoader:
        return self._loader(self.test_dataset, self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader | AtomsLoader:
        return self.test_dataloader()
