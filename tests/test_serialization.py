"""Model files: exact round trips in the saved precision, weights-only loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase import Atoms
from torch import nn
from torch_geometric.data import Data

from hipnn_pyg.calculator import atoms_to_batch
from hipnn_pyg.nn import HIPNNPotential
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import UnsafeFileError, load_model, model_state, save_model, torch_load
from tests.nn.helpers import ethanol, small_model, trained_looking


def _energy_forces(model: nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    result = predict(model, atoms_to_batch(atoms, dtype=dtype), compute_forces=True)
    return result["energy"].detach(), result["forces"].detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["HIPNN", "HIPNNPotential"])
def test_round_trip_is_bitwise_in_the_saved_precision(tmp_path: Path, dtype: torch.dtype,
                                                      kind: str) -> None:
    model = small_model(dtype)
    model = trained_looking(HIPNNPotential(model) if kind == "HIPNNPotential" else model)
    path = tmp_path / "nested" / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    energy, forces = _energy_forces(model, dtype)
    loaded_energy, loaded_forces = _energy_forces(loaded, dtype)
    assert torch.equal(loaded_energy, energy) and torch.equal(loaded_forces, forces)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.species == model.species
    assert list(path.parent.iterdir()) == [path]  # no temporary left behind


def test_files_without_a_recorded_dtype_load_in_their_weights_precision(tmp_path: Path) -> None:
    model = trained_looking(small_model(torch.float64))
    state = model_state(model)
    assert state["dtype"] == "float64"
    del state["dtype"]  # as files written before the precision was recorded
    torch.save(state, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert torch.equal(_energy_forces(loaded, torch.float64)[0],
                       _energy_forces(model, torch.float64)[0])


def test_foreign_and_broken_files_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="other.pt.*key 'class' missing"):
        load_model(path)
    state = model_state(small_model())
    torch.save({**state, "spec": {**state["spec"], "_target_": "os.system"}}, path)
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        load_model(path)
    nested = model_state(HIPNNPotential(small_model()))
    nested["spec"]["energy_model"]["_target_"] = "subprocess.Popen"
    torch.save(nested, path)
    with pytest.raises(ValueError, match="refusing to build 'subprocess.Popen'"):
        load_model(path)
    spec = {"_target_": "hipnn_pyg.serialization.torch_load", "path": "x"}
    torch.save({**state, "spec": spec}, path)
    with pytest.raises(ValueError,
                       match="'hipnn_pyg.serialization.torch_load': not a torch module"):
        load_model(path)
    old_format = {"class": "os.system", "hyperparameters": {}, "state_dict": {}}
    torch.save(old_format, path)
    with pytest.raises(ValueError, match="refusing to build class 'os.system' outside hipnn_pyg"):
        load_model(path)
    torch.save({**state, "state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"(?s)other.pt: the weights do not fit .*Missing"):
        load_model(path)
    save_model(small_model(), path)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="cannot read .*other.pt"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


class RunsCode:
    r"""A pickle payload: unpickling it creates ``marker`` (stands for any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def crafted_model_file(path: Path, marker: Path) -> Path:
    r"""A valid-looking model file whose pickle runs code when fully unpickled."""
    torch.save({**model_state(small_model()), "payload": RunsCode(marker)}, path)
    return path


def test_crafted_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = crafted_model_file(tmp_path / "model.pt", marker)
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*model\.pt: it holds Python "
                       r"objects beyond tensors and plain containers.*could run arbitrary code"):
        load_model(path)
    with pytest.raises(UnsafeFileError, match="model.pt"):
        torch_load(path)
    assert not marker.exists()
    # the payload is live: a full unpickling does run it (so the test above can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", ["old_hipnn", "old_potential_shared", "old_potential_separate"])
def test_format_1_files_load_and_predict_as_before(name: str, tmp_path) -> None:
    reference = torch.load(FIXTURES / "old_format_reference.pt", weights_only=True)
    data = Data(z=reference["z"], pos=reference["pos"], batch=reference["batch"])
    model = load_model(FIXTURES / f"{name}.pt")
    assert next(model.parameters()).dtype == torch.float64  # the precision it was saved in
    out = predict(model, data)
    assert torch.equal(out["energy"], reference[f"{name}.energy"])
    # Bitwise at the redesign; since then the environment-sum kernel and the
    # sensitivities' own backward sum in another order: float64 rounding (~1e-15) only.
    for key in ("forces", "charges", "dipole", "quadrupole"):
        if f"{name}.{key}" in reference:
            torch.testing.assert_close(out[key], reference[f"{name}.{key}"], atol=1e-12, rtol=0)
    # saved again, it is a format-2 file: the spec that built it, plain data only
    save_model(model, tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    assert state["format_version"] == 2 and "class" not in state
    assert state["spec"]["_target_"].startswith("hipnn_pyg.nn.model.HIPNN")
    assert torch.equal(predict(load_model(tmp_path / "new.pt"), data)["forces"], out["forces"])


def test_every_model_file_answers_the_model_zoo_call_with_energies(tmp_path: Path) -> None:
    # One forward contract: old formats, a HIP-NN, one with charges, one composed from a
    # config all return the energies tensor from model(z, pos), and outputs() the dict.
    from hipnn_pyg import HIPNN
    from hipnn_pyg.nn import HIPNNPotential

    hipnn = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=1,
                  soft_max_distance=4.0, cutoff=4.5).double()
    files = [FIXTURES / f"{name}.pt" for name in
             ("old_hipnn", "old_potential_shared", "old_potential_separate")]
    for name, model in {"hipnn": hipnn, "charges": HIPNNPotential(hipnn)}.items():
        save_model(model, tmp_path / f"{name}.pt")
        files.append(tmp_path / f"{name}.pt")
    reference = torch.load(FIXTURES / "old_format_reference.pt", weights_only=True)
    z, pos = reference["z"][reference["batch"] == 0], reference["pos"][reference["batch"] == 0]
    for path in files:
        model = load_model(path)
        energy = model(z, pos)
        assert isinstance(energy, torch.Tensor) and energy.shape == (1,), path.name
        torch.testing.assert_close(model.outputs(z, pos)["energy"], energy, rtol=0, atol=0)


def test_load_model_builds_the_model_on_the_device_asked_for(tmp_path: Path) -> None:
    from hipnn_pyg import HIPNN

    save_model(HIPNN(species=(1, 8), hidden_channels=8, num_interactions=1), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} == {"meta"}
    if torch.cuda.is_available():
        model = load_model(tmp_path / "m.pt", map_location="cuda")
        assert {p.device.type for p in model.parameters()} == {"cuda"}
