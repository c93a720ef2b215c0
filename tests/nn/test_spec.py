"""Model specs: captured from Python and Hydra, rebuilt safely; format-1 files upgraded
(their outputs are checked through the loader in tests/test_io.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch_geometric.data import Data

from hipnn_pyg.nn import HIPNNPotential, Potential, build_from_spec, model_spec, predict
from hipnn_pyg.nn.spec import convert_v1_state_dict, upgrade_v1
from tests.nn.helpers import ethanol, small_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def rebuilt(model: nn.Module) -> nn.Module:
    copy = build_from_spec(model_spec(model)).to(torch.float64)
    copy.load_state_dict(model.state_dict())
    return copy


def test_format_1_keys_map_to_the_new_names() -> None:
    state = torch.load(FIXTURES / "old_potential_separate.pt", weights_only=True)
    converted = convert_v1_state_dict(state["class"], state["state_dict"])
    assert "representation.interactions.1.interaction_weight" in converted
    assert "heads.energy.readouts.2.weight" in converted
    assert "heads.charges.representation.atom_layers.0.1.linear.weight" in converted
    assert not any("energy_head" in key or "charge_model" in key for key in converted)
    with pytest.raises(KeyError, match="unexpected key 'mystery.weight'"):
        convert_v1_state_dict("hipnn_pyg.nn.model.HIPNN", {"mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown class 'hipnn_pyg.nn.Other'"):
        upgrade_v1({**state, "class": "hipnn_pyg.nn.Other"})
    with pytest.raises(ValueError, match="key 'hyperparameters' missing"):
        upgrade_v1({"class": state["class"], "state_dict": {}})


def test_spec_records_every_constructor_argument() -> None:
    model = small_model(max_num_neighbors=32)
    spec = model_spec(model)
    assert spec["_target_"] == "hipnn_pyg.nn.model.HIPNN"
    assert spec["max_num_neighbors"] == 32 and spec["species"] == [1, 6, 8]
    assert spec["self_energies"] == [-13.6, -1029.0, -2041.0]
    potential = HIPNNPotential(model, small_model(hidden_channels=8), "center_of_geometry")
    nested = model_spec(potential)
    assert nested["charge_model"]["hidden_channels"] == 8
    assert nested["origin"] == "center_of_geometry"


@pytest.mark.parametrize("separate", [False, True])
def test_spec_round_trip_is_exact_and_plain_data(separate: bool) -> None:
    model = HIPNNPotential(small_model(), small_model(hidden_channels=8) if separate else None)
    spec = model_spec(model)
    buffer = io.BytesIO()
    torch.save(spec, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == spec  # no pickled objects
    copy = rebuilt(model)
    assert model_spec(copy) == spec
    z, pos = ethanol()
    a, b = predict(model, Data(z=z, pos=pos)), predict(copy, Data(z=z, pos=pos))
    for key in ("energy", "forces", "charges", "quadrupole"):
        assert torch.equal(a[key], b[key])


def test_hydra_built_model_records_its_config_tree() -> None:
    config = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf/model/hipnn.yaml")
    config.representation.species = [1, 6, 8]
    config.representation.hidden_channels = 8
    model = instantiate(config)
    assert isinstance(model, Potential)
    spec = model_spec(model)
    sensitivity = spec["representation"]["sensitivity"]
    assert sensitivity["_target_"] == "hipnn_pyg.nn.sensitivity.InverseGaussianSensitivity"
    assert sensitivity["cutoff"] == 6.5 and spec["representation"]["species"] == [1, 6, 8]
    assert spec["heads"]["energy"]["_target_"] == "hipnn_pyg.nn.heads.EnergyHead"
    assert model_spec(rebuilt(model)) == spec


def test_foreign_or_unknown_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        build_from_spec({"_target_": "os.system", "command": "true"})
    nested = model_spec(small_model())
    nested["species"] = {"_target_": "builtins.eval", "source": "1"}
    with pytest.raises(ValueError, match="refusing to build 'builtins.eval'"):
        build_from_spec(nested)
    with pytest.raises(ValueError, match="'hipnn_pyg.nn.NoSuchHead', which does not exist"):
        build_from_spec({"_target_": "hipnn_pyg.nn.NoSuchHead"})
    with pytest.raises(ValueError, match="_partial_"):
        build_from_spec({"_target_": "hipnn_pyg.nn.EnergyHead", "_partial_": True})


def test_module_without_recorded_arguments_cannot_be_saved() -> None:
    with pytest.raises(TypeError, match="Linear does not record its constructor arguments"):
        model_spec(nn.Linear(2, 1))
