r"""Per-species self-energies: least squares of total energies on element counts.

HIP-NN's layer-0 readout is a per-species energy; fitting it before training lets the
network learn only the remainder (Lubbers et al., arXiv:1710.00017). Fit it on the
training split only, so no validation or test energy leaks into the model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Subset
from torch_geometric.data import Data

from hipnn_pyg.data.base import AtomsDataset

log = logging.getLogger(__name__)


def composition_and_energy(
    data: AtomsDataset | Subset | Iterable[Data], species: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Element counts ``[G, len(species)]`` and energies ``[G]`` (both float64).

    Args:
        data: an :class:`~hipnn_pyg.data.AtomsDataset` (or an index selection of one;
            vectorised), a :class:`~torch.utils.data.Subset` of one, or any iterable of
            ``Data``/``Batch`` objects carrying ``z`` and ``energy`` such as a
            :class:`~torch_geometric.loader.DataLoader`.
        species: atomic numbers, one column each.

    Raises:
        ValueError: if some configuration has no energy or holds an element not in
            ``species``.
    """
    species = [int(s) for s in species]
    if isinstance(data, Subset) and isinstance(data.dataset, AtomsDataset):
        data = data.dataset[torch.as_tensor(list(data.indices), dtype=torch.long)]
    if isinstance(data, AtomsDataset):
        if not data.has("energy"):
            raise ValueError(data.missing_message("energy"))
        all_counts = data.composition(range(119))
        energy = data._data.energy.to(torch.float64)[torch.as_tensor(data.indices())]
    else:
        parts, energies = [], []
        for item in data:
            if getattr(item, "energy", None) is None:
                raise ValueError("self-energy fit needs 'energy' on every configuration")
            batch = getattr(item, "batch", None)
            graph = torch.zeros_like(item.z) if batch is None else batch
            counts = torch.zeros(int(item.energy.numel()), 119, dtype=torch.float64)
            counts.index_put_(
                (graph, item.z), torch.ones_like(item.z, dtype=torch.float64), accumulate=True
            )
            parts.append(counts)
            energies.append(item.energy.detach().reshape(-1).to(torch.float64))
        if not parts:
            raise ValueError("self-energy fit got no configurations")
        all_counts, energy = torch.cat(parts), torch.cat(energies)
    others = sorted(set(torch.nonzero(all_counts.sum(0)).flatten().tolist()) - set(species))
    if others:
        raise ValueError(f"the data hold elements {others} that are not in species {species}")
    return all_counts[:, species], energy


def fit_self_energies(
    data: AtomsDataset | Subset | Iterable[Data], species: Sequence[int]
) -> torch.Tensor:
    r"""Least-squares self-energies :math:`e_s` with :math:`E_n \approx \sum_s c_{ns} e_s`.

    Species absent from ``data`` get 0 (with a warning). When the counts do not
    determine every :math:`e_s` (rank deficiency, e.g. rMD17 where every frame is the
    same molecule and only :math:`\sum_s c_s e_s` is fixed), the solution returned is
    the least-squares one closest to the mean energy per atom
    :math:`\bar e = \sum_n E_n / \sum_{ns} c_{ns}` for every species: the mean per-atom
    energy spread evenly, corrected only along directions the data determine. For
    full-rank counts this is the ordinary least-squares solution.

    Args:
        data: the **training** configurations: an
            :class:`~hipnn_pyg.data.AtomsDataset` (or a selection of one), a
            :class:`~torch.utils.data.Subset`, or a data loader; energies in eV.
        species: atomic numbers, in the model's species order.

    Returns:
        Self-energies ``[len(species)]`` in the data's energy unit (eV), float64.
    """
    counts, energy = composition_and_energy(data, species)
    return solve_self_energies(counts, energy, species)


def solve_self_energies(
    counts: torch.Tensor, energy: torch.Tensor, species: Sequence[int]
) -> torch.Tensor:
    r"""The least-squares problem of :func:`fit_self_energies` on element counts
    ``[G, len(species)]`` and energies ``[G]`` (eV), with its rule for species that are
    absent or not determined by the counts."""
    x, y = counts.numpy(), energy.numpy()
    present = x.sum(axis=0) > 0
    if not present.all():
        absent = [s for s, p in zip(species, present, strict=True) if not p]
        warnings.warn(
            f"species {absent} do not occur in the data; their self-energy is 0", stacklevel=2
        )
    x = x[:, present]
    result = np.zeros(len(species))
    if x.shape[1] == 0:
        return torch.as_tensor(result)
    prior = y.sum() / x.sum()  # mean energy per atom
    delta, _, rank, _ = np.linalg.lstsq(x, y - x.sum(axis=1) * prior, rcond=None)
    if rank < x.shape[1]:
        warnings.warn(
            f"element counts have rank {rank} < {x.shape[1]} species: only {rank} "
            "combination(s) of self-energies are determined by the data; the rest take the "
            "mean energy per atom",
            stacklevel=2,
        )
    result[present] = prior + delta
    return torch.as_tensor(result)


#: Structures of the training split (evenly spaced) whose untrained-network residuals
#: set the initial offset: enough to pin per-species means, cheap on large data sets.
OFFSET_STRUCTURES = 10_000


