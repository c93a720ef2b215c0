"""Model files: round trip and atomic writes."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg.io import atomic_torch_save, load_model, save_model
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
