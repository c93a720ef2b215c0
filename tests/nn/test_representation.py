"""The representation: per-layer features, one sensitivity per layer, the pair list."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg import HIPNN
from hipnn_pyg.nn import HIPNNRepresentation, InverseGaussianSensitivity
from tests.nn.helpers import ethanol


def representation(**kwargs: object) -> HIPNNRepresentation:
    options: dict[str, object] = dict(
        species=(1, 6, 8), hidden_channels=8, num_interactions=2, num_atom_layers=2,
        sensitivity=InverseGaussianSensitivity(4, 0.8, 3.5, cutoff=4.0),
    )
    options.update(kwargs)
    return HIPNNRepresentation(**options).double()  # type: ignore[arg-type]


def test_features_of_every_layer_and_the_graph() -> None:
    model = representation()
    z, pos = ethanol()
    out = model(z, pos)
    assert model.channels == [3, 8, 8]
    assert [tuple(x.shape) for x in out.features] == [(9, 3), (9, 8), (9, 8)]
    one_hot = out.features[0]
    assert torch.equal(one_hot.argmax(-1), torch.tensor([1, 1, 2, 0, 0, 0, 0, 0, 0]))
    assert out.num_graphs == 1 and torch.equal(out.batch, torch.zeros(9, dtype=torch.long))
    assert float(out.graph.distances.max()) < model.cutoff == 4.0


def test_each_interaction_learns_its_own_sensitivity() -> None:
    template = InverseGaussianSensitivity(4, 0.8, 3.5, cutoff=4.0)
    model = representation(sensitivity=template)
    first, second = (layer.sensitivity for layer in model.interactions)
    assert first is not template and first is not second
    with torch.no_grad():
        first.sigma.add_(1.0)
    assert not torch.equal(first.sigma, second.sigma)
    assert not any(p is template.sigma for p in model.parameters())


def test_num_graphs_covers_trailing_empty_graphs() -> None:
    z, pos = ethanol()
    out = representation()(z, pos, torch.zeros_like(z), num_graphs=3)
    assert out.num_graphs == 3


def test_bad_species_and_sensitivity_beyond_cutoff() -> None:
    with pytest.raises(ValueError, match="distinct Z"):
        representation(species=(1, 1))
    with pytest.raises(ValueError, match="soft_max_distance=5.0 Å lies beyond cutoff=4.0"):
        InverseGaussianSensitivity(4, 0.8, 5.0, cutoff=4.0)


@pytest.mark.parametrize("num_interactions", [1, 2, 4, 6])
def test_untrained_scales_stay_bounded_with_depth(num_interactions: int) -> None:
    # hippynn-like initialisation: features stay O(1) (about 2 by the third interaction,
    # 5 by the sixth, each of them 4 layers deep); the former Glorot residuals grew to 14
    # by the third and 111 by the sixth, with untrained forces of 10^2-10^3 eV/Å
    from hipnn_pyg.data import RMD17Dataset
    from hipnn_pyg.nn.predict import predict
    from hipnn_pyg.train.resolvers import repo_root

    data = RMD17Dataset(repo_root() / "data/rmd17_ethanol/rmd17_ethanol_train_01.npz")
    batch = data.gather(range(20))
    for seed in range(3):
        torch.manual_seed(seed)
        model = HIPNN(species=(1, 6, 8), hidden_channels=64, num_interactions=num_interactions,
                      num_atom_layers=3, cutoff=5.5, num_sensitivities=20)
        with torch.no_grad():
            features = model.representation(batch.z, batch.pos, batch.batch).features
        scale = float(features[-1].pow(2).mean().sqrt())
        assert scale < 2.0 * num_interactions, (seed, scale)
        forces = predict(model, batch)["forces"]
        assert float(forces.pow(2).mean().sqrt()) < 5.0 * num_interactions, seed
