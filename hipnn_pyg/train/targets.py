r"""One small object per learned quantity: its loss weight, per-atom rule, metrics and
unit, shared by training (:class:`~hipnn_pyg.train.HIPNNLightningModule`) and evaluation
(``hipnn-eval``), in the spirit of SchNetPack's ``ModelOutput``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hipnn_pyg.train.losses import mse, per_atom, row_lengths

#: The loss kinds of a target: the mean square of its residual's elements, or the mean
#: over its rows (atoms, structures) of each row's Euclidean norm.
LOSS_KINDS = ("mse", "norm")


@dataclass(frozen=True)
class Target:
    r"""A quantity that the model predicts and the data label, under one name.

    Args:
        name (str): The key in both the predictions and the data, e.g. ``"forces"``.
        weight (float): Weight of its loss term; 0 for metrics only. (default: :obj:`0.0`)
        per_atom (bool): The residual is per structure and is also reported divided by
            the atom count (as ``{name}_per_atom``). (default: :obj:`False`)
        per_atom_loss (bool): The loss takes the per-atom residual (when ``per_atom``).
            (default: :obj:`False`)
        derivative (bool): Obtained by differentiating the energy, so predicting it
            needs autograd. (default: :obj:`False`)
        unit (str): Display unit of its errors (the data's unit times ``scale``).
            (default: :obj:`""`)
        scale (float): Factor from the data's unit to ``unit``. (default: :obj:`1.0`)
        loss (str): The loss term: ``"mse"``, the mean square of the residual's
            elements, or ``"norm"``, the mean over rows of each row's length
            :math:`\lVert\hat F_i - F_i\rVert` (GemNet's and fairchem's force loss,
            "L2MAE"), which weighs an atom's error by its size rather than its square,
            as a mean absolute error does; its metric is ``{name}_norm``.
            (default: :obj:`"mse"`)
    """

    name: str
    weight: float = 0.0
    per_atom: bool = False
    per_atom_loss: bool = False
    derivative: bool = False
    unit: str = ""
    scale: float = 1.0
    loss: str = "mse"

    def __post_init__(self) -> None:
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"loss of '{self.name}' is {self.loss!r}: choose one of "
                             f"{list(LOSS_KINDS)}")

    @property
    def trained(self) -> bool:
        r"""Whether the target is in the loss (weight > 0)."""
        return self.weight > 0

    @property
    def metrics(self) -> tuple[str, ...]:
        r"""Names of its error metrics: its own, ``{name}_per_atom`` if :attr:`per_atom`,
        and ``{name}_norm`` (the mean row length of the loss metric's residual) for a
        ``"norm"`` loss."""
        own = (self.name, f"{self.name}_per_atom") if self.per_atom else (self.name,)
        return (*own, self.norm_metric) if self.loss == "norm" else own

    @property
    def loss_metric(self) -> str:
        r"""The metric whose residual enters this target's loss term."""
        return f"{self.name}_per_atom" if self.per_atom and self.per_atom_loss else self.name

    @property
    def norm_metric(self) -> str:
        r"""The metric of row lengths, ``{name}_norm``: its MAE is the ``"norm"`` loss."""
        return f"{self.name}_norm"

    @property
    def loss_row(self) -> str:
        r"""The metric whose accumulated errors give the loss term: :attr:`loss_metric`
        (its MSE), or :attr:`norm_metric` (its MAE) for a ``"norm"`` loss."""
        return self.norm_metric if self.loss == "norm" else self.loss_metric

    def loss_from(self, results: Mapping[str, Mapping[str, float]]) -> float:
        r"""This target's loss term (unweighted) from a split's accumulated error
        ``results`` (``{metric: {"mae", "mse", ...}}``)."""
        return results[self.loss_row]["mae" if self.loss == "norm" else "mse"]

    def available(self, prediction: Mapping[str, Tensor], data: Any) -> bool:
        r"""Whether both the prediction and the data hold this target."""
        return self.name in prediction and getattr(data, self.name, None) is not None

    def pairs(
        self, prediction: Mapping[str, Tensor], data: Any, num_atoms: Tensor
    ) -> dict[str, tuple[Tensor, Tensor]]:
        r"""``{metric: (prediction, reference)}`` in float64 (energies of large molecules
        reach 10⁴ eV, where float32 rounding alone is ~1 meV): the target itself, and
        both divided by the atom count (``{name}_per_atom``) when :attr:`per_atom`.

        Raises:
            KeyError: The model does not predict the target or the data lack it.
        """
        if self.name not in prediction:
            raise KeyError(
                f"loss weight for '{self.name}' is > 0 but the model does not predict "
                f"'{self.name}' (it predicts {sorted(prediction)}); set its weight to 0"
            )
        reference = getattr(data, self.name, None)
        if reference is None:
            raise KeyError(
                f"loss weight for '{self.name}' is > 0 but the data have no '{self.name}' "
                f"labels; set its weight to 0 or use a data set with '{self.name}'"
            )
        predicted = prediction[self.name].double()
        reference = reference.double().view_as(predicted)
        pairs = {self.name: (predicted, reference)}
        if self.per_atom:
            pairs[f"{self.name}_per_atom"] = (per_atom(predicted, num_atoms),
                                              per_atom(reference, num_atoms))
        return pairs

    def residuals(
        self, prediction: Mapping[str, Tensor], data: Any, num_atoms: Tensor
    ) -> dict[str, Tensor]:
        r"""``{metric: prediction - reference}`` of :meth:`pairs`, of the labelled values
        only: a structure may lack a label that others in the batch carry (mixed levels
        of theory, NaN), and contributes nothing to it, not even a gradient."""
        pairs = self.pairs(prediction, data, num_atoms)
        return {metric: labelled_residual(predicted, reference)
                for metric, (predicted, reference) in pairs.items()}

    def loss_residual(
        self, prediction: Mapping[str, Tensor], data: Any, num_atoms: Tensor,
        graph_weight: Tensor | None = None,
    ) -> Tensor:
        r"""The residual whose mean square enters an ``"mse"`` loss, each structure's
        values scaled by the square root of its ``graph_weight`` ``[num_graphs]`` when
        given (per-level loss weights), so the mean square weighs them by it."""
        if graph_weight is None:
            return self.residuals(prediction, data, num_atoms)[self.loss_metric]
        root = self._row_weights(prediction, data, graph_weight).sqrt()
        predicted = prediction[self.name].double()
        scaled = {self.name: predicted * _along_rows(root, predicted)}
        reference = getattr(data, self.name, None)
        if reference is not None:
            reference = reference.double().view_as(prediction[self.name])
            data = _With(data, self.name, reference * _along_rows(root, reference))
        return self.residuals(scaled, data, num_atoms)[self.loss_metric]

    def loss_term(
        self, prediction: Mapping[str, Tensor], data: Any, num_atoms: Tensor,
        graph_weight: Tensor | None = None,
    ) -> Tensor:
        r"""This target's loss term (before its :attr:`weight`): the mean square of
        :meth:`loss_residual`, or for a ``"norm"`` loss the mean length of the labelled
        rows of the loss metric's residual (rows with any unlabelled element are left
        out), each row weighed by its structure's ``graph_weight`` when given."""
        if self.loss == "mse":
            return mse(self.loss_residual(prediction, data, num_atoms, graph_weight))
        predicted, reference = self.pairs(prediction, data, num_atoms)[self.loss_metric]
        lengths, labelled = labelled_row_lengths(predicted, reference)
        if graph_weight is not None:
            lengths = lengths * self._row_weights(prediction, data, graph_weight)[labelled]
        # a sum, not a new zero, when no row is labelled: the loss keeps its graph
        return lengths.sum() / max(lengths.numel(), 1)

    def _row_weights(self, prediction: Mapping[str, Tensor], data: Any,
                     graph_weight: Tensor) -> Tensor:
        # Each row's structure weight: per structure, or per atom (forces) by data.batch.
        weight = graph_weight.to(torch.float64)
        if prediction[self.name].size(0) != weight.numel():
            weight = weight[data.batch]
        return weight


def _along_rows(weight: Tensor, values: Tensor) -> Tensor:
    # ``[rows]`` shaped to multiply ``values`` ``[rows, ...]`` row by row.
    return weight.view(-1, *[1] * (values.dim() - 1))


def labelled_rows(reference: Tensor) -> Tensor:
    r"""Which rows of ``reference`` ``[rows, ...]`` are labelled (finite) in every
    element: a row length needs the whole row."""
    finite = torch.isfinite(reference)
    return finite.reshape(finite.size(0), math.prod(finite.shape[1:])).all(dim=1)


def labelled_row_lengths(predicted: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    r"""The lengths (:func:`~hipnn_pyg.train.losses.row_lengths`) of the rows of
    ``predicted - reference`` whose reference is labelled in every element, and which
    rows those are."""
    labelled = labelled_rows(reference)
    return row_lengths(predicted[labelled] - reference[labelled]), labelled


def labelled_residual(predicted: Tensor, reference: Tensor) -> Tensor:
    r"""``predicted - reference`` where the reference is a label (finite), flattened if
    some is not (NaN marks a structure without it); a NaN prediction stays NaN."""
    valid = torch.isfinite(reference)
    if bool(valid.all()):
        return predicted - reference
    return predicted[valid] - reference[valid]


class _With:
    r"""``data`` with one attribute replaced (the scaled reference of a weighted loss)."""

    def __init__(self, data: Any, name: str, value: Tensor) -> None:
        self._data, self._name, self._value = data, name, value

    def __getattr__(self, key: str) -> Any:
        return self._value if key == self._name else getattr(self._data, key)


def num_atoms(data: Any) -> Tensor:
    r"""Atom count of every structure of a (batched) ``data``."""
    if getattr(data, "ptr", None) is not None:
        return data.ptr[1:] - data.ptr[:-1]
    return torch.bincount(data.batch, minlength=data.num_graphs)


def derivatives(targets: Sequence[Target], data: Any = None) -> set[str]:
    r"""Names of the derivative targets (forces, stress) to compute: those trained on,
    and those that ``data`` labels (in evaluation; :obj:`None` in training)."""
    return {t.name for t in targets if t.derivative and (
        t.trained or (data is not None and getattr(data, t.name, None) is not None))}


#: The targets that get metrics whenever both the model and the data provide them
#: (``charges``: the per-atom partial charges of a charge head, in e).
KNOWN_TARGETS: dict[str, Target] = {
    "energy": Target("energy", per_atom=True, unit="meV", scale=1000.0),
    "forces": Target("forces", derivative=True, unit="meV/Å", scale=1000.0),
    "stress": Target("stress", derivative=True, unit="meV/Å³", scale=1000.0),
    "dipole": Target("dipole", unit="me·Å", scale=1000.0),
    "dipole_magnitude": Target("dipole_magnitude", unit="me·Å", scale=1000.0),
    "quadrupole": Target("quadrupole", unit="me·Å²", scale=1000.0),
    "charges": Target("charges", unit="me", scale=1000.0),
}
#: ``{metric: (unit, scale)}`` of every known target's metrics, per-atom ones included.
DISPLAY_UNITS: dict[str, tuple[str, float]] = {
    metric: (target.unit + ("/atom" if metric.endswith("_per_atom") else ""), target.scale)
    for target in KNOWN_TARGETS.values()
    for metric in ([target.name, f"{target.name}_per_atom"] if target.per_atom
                   else [target.name]) + ([target.norm_metric] if target.name == "forces" else [])
}


def build_targets(
    loss_weights: Mapping[str, float], per_atom_energy: bool = True, force_loss: str = "mse"
) -> list[Target]:
    r"""The known targets (weight 0 unless given) and any other weighted name, e.g. an
    extra head's ``"dipole"`` or ``"polarizability"``.

    Args:
        loss_weights (Mapping[str, float]): ``{name: weight}``, every weight >= 0.
        per_atom_energy (bool): Train per-structure targets (energy) on their per-atom
            residual. (default: :obj:`True`)
        force_loss (str): The forces' loss, ``"mse"`` or ``"norm"`` (see
            :class:`Target`). (default: :obj:`"mse"`)

    Raises:
        ValueError: A negative weight, or an unknown ``force_loss``.
    """
    if force_loss not in LOSS_KINDS:
        raise ValueError(f"module.force_loss={force_loss!r}: choose one of {list(LOSS_KINDS)}")
    if any(float(w) < 0 for w in loss_weights.values()):
        raise ValueError(f"loss weights must be >= 0, got {dict(loss_weights)}")
    targets = []
    for name in dict.fromkeys((*KNOWN_TARGETS, *loss_weights)):
        known = KNOWN_TARGETS.get(name, Target(name))
        targets.append(replace(known, weight=float(loss_weights.get(name, 0.0)),
                               per_atom_loss=per_atom_energy and known.per_atom,
                               loss=force_loss if name == "forces" else known.loss))
    return targets


def data_loss(
    targets: Sequence[Target], results: Mapping[str, Mapping[str, float]], split: str = "val"
) -> float:
    r"""``Σ_t weight_t · loss_t`` of the trained ``targets`` from a split's error
    ``results`` (``{metric: {"mae", "mse", ...}}``, see :meth:`Target.loss_from`): the
    loss without regularisers.

    Raises:
        KeyError: The split's data lack a trained target.
    """
    missing = [t.name for t in targets if t.trained and t.loss_row not in results]
    if missing:
        raise KeyError(f"the {split} data lack the trained target(s) {missing}: "
                       "cannot compute the validation loss")
    return sum(t.weight * t.loss_from(results) for t in targets if t.trained)


def check_labels(targets: Sequence[Target], dataset: Any) -> None:
    r"""Fails before the first step if ``dataset`` (a training split with ``has``, e.g.
    an :class:`~hipnn_pyg.data.AtomsDataset`) lacks a trained target; other datasets are
    checked per batch instead.

    Raises:
        ValueError: Naming the target, its weight and what the data hold.
    """
    if not hasattr(dataset, "has"):
        return
    for target in (t for t in targets if t.trained and not dataset.has(t.name)):
        detail = (dataset.missing_message(target.name) if hasattr(dataset, "missing_message")
                  else f"no '{target.name}' in the data")
        raise ValueError(
            f"module.loss_weights.{target.name}={target.weight} > 0, but the training data "
            f"have no '{target.name}' labels ({detail}); set its weight to 0 or use a data "
            "set that has them"
        )