def initialize_self_energies(model: torch.nn.Module, train_dataset: Any,
                             network_offset: bool = False) -> bool:
    r"""Sets ``model``'s per-species self-energies to :func:`fit_self_energies` on
    ``train_dataset`` when they are all zero (not given by the user). Call it once,
    before training starts and never when resuming (the checkpoint holds them).

    With ``network_offset``, the self-energies are then shifted by a least-squares fit
    of the untrained model's own residuals (:func:`refit_self_energies`, on at most
    :data:`OFFSET_STRUCTURES` structures): an untrained HIP-NN's higher layers add
    energies of tens of eV (e.g. +39 eV on ethanol for width 64, three interactions,
    ``tensor_order=2``), which the first steps of training would otherwise spend on.

    Args:
        model (torch.nn.Module): A model with ``species``, ``self_energies`` and
            ``set_self_energies`` (e.g. :class:`~hipnn_pyg.HIPNN`); others are left alone.
        train_dataset: The **training** split (see :func:`fit_self_energies`).
        network_offset (bool): Also absorb the untrained network's mean energy.
            (default: :obj:`False`)

    Returns:
        Whether the self-energies were fitted.
    """
    if _levelled(model, train_dataset):
        fitted = False
        for name, part in _level_parts(model, train_dataset):
            with _at_level(model, name):
                fitted |= initialize_self_energies(model, part, network_offset)
        return fitted
    current = getattr(model, "self_energies", None)
    if current is None or bool(current.abs().gt(0).any()):
        return False
    energies = fit_self_energies(train_dataset, model.species)
    model.set_self_energies(energies.to(current))
    log.info("fitted self-energies (eV) on %d training structures: %s", len(train_dataset),
             dict(zip(model.species, energies.tolist(), strict=True)))
    if network_offset:
        count = len(train_dataset)
        spaced = np.linspace(0, count - 1, OFFSET_STRUCTURES).round().astype(int)
        sample = train_dataset if count <= OFFSET_STRUCTURES else Subset(
            train_dataset, spaced.tolist())
        with warnings.catch_warnings():  # the rank warning was given by the fit above
            warnings.simplefilter("ignore", UserWarning)
            refit_self_energies(model, sample)
    return True


@torch.no_grad()
def scale_readouts(model: torch.nn.Module, decay: float) -> None:
    r"""Scales the energy readouts of layers 1, 2, 3, ... by ``decay``, ``decay**2``,
    ``decay**4``, ... (hippynn's ``hierarchical_energy_initialization``): the untrained
    model's energy is then nearly its self-energies alone, and its forces nearly zero.

    Args:
        model (torch.nn.Module): A model with an ``energy_head`` of per-layer
            ``readouts`` (e.g. :class:`~hipnn_pyg.HIPNN`).
        decay (float): The first interaction layer's factor, e.g. ``1e-2``.
    """
    factor = float(decay)
    for readout in model.energy_head.readouts[1:]:
        for parameter in readout.parameters():
            parameter.mul_(factor)
        factor *= factor


def _levelled(model: torch.nn.Module, dataset: Any) -> bool:
    return getattr(model, "levels", None) is not None and getattr(dataset, "mixed", False)


def _level_parts(model: torch.nn.Module, dataset: Any) -> list[tuple[str, Any]]:
    r"""``(level, its structures)`` of a levelled data set, levels with energies only."""
    return [(name, dataset.parts[name]) for name in model.levels
            if name in dataset.parts and len(dataset.parts[name])
            and getattr(dataset.parts[name], "has", lambda key: True)("energy")]


@contextmanager
def _at_level(model: torch.nn.Module, level: str) -> Iterator[None]:
    r"""``model`` answering (and setting self-energies) at ``level`` for a while."""
    head = model.heads["energy"]
    previous = head.default_level
    head.select(level)
    try:
        yield
    finally:
        head.select(previous)


@torch.no_grad()
def refit_self_energies(model: torch.nn.Module, train_dataset: Any, batch_size: int = 64) -> Tensor:
    r"""Refits a trained model's self-energies to new reference energies (another level
    of theory, another code): shifts them by the least-squares fit, on element counts,
    of the residuals :math:`E_n - \hat E_n` of the model's own predictions, so the
    learned layers keep their meaning and only the per-species offsets move (as ANI-1ccx
    refits its self-energies before retraining).

    Args:
        model (torch.nn.Module): A model with ``species``, ``self_energies`` and
            ``set_self_energies`` whose forward gives energies, e.g. a loaded
            :class:`~hipnn_pyg.HIPNN`.
        train_dataset: The **training** split (see :func:`fit_self_energies`).
        batch_size (int): Structures per forward pass. (default: :obj:`64`)

    Returns:
        The new self-energies ``[len(species)]`` (eV).
    """
    from torch_geometric.loader import DataLoader

    from hipnn_pyg.nn.predict import predict

    if _levelled(model, train_dataset):  # each level's head on its own structures
        for name, part in _level_parts(model, train_dataset):
            with _at_level(model, name):
                refit_self_energies(model, part, batch_size)
        return model.self_energies
    counts, energy = composition_and_energy(train_dataset, model.species)
    predicted = []
    was_training = model.training
    model.eval()
    for batch in DataLoader(train_dataset, batch_size=batch_size):
        energy_batch = predict(model, batch, compute_forces=False)["energy"]
        predicted.append(energy_batch.detach().to(torch.float64).reshape(-1).cpu())
    model.train(was_training)
    shift = solve_self_energies(counts, energy - torch.cat(predicted), model.species)
    current = model.self_energies
    energies = current.to(torch.float64).cpu() + shift
    model.set_self_energies(energies.to(current))
    log.info("refitted self-energies (eV) on %d training structures: %s", len(train_dataset),
             dict(zip(model.species, energies.tolist(), strict=True)))
    return energies
