"""Structures of the loop: labels a data set's frames share."""

from __future__ import annotations

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from hipnn_pyg.active.structures import common_labels
from tests.active.helpers import copper


def test_a_data_set_keeps_the_labels_every_frame_has() -> None:
    # start frames with charges (GFN2) beside an oracle's energies and forces alone
    rich, plain = copper(0), copper(1)
    forces = np.ones((len(rich), 3))
    rich.calc = SinglePointCalculator(rich, energy=-1.0, forces=forces,
                                      charges=np.zeros(len(rich)))
    plain.calc = SinglePointCalculator(plain, energy=-2.0, forces=forces)
    first, second = common_labels([rich, plain])
    assert set(first.calc.results) == {"energy", "forces"}
    assert first.calc.results["energy"] == -1.0
    np.testing.assert_array_equal(first.positions, rich.positions)
    assert second is plain  # nothing to drop: the frame itself
    assert set(rich.calc.results) == {"energy", "forces", "charges"}  # input untouched
