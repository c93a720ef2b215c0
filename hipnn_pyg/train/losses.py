r"""Loss terms of HIP-NN training, as small pure functions.

The total loss (Lubbers et al. 2018, eq. 10, in hippynn's practical form) is

.. math::
    L = \sum_t c_t \, \mathrm{MSE}_t + \lambda_H R_\mathrm{hier} + \lambda_2 \sum |w|^2,

with one mean-squared error per target ``t`` (energy, forces, stress, dipole, ...);
the forces may instead take the mean over atoms of :math:`\lVert\hat F_i - F_i\rVert`
(``force_loss="norm"``, :func:`row_lengths`).

Conventions (all in the data's units, eV and Å):

* ``energy``: by default the residual is divided by the number of atoms of each
  structure, ``((E - Ê) / N)²``, so that the weight does not depend on system size
  and molecules and large cells mix in one batch.
* vector and tensor targets (``forces``, ``stress``, ``dipole``, ...): mean over all
  components, so ``forces`` is the mean over atoms *and* x, y, z of ``(F - F̂)²``
  (one third of the per-atom ``|F - F̂|²`` of the paper).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


def residual(prediction: Tensor, target: Tensor) -> Tensor:
    r"""``prediction - target`` in float64 (energies of large molecules reach 10⁴ eV,
    where float32 rounding alone is ~1 meV), with ``target`` reshaped to match."""
    return prediction.double() - target.double().view_as(prediction)


def mse(residual: Tensor) -> Tensor:
    r"""Mean of the squared residual over all its elements (0 for an empty tensor)."""
    if residual.numel() == 0:
        return residual.new_zeros(())
    return residual.pow(2).mean()


def row_lengths(residual: Tensor) -> Tensor:
    r"""The Euclidean length of each row of ``residual`` ``[rows, ...]`` (the absolute
    value of ``[rows]``): per atom, :math:`\lVert\hat F_i - F_i\rVert` of forces."""
    # an explicit width: reshape(0, -1) is ambiguous for a batch without labelled rows
    return residual.reshape(residual.size(0), math.prod(residual.shape[1:])).norm(dim=1)


def per_atom(residual: Tensor, num_atoms: Tensor) -> Tensor:
    r"""Divides per-structure residuals ``[num_graphs]`` by atom counts ``[num_graphs]``."""
    return residual / num_atoms.to(residual.dtype).view_as(residual)


def hierarchicality(
    layer_energy: Tensor, batch: Tensor, num_graphs: int, eps: float = 1e-12
) -> Tensor:
    r"""hippynn's hierarchicality penalty, averaged over structures.

    With :math:`\hat{E}^\ell_n = \sum_{i \in n} \hat{E}^\ell_i` the energy of layer
    :math:`\ell` of structure :math:`n` and :math:`e_\ell = (\hat{E}^\ell_n)^2`,

    .. math::
        R_n = \sum_{\ell \ge 1} \frac{e_\ell}{e_\ell + e_{\ell-1}},

    which is small when every layer's contribution is small against the one before.
    Returns :math:`\frac{1}{G}\sum_n R_n`.

    Args:
        layer_energy (torch.Tensor): Per-atom, per-layer energies
            ``[num_atoms, num_layers]``, layer 0 first.
        batch (torch.Tensor): Structure index of each atom ``[num_atoms]``.
        num_graphs (int): Number of structures.
        eps (float): Guards the division when two layers are both exactly zero.
    """
    if layer_energy.size(-1) < 2 or num_graphs == 0:
        return layer_energy.new_zeros(())
    molecule = scatter(layer_energy, batch, dim=0, dim_size=num_graphs, reduce="sum")
    squared = molecule.pow(2)
    ratio = squared[:, 1:] / (squared[:, 1:] + squared[:, :-1] + eps)
    return ratio.sum(dim=-1).mean()


def regularized_weights(model: nn.Module) -> list[Tensor]:
    r"""The weights that the L2 penalty acts on: every weight matrix of the
    interaction, on-site and readout layers, but not biases, sensitivity centres and
    widths, or the layer-0 readout (the fitted per-species self-energies)."""
    holder = getattr(model, "energy_head", None) or model
    excluded = {id(w) for w in getattr(holder, "self_energy_weights", lambda: [])()}
    weights = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in excluded:
            continue
        if name.endswith("weight") and parameter.dim() >= 2:
            weights.append(parameter)
    return weights


def l2_penalty(weights: Iterable[Tensor]) -> Tensor:
    r"""Sum of squares of ``weights`` (0 if there are none)."""
    terms = [w.pow(2).sum() for w in weights]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def target_residuals(
    prediction: Mapping[str, Tensor],
    data: object,
    targets: Iterable[str],
    num_atoms: Tensor,
    per_atom_energy: bool = True,
) -> dict[str, Tensor]:
    r"""Loss residuals ``prediction - reference`` of every target in ``targets``, by the
    rules of :class:`~hipnn_pyg.train.targets.Target` (energies divided by the atom count
    when ``per_atom_energy``).

    Raises:
        KeyError: A target that the model does not predict or the data lack,
            with a message naming it.
    """
    from hipnn_pyg.train.targets import build_targets  # targets.py imports this module

    names = list(targets)
    rules = {t.name: t for t in build_targets(dict.fromkeys(names, 1.0), per_atom_energy)}
    return {name: rules[name].loss_residual(prediction, data, num_atoms) for name in names}


def weighted_loss(residuals: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    r"""``Σ_t weights[t] · MSE(residuals[t])`` over the targets in ``residuals``."""
    total = None
    for name, value in residuals.items():
        term = weights[name] * mse(value)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no target has a loss weight > 0: nothing to train on")
    return total
