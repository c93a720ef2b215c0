"""Bad inputs raise errors that name the problem."""

from __future__ import annotations

import pytest
import torch

from tests.nn.helpers import ethanol, small_model


@pytest.fixture
def model():
    return small_model()


def test_unknown_element(model) -> None:
    z, pos = ethanol()
    z[0] = 7
    with pytest.raises(ValueError, match=r"N \(Z=7\) not among the species"):
        model(z, pos)
    z[0] = 200
    with pytest.raises(ValueError, match="Z=200"):
        model(z, pos)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_positions(model, value: float) -> None:
    z, pos = ethanol()
    pos[3, 1] = value
    with pytest.raises(ValueError, match=r"NaN or inf \(atoms \[3\]\)"):
        model(z, pos)


def test_overlapping_atoms(model) -> None:
    z, pos = ethanol()
    pos[4] = pos[3] + torch.tensor([0.01, 0.0, 0.0], dtype=pos.dtype)
    with pytest.raises(ValueError, match="atoms 3 and 4 are 0.0100 Å apart"):
        model(z, pos)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda z, pos: (z, pos[:, :2]), r"pos must have shape \[num_atoms, 3\]"),
        (lambda z, pos: (z, pos[:-1]), r"pos must have shape"),
        (lambda z, pos: (z.double(), pos), "integer atomic numbers"),
        (lambda z, pos: (z[None], pos), "integer atomic numbers"),
        (lambda z, pos: (z, pos.long()), "floating-point"),
    ],
)
def test_wrong_shapes_and_types(model, change, message: str) -> None:
    z, pos = change(*ethanol())
    with pytest.raises(ValueError, match=message):
        model(z, pos)


def test_wrong_batch_and_cell_shapes(model) -> None:
    z, pos = ethanol()
    with pytest.raises(ValueError, match="batch must have shape"):
        model(z, pos, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch must be sorted"):
        model(z, pos, torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0]))
    pbc = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="add a batch dim"):
        model(z, pos, cell=torch.eye(3, dtype=torch.float64) * 10, pbc=pbc)
    with pytest.raises(ValueError, match=r"pbc must have shape"):
        model(z, pos, cell=10 * torch.eye(3, dtype=torch.float64)[None], pbc=pbc[0])
    with pytest.raises(ValueError, match="cell and pbc must be given together"):
        model(z, pos, cell=10 * torch.eye(3, dtype=torch.float64)[None])


def test_singular_cell(model) -> None:
    z, pos = ethanol()
    cell = torch.diag(torch.tensor([10.0, 10.0, 0.0], dtype=torch.float64))[None]
    with pytest.raises(ValueError, match="singular cell in graph 0"):
        model(z, pos, cell=cell, pbc=torch.ones(1, 3, dtype=torch.bool))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="distinct"):
        small_model(species=(1, 1))
    with pytest.raises(ValueError, match="beyond cutoff"):
        small_model(soft_max_distance=7.0)


def test_positions_in_another_precision_than_the_model_are_named() -> None:
    from tests.nn.helpers import ethanol, small_model

    z, pos = ethanol(torch.float32)
    with pytest.raises(ValueError, match="pos is torch.float32 but the model is torch.float64"):
        small_model()(z, pos)


@pytest.mark.parametrize("options", [{}, {"tensor_order": 1}, {"tensor_order": 2},
                                     {"tensor_order": 2, "tensor_products": True}])
def test_no_atoms_at_all_is_a_zero_energy(options: dict) -> None:
    from hipnn_pyg import energy_forces_stress
    from tests.nn.helpers import small_model

    out = energy_forces_stress(small_model(**options), torch.zeros(0, dtype=torch.long),
                               torch.zeros(0, 3, dtype=torch.float64))
    assert out["energy"].shape == (1,) and float(out["energy"].detach()) == 0.0
    assert out["forces"].shape == (0, 3)
