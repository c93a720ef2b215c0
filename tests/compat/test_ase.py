"""The ASE bridge draws the momenta ASE's deprecated MaxwellBoltzmannDistribution drew,
without its warning."""

from __future__ import annotations

import warnings

import numpy as np
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from hipnn_pyg.compat.ase import thermalize


def test_thermalize_draws_the_deprecated_functions_momenta_silently() -> None:
    ours, theirs = molecule("CH3CH2OH"), molecule("CH3CH2OH")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from ASE
        thermalize(ours, 300.0, rng=np.random.default_rng(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(theirs, temperature_K=300.0, rng=np.random.default_rng(7))
    assert np.abs(ours.get_momenta()).max() > 0
    np.testing.assert_array_equal(ours.get_momenta(), theirs.get_momenta())
