"""The potential: one representation, named heads, a dict of outputs; HIPNN is one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch_geometric.data import Data

from hipnn_pyg import HIPNN, HIPNNPotential, Potential
from hipnn_pyg.nn import EnergyHead, InverseGaussianSensitivity
from hipnn_pyg.nn.representation import HIPNNRepresentation
from tests.nn.helpers import ethanol, small_model

CONF = Path(__file__).resolve().parents[2] / "conf"


def composed(name: str, *overrides: str) -> Potential:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF / "model")):
        return instantiate(compose(config_name=name, overrides=list(overrides)))


def test_parameter_names_are_stable_and_say_where_they_live() -> None:
    names = dict(small_model().named_parameters())
    assert "representation.interactions.1.interaction_weight" in names
    assert "representation.interactions.0.sensitivity.inverse_mu" in names
    assert "representation.atom_layers.1.0.linear.weight" in names
    assert "heads.energy.readouts.2.weight" in names


def test_composed_config_is_the_flat_hipnn() -> None:
    flat = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=2, num_atom_layers=2,
                 num_sensitivities=4, soft_max_distance=5.0, cutoff=5.5).double()
    model = composed("hipnn_small", "representation.species=[1,6,8]",
                     "representation.hidden_channels=8",
                     "representation.sensitivity.num_sensitivities=4").double()
    assert type(model) is Potential and model.cutoff == 5.5
    model.load_state_dict(flat.state_dict())  # same parts, same names
    z, pos = ethanol()
    assert torch.equal(model(z, pos), flat(z, pos))  # one call contract for both
    assert torch.equal(model.outputs(z, pos)["energy"], flat(z, pos))


def test_charges_config_adds_a_charge_head() -> None:
    model = composed("hipnn_charges", "representation.species=[1,6,8]",
                     "representation.hidden_channels=8").double()
    z, pos = ethanol()
    out = model.outputs(z, pos, total_charge=torch.tensor([1.0]))
    assert {"energy", "forces", "charges"} - set(out) == {"forces"}
    assert abs(float(out["charges"].sum()) - 1.0) < 1e-12


def test_hipnn_potential_shares_the_energy_models_parts() -> None:
    energy_model = small_model()
    model = HIPNNPotential(energy_model)
    assert model.representation is energy_model.representation
    assert model.heads["energy"] is energy_model.heads["energy"]
    z, pos = ethanol()
    assert torch.equal(model(z, pos), energy_model(z, pos))
    out = predict_all(model, z, pos)
    assert torch.equal(out["energy"], energy_model(z, pos))
    assert torch.equal(model.electrostatics(z, pos)["charges"], out["charges"])


def predict_all(model: Potential, z: torch.Tensor, pos: torch.Tensor) -> dict:
    from hipnn_pyg.nn import predict
    return predict(model, Data(z=z, pos=pos), compute_forces=False)


def test_two_heads_with_the_same_output_are_an_error() -> None:
    representation = HIPNNRepresentation(
        (1, 6, 8), InverseGaussianSensitivity(4, 0.8, 3.5, cutoff=4.0), hidden_channels=8
    )
    with pytest.raises(ValueError, match="heads 'energy' and 'other' both return 'energy'"):
        Potential(representation, {"energy": EnergyHead(), "other": EnergyHead()})
    fidelity = Potential(representation, {"energy": EnergyHead(),
                                          "cc": EnergyHead(output="energy_cc")})
    z, pos = ethanol(torch.float32)
    out = fidelity.outputs(z, pos)
    assert set(out) == set(fidelity.output_names)
    assert {"energy", "energy_cc", "atom_energy_cc"} <= set(out)
