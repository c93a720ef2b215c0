"""Bad-input corpus, model side: every case names the problem (atom index, element,
shape...); the valid edge cases (a lone atom, an empty graph) work."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch, Data

from hipnn_pyg.calculator import HIPNNCalculator
from hipnn_pyg.nn import HIPNNPotential, predict
from hipnn_pyg.nn.checks import check_atoms
from tests.nn.helpers import ethanol, small_model


def _with(change: Callable[[torch.Tensor, torch.Tensor], None]) -> Data:
    z, pos = ethanol()
    change(z, pos)
    return Data(z=z, pos=pos)


def _periodic(cell: torch.Tensor) -> Data:
    z, pos = ethanol()
    return Data(z=z, pos=pos, cell=cell, pbc=torch.ones(1, 3, dtype=torch.bool))


def _set(tensor: torch.Tensor, index: tuple[int, ...], value: float) -> None:
    tensor[index] = value


# (id, data for HIPNN(z, pos, batch, cell, pbc), what the message must say)
MODEL_CASES = [
    ("unknown-element", _with(lambda z, pos: _set(z, (0,), 7)), r"N \(Z=7\) not among"),
    ("unknown-atomic-number", _with(lambda z, pos: _set(z, (2,), 150)), r"\? \(Z=150\)"),
    ("nan-position", _with(lambda z, pos: _set(pos, (3, 1), float("nan"))),
     r"NaN or inf \(atoms \[3\]\)"),
    ("inf-position", _with(lambda z, pos: _set(pos, (5, 0), float("inf"))),
     r"NaN or inf \(atoms \[5\]\)"),
    ("overlapping-atoms", _with(lambda z, pos: pos[4].copy_(pos[3] + 0.05)),
     r"atoms 3 and 4 are 0\.0866 Å apart.*overlapping"),
    ("z-float", Data(z=ethanol()[0].double(), pos=ethanol()[1]), "integer atomic numbers"),
    ("pos-2-columns", Data(z=ethanol()[0], pos=ethanol()[1][:, :2]),
     r"pos must have shape \[num_atoms, 3\] = \[9, 3\], got \[9, 2\]"),
    ("pos-integer", Data(z=ethanol()[0], pos=ethanol()[1].long()), "floating-point"),
    ("batch-unsorted", Data(z=ethanol()[0], pos=ethanol()[1],
                            batch=torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 1])),
     "batch must be sorted"),
    ("batch-wrong-length", Data(z=ethanol()[0], pos=ethanol()[1],
                                batch=torch.zeros(4, dtype=torch.long)),
     r"batch must have shape \[num_atoms\] = \[9\], got \[4\]"),
    ("cell-2d", Data(z=ethanol()[0], pos=ethanol()[1], cell=10 * torch.eye(3).double(),
                     pbc=torch.ones(1, 3, dtype=torch.bool)), "add a batch dim"),
    ("singular-cell", _periodic(torch.diag(torch.tensor([10.0, 10.0, 0.0])).double()[None]),
     "singular cell in graph 0"),
    ("nan-cell", _periodic(torch.full((1, 3, 3), float("nan"), dtype=torch.float64)),
     "cell contains NaN"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in MODEL_CASES],
                         ids=[c[0] for c in MODEL_CASES])
def test_model_names_the_problem(data: Data, message: str) -> None:
    model = small_model()
    with pytest.raises(ValueError, match=message):
        model(data.z, data.pos, data.batch, getattr(data, "cell", None),
              getattr(data, "pbc", None))


def test_stress_loss_on_molecules_names_the_cause_and_fix() -> None:
    z, pos = ethanol()
    batch = Batch.from_data_list([Data(z=z, pos=pos, cell=torch.zeros(1, 3, 3),
                                       pbc=torch.zeros(1, 3, dtype=torch.bool))])
    with pytest.raises(ValueError, match=r"stress was asked for.*no structure in the batch "
                                         r"is periodic.*Drop the stress loss"):
        predict(small_model(), batch, compute_stress=True)


def test_validate_false_skips_the_value_checks_only() -> None:
    # The checks' one read-back (and the closest pair's) go; shapes are still checked.
    model = small_model()
    z, pos = ethanol()
    torch.testing.assert_close(model(z, pos, validate=False), model(z, pos), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"pos must have shape \[num_atoms, 3\]"):
        model(z, pos[:, :2], validate=False)
    nitrogen = z.clone()
    nitrogen[0] = 7
    with pytest.raises(RuntimeError) as error:  # unchecked: the one-hot refuses its -1 row
        model(nitrogen, pos, validate=False)
    assert "not among the species" not in str(error.value)


def test_a_lone_atom_works_and_adds_its_own_energy() -> None:
    model = small_model()
    z, pos = ethanol()
    far = torch.tensor([[50.0, 0.0, 0.0]], dtype=pos.dtype)  # far beyond the cutoff
    lone = model(torch.tensor([1]), far)
    together = predict(model, Data(z=torch.cat([z, torch.tensor([1])]), pos=torch.cat([pos, far])))
    alone = model(z, pos)
    assert torch.isfinite(lone).all()
    torch.testing.assert_close(together["energy"], alone + lone)
    assert torch.count_nonzero(together["forces"][-1]) == 0


@pytest.mark.parametrize("charges", [False, True], ids=["hipnn", "hipnn-potential"])
def test_a_trailing_empty_graph_gets_zero_energy(charges: bool) -> None:
    model = HIPNNPotential(small_model()) if charges else small_model()
    z, pos = ethanol()
    empty = Data(z=torch.zeros(0, dtype=torch.long), pos=torch.zeros(0, 3, dtype=pos.dtype))
    batch = Batch.from_data_list([Data(z=z, pos=pos), empty])
    result = predict(model, batch)
    assert result["energy"].shape == (2,)
    assert result["energy"][1] == 0
    torch.testing.assert_close(result["energy"][:1], model(z, pos))
    if charges:
        assert result["dipole"].shape == (2, 3)
    assert small_model()(z, pos).shape == (1,)  # the plain call counts graphs itself


def _atoms(**changes: object) -> Atoms:
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    for name, value in changes.items():
        setattr(atoms, name, value)
    return atoms


def _nan_atoms() -> Atoms:
    atoms = _atoms()
    atoms.positions[6, 2] = np.nan
    return atoms


def _overlap_atoms() -> Atoms:
    atoms = _atoms()
    atoms.positions[8] = atoms.positions[2] + [0.1, 0.0, 0.0]
    return atoms


# (id, structure, what the message must say) for check_atoms and the calculator
ATOMS_CASES = [
    ("nan", _nan_atoms, r"start\.xyz: positions contain NaN or inf \(atoms \[6\]\)"),
    ("overlap", _overlap_atoms, r"start\.xyz: atoms 2 and 8 are 0\.1000 Å apart"),
    ("unknown-element", lambda: _atoms(numbers=[6, 6, 8, 1, 1, 1, 1, 1, 17]),
     r"start\.xyz: element\(s\) Cl \(Z=17\) not among the species .*: H, C, O"),
    ("singular-cell", lambda: _atoms(cell=[10.0, 10.0, 0.0], pbc=True),
     r"start\.xyz: singular cell"),
    ("empty", lambda: Atoms(), r"start\.xyz: the structure has no atoms"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in ATOMS_CASES],
                         ids=[c[0] for c in ATOMS_CASES])
def test_structure_check_names_the_problem(make: Callable[[], Atoms], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_atoms(make(), small_model(), name="start.xyz")


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in ATOMS_CASES[:3]],
                         ids=[c[0] for c in ATOMS_CASES[:3]])
def test_calculator_names_the_problem(make: Callable[[], Atoms], message: str) -> None:
    atoms = make()
    atoms.calc = HIPNNCalculator(small_model())
    with pytest.raises(ValueError, match=message.removeprefix(r"start\.xyz: ")):
        atoms.get_potential_energy()


def test_structure_check_accepts_a_lone_atom_and_real_cells() -> None:
    check_atoms(Atoms("H", positions=[[0.0, 0.0, 0.0]]), small_model())
    crystal = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], cell=[3.0, 3.0, 3.0], pbc=True)
    check_atoms(crystal, small_model())


def test_a_charge_loss_without_a_charge_head_names_the_fix() -> None:
    from hipnn_pyg.train.losses import target_residuals

    z, pos = ethanol()
    data = Batch.from_data_list([Data(z=z, pos=pos, dipole=torch.zeros(1, 3))])
    prediction = predict(small_model(), data, compute_forces=False)
    with pytest.raises(KeyError, match=r"'dipole' is > 0 but the model does not predict "
                                       r"'dipole'.*set its weight to 0"):
        target_residuals(prediction, data, ["dipole"], torch.tensor([9]))
