"""Model files: round trip and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from hipnn_pyg.io import atomic_torch_save, load_model, save_model
from hipnn_pyg.nn import predict
from tests.nn.helpers import ethanol, small_model


def test_save_load_round_trip(tmp_path) -> None:
    model = small_model()
    path = tmp_path / "nested" / "model.pt"
    save_model(model, path)
    loaded = load_model(path).double()
    z, pos = ethanol()
    torch.testing.assert_close(loaded(z, pos), model(z, pos))
    assert loaded.species == model.species
    assert list(path.parent.iterdir()) == [path]  # no temporary left behind


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_model(small_model(), path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_foreign_file_is_refused(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="key 'class' missing"):
        load_model(path)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", ["old_hipnn", "old_potential_shared", "old_potential_separate"])
def test_format_1_files_load_and_predict_as_before(name: str, tmp_path) -> None:
    reference = torch.load(FIXTURES / "old_format_reference.pt", weights_only=True)
    data = Data(z=reference["z"], pos=reference["pos"], batch=reference["batch"])
    model = load_model(FIXTURES / f"{name}.pt")
    assert next(model.parameters()).dtype == torch.float64  # the precision it was saved in
    out = predict(model, data)
    for key in ("energy", "forces", "charges", "dipole", "quadrupole"):
        if f"{name}.{key}" in reference:
            assert torch.equal(out[key], reference[f"{name}.{key}"]), key
    # saved again, it is a format-2 file: the spec that built it, plain data only
    save_model(model, tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    assert state["format_version"] == 2 and "class" not in state
    assert state["spec"]["_target_"].startswith("hipnn_pyg.nn.model.HIPNN")
    assert torch.equal(predict(load_model(tmp_path / "new.pt"), data)["forces"], out["forces"])
