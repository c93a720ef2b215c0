r"""Several levels of theory in one model: one energy head per level on a shared
representation (:class:`MultiFidelityHead`, as MACE's multi-head fine-tuning), and
Δ-learning, a base model plus a small model of the difference (:class:`DeltaPotential`).

A multi-fidelity model returns, for every structure, the energy of *its* level (the
graph's ``level``, an index into :attr:`MultiFidelityHead.levels`, from the data), and
all levels' energies under ``energy_<level>``; without a ``level`` it answers at its
:attr:`~MultiFidelityHead.default_level`, which :meth:`~hipnn_pyg.nn.Potential.select_level`
sets (``HIPNNCalculator(..., head="ccsdt")``, ``hipnn-md head=ccsdt``). The model file
records the level names with the rest of the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hipnn_pyg.nn.heads import EnergyHead
from hipnn_pyg.nn.representation import RepresentationOutput
from hipnn_pyg.nn.spec import Configurable


class MultiFidelityHead(Configurable, nn.Module):
    r"""One :class:`~hipnn_pyg.nn.EnergyHead` per level of theory, each structure's
    energy taken from the head of its level.

    Args:
        levels (Sequence[str]): The levels' names, e.g. ``["pbe", "ccsdt"]``; data give
            each structure's level as an index into this list.
        default_level (str, optional): The level of structures that carry none.
            (default: :obj:`None`, the first)
        output (str): Name of the selected energy output. (default: :obj:`"energy"`)
    """

    #: :meth:`~hipnn_pyg.nn.Potential.outputs` passes the structures' levels.
    takes_level = True

    def __init__(self, levels: Sequence[str], default_level: str | None = None,
                 output: str = "energy") -> None:
        super().__init__()
        names = [str(level) for level in levels]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"levels must be distinct names, got {list(levels)}")
        self.levels = names
        self.output = output
        self.heads = nn.ModuleDict({name: EnergyHead(output=f"{output}_{name}")
                                    for name in names})
        self.default_level = names[0]
        if default_level is not None:
            self.select(default_level)

    def select(self, level: str) -> None:
        r"""Answers at ``level`` where structures carry none; raises naming the levels."""
        self.level_index(level)  # checks the name
        self.default_level = level
        config = self.__dict__.get("_config")
        if config is not None:  # a saved model answers at the level selected last
            config["default_level"] = level

    def level_index(self, level: str) -> int:
        r"""The index of ``level`` in :attr:`levels`."""
        if level not in self.levels:
            raise ValueError(f"unknown level '{level}': this model has {self.levels}")
        return self.levels.index(level)

    def build(self, channels: Sequence[int], like: Tensor | None = None) -> None:
        for head in self.heads.values():
            head.build(channels, like)

    def reset_parameters(self) -> None:
        for head in self.heads.values():
            head.reset_parameters()

    @property
    def representation(self) -> None:  # the Potential attaches it as it does EnergyHead
        return None

    @property
    def output_names(self) -> tuple[str, ...]:
        own = (self.output, f"atom_{self.output}", f"layer_{self.output}")
        return own + tuple(name for head in self.heads.values() for name in head.output_names)

    @property
    def self_energies(self) -> Tensor:
        r"""The default level's per-species self-energies."""
        return self.heads[self.default_level].self_energies

    def set_self_energies(self, energies: Tensor | Sequence[float],
                          level: str | None = None) -> None:
        r"""Sets one level's self-energies (the default level's when :obj:`None`)."""
        self.heads[level or self.default_level].set_self_energies(energies)

    def self_energy_weights(self) -> list[Tensor]:
        return [w for head in self.heads.values() for w in head.self_energy_weights()]

    def forward(self, representation: RepresentationOutput, total_charge: Tensor | None = None,
                level: Tensor | None = None) -> dict[str, Tensor]:
        r"""Every level's outputs, and ``<output>``, ``atom_<output>``, ``layer_<output>``
        of each structure's own level (``level`` ``[num_graphs]``, int; :obj:`None`: the
        default level for all)."""
        results: dict[str, Tensor] = {}
        for head in self.heads.values():
            results.update(head(representation))
        per_level = [self.heads[name].output for name in self.levels]
        if level is None:
            name = self.heads[self.default_level].output
            selected = {key: results[key.replace(self.output, name, 1)]
                        for key in (self.output, f"atom_{self.output}", f"layer_{self.output}")}
            return {**results, **selected}
        level = level.to(torch.long).view(-1)
        energy = torch.stack([results[name] for name in per_level], dim=1)
        atom_level = level[representation.batch]
        atom = torch.stack([results[f"atom_{name}"] for name in per_level], dim=1)
        layer = torch.stack([results[f"layer_{name}"] for name in per_level], dim=1)
        rows = torch.arange(atom_level.numel(), device=atom_level.device)
        return {**results,
                self.output: energy.gather(1, level[:, None]).squeeze(1),
                f"atom_{self.output}": atom.gather(1, atom_level[:, None]).squeeze(1),
                f"layer_{self.output}": layer[rows, atom_level]}


