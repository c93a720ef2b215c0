"""Shared small systems for the MD tests."""

from __future__ import annotations

import functools

import torch
from ase import Atoms
from ase.optimize import BFGS

from hipnn_pyg.calculator import HIPNNCalculator
from hipnn_pyg.nn import HIPNNPotential
from tests.nn.helpers import ethanol, small_model


def relaxed_ethanol(charges: bool = True) -> tuple[Atoms, HIPNNCalculator]:
    """Ethanol relaxed on a fixed small float64 model (built once per session with a
    fixed seed), so that MD starts near a minimum of that model and stays well
    behaved. Returns a fresh copy of the atoms and the shared calculator."""
    atoms, calc = _relaxed(charges)
    return atoms.copy(), calc


@functools.cache
def _relaxed(charges: bool) -> tuple[Atoms, HIPNNCalculator]:
    torch.manual_seed(1)
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    model = HIPNNPotential(small_model()) if charges else small_model()
    calc = HIPNNCalculator(model)
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    atoms.calc = None
    return atoms, calc
