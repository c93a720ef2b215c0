r"""Fine-tuning a trained model on new data: frozen parts, refitted self-energies.

As ANI-1ccx (Smith et al., Nat. Commun. 10, 2903, 2019) retrained part of ANI-1x on a
little CCSD(T) data, ``hipnn-train ... finetune.from=<model.pt or .ckpt>`` starts from a
trained model, freezes the parameters that ``finetune.freeze`` names (a preset of
:data:`FREEZE_PRESETS` or a list of parameter-name patterns) and, on a new run, refits
the self-energies to the new energies (:func:`~hipnn_pyg.train.self_energy.
refit_self_energies`). The architecture, species and cutoff come from the file; a
command-line ``model.*`` override that contradicts it is refused.

Two more ways to reach a higher level of theory from the same file:

* ``finetune.levels=[pbe,ccsdt]``: multi-fidelity, one energy head per level on the
  shared representation, each a copy of the pretrained head at first; trained on data
  of every level (:class:`~hipnn_pyg.data.MultiFidelityDataModule`), the low level's
  frames replaying the pretraining while the high level's teach its head.
* ``finetune.delta={hidden_channels: 16, ...}``: Δ-learning, the pretrained model frozen
  and a small HIP-NN of those arguments learning the difference
  (:class:`~hipnn_pyg.nn.fidelity.DeltaPotential`, one model file).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch import nn

from hipnn_pyg.nn.spec import model_spec
from hipnn_pyg.serialization import load_model
from hipnn_pyg.train.self_energy import refit_self_energies

log = logging.getLogger(__name__)

#: ``none``: everything trains. ``readout``: only the heads' linear readouts train (the
#: representation is frozen). ``last_interaction``: the last interaction block (its
#: interaction and on-site layers) and the readouts train. ``ani1ccx``: ANI-1ccx's
#: alternate scheme on HIP-NN's stack of hidden layers (interaction, on-site, on-site,
#: ..., in order): the 1st, 3rd, 5th ... are frozen, the 2nd, 4th ... and the readouts
#: train, as ANI-1ccx froze hidden layers 1 and 3 and retrained layer 2 and the output.
FREEZE_PRESETS = ("none", "readout", "last_interaction", "ani1ccx")


@dataclass(frozen=True)
class FreezeSummary:
    r"""What :func:`freeze` froze: parameter names and element counts."""

    frozen_names: tuple[str, ...]
    num_frozen: int
    num_trainable: int

    def __str__(self) -> str:
        total = self.num_frozen + self.num_trainable
        share = 100.0 * self.num_frozen / total if total else 0.0
        return (f"{self.num_frozen:,} of {total:,} parameters frozen ({share:.1f}%), "
                f"{self.num_trainable:,} trainable")


def hidden_layers(model: nn.Module) -> list[str]:
    r"""Name prefixes of the representation's hidden layers in the order they are
    applied: ``representation.interactions.0``, ``representation.atom_layers.0.0``, ...

    Raises:
        ValueError: If ``model`` has no HIP-NN representation.
    """
    representation = getattr(model, "representation", None)
    if representation is None or not hasattr(representation, "interactions"):
        raise ValueError(f"{type(model).__name__} has no HIP-NN representation to freeze "
                         "layers of; give parameter-name patterns instead of a preset")
    layers = []
    for index, block in enumerate(representation.atom_layers):
        layers.append(f"representation.interactions.{index}")
        layers.extend(f"representation.atom_layers.{index}.{j}" for j in range(len(block)))
    return layers


def preset_patterns(model: nn.Module, preset: str) -> list[str]:
    r"""The parameter-name patterns that ``preset`` (one of :data:`FREEZE_PRESETS`)
    freezes in ``model``."""
    if preset == "none":
        return []
    if preset == "readout":
        return ["representation.*"]
    layers = hidden_layers(model)
    if preset == "last_interaction":
        last = len(model.representation.interactions) - 1
        keep = (f"representation.interactions.{last}.", f"representation.atom_layers.{last}.")
        return [f"{layer}.*" for layer in layers if not f"{layer}.".startswith(keep)]
    if preset == "ani1ccx":
        return [f"{layer}.*" for layer in layers[0::2]]
    raise ValueError(f"finetune.freeze: unknown preset '{preset}'; presets are "
                     f"{list(FREEZE_PRESETS)}, or give a list of parameter-name patterns")


def freeze(model: nn.Module, freeze: str | Sequence[str] | None) -> FreezeSummary:
    r"""Sets ``requires_grad=False`` on the parameters that ``freeze`` names: a preset
    of :data:`FREEZE_PRESETS` or ``fnmatch`` patterns of parameter names such as
    ``["representation.interactions.0.*", "heads.energy.readouts.0.weight"]``; the
    optimizer then leaves them out
    (:func:`~hipnn_pyg.train.optim.parameter_groups`), so they stay bit-identical.

    Raises:
        ValueError: For an unknown preset or a pattern that names no parameter.
    """
    if freeze is None:
        freeze = "none"
    patterns = (preset_patterns(model, freeze) if isinstance(freeze, str)
                else [str(pattern) for pattern in freeze])
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise ValueError(
                f"finetune.freeze: pattern '{pattern}' names no parameter of the model; "
                f"its parameters are named like {names[:3]} ... {names[-1:]}"
            )
    frozen: list[str] = []
    num_frozen = num_trainable = 0
    for name, parameter in model.named_parameters():
        is_frozen = any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        parameter.requires_grad_(not is_frozen)
        if is_frozen:
            frozen.append(name)
            num_frozen += parameter.numel()
        else:
            num_trainable += parameter.numel()
    if not num_trainable:
        raise ValueError(f"finetune.freeze={freeze} freezes every parameter: nothing to train")
    return FreezeSummary(tuple(frozen), num_frozen, num_trainable)


def architecture(model: nn.Module) -> dict[str, Any]:
    r"""The model's config tree as ``conf/model/*.yaml`` lays it out
    (``representation``, ``heads.<name>``), however the model was built (by
    :class:`~hipnn_pyg.HIPNN`'s flat arguments or from its parts)."""
    tree: dict[str, Any] = {}
    if hasattr(model, "representation"):
        tree["representation"] = model_spec(model.representation)
    if hasattr(model, "heads"):
        tree["heads"] = {name: model_spec(head) for name, head in model.heads.items()}
    return tree


def _lookup(tree: Any, path: Sequence[str]) -> Any:
    for key in path:
        if isinstance(tree, dict) and key in tree:
            tree = tree[key]
        else:
            raise KeyError(".".join(path))
    return tree


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def check_overrides(model: nn.Module, source: str | Path, overrides: Sequence[str],
                    config_model: Any) -> None:
    r"""Refuses command-line overrides of the model config that contradict the
    pretrained model read from ``source``.

    Args:
        model (nn.Module): The pretrained model.
        source (str or Path): Its file, for the messages.
        overrides (Sequence[str]): The run's command-line overrides (``key=value``).
        config_model: The composed ``model`` config node, for the overridden values.

    Raises:
        ValueError: ``model=<group>``, or a ``model.<path>=value`` whose value differs
            from the file's (or that the file's model does not have).
    """
    tree = architecture(model)
    keys = dict.fromkeys(override.split("=", 1)[0].lstrip("+~") for override in overrides)
    for key in keys:
        if key == "model":
            raise ValueError(f"finetune.from={source}: the architecture comes from that file; "
                             "drop the override of the model config group")
        if not key.startswith("model."):
            continue
        path = key.split(".")[1:]
        wanted = _lookup_config(config_model, path)
        try:
            saved = _lookup(tree, path)
        except KeyError:
            raise ValueError(f"{key}={wanted} contradicts finetune.from={source}: its model has "
                             f"no '{key}'") from None
        if not _same(wanted, saved):
            raise ValueError(f"{key}={wanted} contradicts finetune.from={source}, whose model "
                             f"has {key}={saved}")


def _lookup_config(node: Any, path: Sequence[str]) -> Any:
    value = OmegaConf.select(node, ".".join(path), default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_species(model: nn.Module, source: str | Path, dataset: Any, data_name: str) -> None:
    r"""Refuses training data with elements the pretrained model was not built for.

    Raises:
        ValueError: naming the elements, the data and the model file.
    """
    present = dataset.species() if hasattr(dataset, "species") else sorted(
        {int(z) for item in dataset for z in item.z.tolist()})
    unknown = sorted(set(present) - set(model.species))
    if unknown:
        raise ValueError(f"the data ({data_name}) hold elements {unknown} that the pretrained "
                         f"model {source} does not know (its species: {model.species})")


def load_pretrained(source: str | Path) -> nn.Module:
    r"""The model of a ``model.pt`` or Lightning ``.ckpt`` file (read weights-only), in
    training mode with every parameter trainable."""
    model = load_model(source)
    model.train()
    model.requires_grad_(True)
    log.info("fine-tuning %s from %s", type(model).__name__, source)
    return model


def command_line_overrides() -> list[str]:
    r"""The running Hydra job's command-line overrides (none outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def pretrained_source(cfg: DictConfig) -> str | None:
    r"""``finetune.from``: the trained model to start from, or :obj:`None`.

    Raises:
        ValueError: When ``finetune.required`` (a fine-tuning experiment) and no
            ``finetune.from`` is given.
    """
    finetune_cfg = cfg.get("finetune") or {}
    source = finetune_cfg.get("from")
    if source is None and finetune_cfg.get("required", False):
        raise ValueError("finetune.from is required by this experiment: give "
                         "finetune.from=<model.pt or .ckpt> (or finetune.required=false to "
                         "train the model config from scratch)")
    return source


def prepare_data(cfg: DictConfig, model: nn.Module, datamodule: LightningDataModule,
                 refit: bool) -> None:
    r"""Checks the training data against a pretrained model's species and, on a new run
    with ``finetune.refit_self_energies``, refits its self-energies to them."""
    datamodule.setup("fit")
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None:
        return
    source = cfg.finetune["from"]
    check_species(model, source, dataset, str(cfg.data.get("path", "data")))
    if refit and cfg.finetune.get("refit_self_energies", True):
        refit_self_energies(model, dataset)


def with_levels(model: nn.Module, levels: Sequence[str]) -> nn.Module:
    r"""``model`` with its energy head replaced by a
    :class:`~hipnn_pyg.nn.fidelity.MultiFidelityHead` of ``levels``, every level's head a
    copy of the pretrained one (the first level is the pretrained level)."""
    import copy

    from hipnn_pyg.nn.fidelity import MultiFidelityHead
    from hipnn_pyg.nn.potential import Potential

    if getattr(model, "levels", None) is not None:
        raise ValueError(f"finetune.levels: the pretrained model has levels {model.levels} "
                         "already")
    pretrained = model.energy_head
    head = MultiFidelityHead(list(levels))
    head.build(pretrained.channels, next(pretrained.parameters()))
    for level in head.levels:
        head.heads[level].load_state_dict(copy.deepcopy(pretrained.state_dict()))
    # a composed Potential, so the file records the new head (a HIPNN's flat arguments
    # would rebuild a single one)
    heads = {name: other for name, other in model.heads.items() if name != "energy"}
    return Potential(model.representation, {"energy": head, **heads})


def with_delta(model: nn.Module, delta: dict[str, Any]) -> nn.Module:
    r"""Δ-learning: ``model`` frozen, plus a new :class:`~hipnn_pyg.HIPNN` of arguments
    ``delta`` (species from the model) for the difference to the new level."""
    from hipnn_pyg.nn.fidelity import DeltaPotential
    from hipnn_pyg.nn.model import HIPNN

    model.requires_grad_(False)
    like = next(model.parameters())
    correction = HIPNN(species=tuple(model.species), **delta).to(like.dtype)
    with_zero_readouts(correction)
    return DeltaPotential(model, correction)


def with_zero_readouts(model: nn.Module) -> None:
    r"""Zeroes every energy readout: a new correction starts at exactly no correction."""
    import torch

    with torch.no_grad():
        for readout in model.energy_head.readouts:
            readout.weight.zero_()


def pretrained_model(cfg: DictConfig, source: str) -> tuple[nn.Module, FreezeSummary]:
    r"""The model of ``finetune.from``, checked against the run's command-line model
    overrides and with ``finetune.freeze`` applied, turned multi-fidelity
    (``finetune.levels``) or into a Δ model (``finetune.delta``) when asked."""
    model = load_pretrained(source)
    check_overrides(model, source, command_line_overrides(), cfg.model)
    levels, delta = cfg.finetune.get("levels"), cfg.finetune.get("delta")
    if levels and delta:
        raise ValueError("finetune.levels and finetune.delta are two methods: give one")
    if delta:
        if cfg.finetune.get("freeze", "none") not in (None, "none"):
            raise ValueError("finetune.delta freezes the whole pretrained model: leave "
                             "finetune.freeze at none")
        model = with_delta(model, OmegaConf.to_container(delta, resolve=True))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        frozen = FreezeSummary(tuple(n for n, p in model.named_parameters()
                                     if not p.requires_grad), total - trainable, trainable)
    else:
        if levels:
            model = with_levels(model, [str(level) for level in levels])
        frozen = freeze(model, cfg.finetune.get("freeze"))
    log.info("fine-tuning: %s", frozen)
    return model, frozen