class DeltaPotential(Configurable, nn.Module):
    r"""Δ-learning: ``base`` (a trained model of the low level, frozen) plus ``delta``
    (a small model of the difference to the high level), one model whose energies are
    the sum; forces and stress follow by autograd as for any potential. Train it on the
    high level's labels with the base frozen (``finetune.delta=...``); the model file
    holds both.

    Args:
        base (nn.Module): The low-level potential.
        delta (nn.Module): The correction's potential (its own species, cutoff, width).
    """

    def __init__(self, base: nn.Module, delta: nn.Module) -> None:
        super().__init__()
        if sorted(base.species) != sorted(delta.species):
            raise ValueError(f"base species {base.species} and delta species "
                             f"{delta.species} differ")
        self.base, self.delta = base, delta

    @property
    def representation(self) -> nn.Module:
        r"""The base's representation (its species, cutoff, ``min_distance``)."""
        return self.base.representation

    @property
    def species(self) -> list[int]:
        return self.base.species

    @property
    def cutoff(self) -> float:
        return max(self.base.cutoff, self.delta.cutoff)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("energy", "atom_energy", "layer_energy")

    @property
    def self_energies(self) -> Tensor:
        r"""The correction's self-energies (the ones a refit moves)."""
        return self.delta.self_energies

    def set_self_energies(self, energies: Tensor | Sequence[float]) -> None:
        self.delta.set_self_energies(energies)

    def self_energy_weights(self) -> list[Tensor]:
        return self.delta.energy_head.self_energy_weights()

    def reset_parameters(self) -> None:
        self.delta.reset_parameters()

    def outputs(self, z: Tensor, pos: Tensor, batch: Tensor | None = None,
                cell: Tensor | None = None, pbc: Tensor | None = None,
                total_charge: Tensor | None = None, num_graphs: int | None = None,
                level: Tensor | None = None, validate: bool = True) -> dict[str, Tensor]:
        r"""``energy``, ``atom_energy`` (base + delta) and ``layer_energy`` (the base's
        layers, then the delta's); ``validate`` as in
        :meth:`~hipnn_pyg.nn.Potential.forward`."""
        low = self.base.outputs(z, pos, batch, cell, pbc, total_charge, num_graphs,
                                validate=validate)
        high = self.delta.outputs(z, pos, batch, cell, pbc, total_charge, num_graphs,
                                  validate=validate)
        return {"energy": low["energy"] + high["energy"],
                "atom_energy": low["atom_energy"] + high["atom_energy"],
                "layer_energy": torch.cat([low["layer_energy"], high["layer_energy"]], -1)}

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor | None = None,
                cell: Tensor | None = None, pbc: Tensor | None = None,
                num_graphs: int | None = None, validate: bool = True) -> Tensor:
        r"""The model-zoo call: energies ``[num_graphs]`` (float64)."""
        return self.outputs(z, pos, batch, cell, pbc, None, num_graphs,
                            validate=validate)["energy"]


__all__ = ["DeltaPotential", "MultiFidelityHead"]
