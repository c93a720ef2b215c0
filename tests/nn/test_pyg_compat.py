"""HIPNN is called like PyG's SchNet and compiles with torch.compile."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.models import SchNet

from hipnn_pyg import HIPNN, radius_graph
from hipnn_pyg.nn import HIPNNInteraction
from tests.nn.helpers import ethanol


def molecules() -> Batch:
    z, pos = ethanol(torch.float32)
    return Batch.from_data_list([Data(z=z, pos=pos), Data(z=z[:6], pos=pos[:6] * 1.05)])


def zoo_step(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """What user code written for PyG's model zoo does: call, regress, backprop."""
    energy = model(batch.z, batch.pos, batch.batch)
    loss = energy.square().mean()
    loss.backward()
    return energy


def test_runs_where_schnet_runs() -> None:
    batch = molecules()

    def interaction_graph(pos: torch.Tensor, batch: torch.Tensor):
        # torch_geometric's own radius_graph needs pyg-lib, absent here; ours stands in.
        graph = radius_graph(pos, 5.0, batch)
        return graph.edge_index, graph.distances

    schnet = SchNet(hidden_channels=16, num_filters=16, num_interactions=1, cutoff=5.0,
                    interaction_graph=interaction_graph)
    hipnn = HIPNN(hidden_channels=16, num_sensitivities=8)
    reference = zoo_step(schnet, batch)
    energy = zoo_step(hipnn, batch)
    assert energy.shape == reference.view(-1).shape == (2,)
    assert all(p.grad is not None for p in hipnn.representation.interactions.parameters())
    assert isinstance(hipnn.representation.interactions[0], MessagePassing)
    assert isinstance(hipnn.representation.interactions[0], HIPNNInteraction)


def test_torch_compile_matches_eager() -> None:
    batch = molecules()
    model = HIPNN(hidden_channels=16, num_sensitivities=8).eval()
    compiled = torch.compile(model, dynamic=True)
    with torch.no_grad():
        expected = model(batch.z, batch.pos, batch.batch)
        # float32 kernels fused differently: agreement to float32 rounding.
        close = dict(rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(compiled(batch.z, batch.pos, batch.batch), expected, **close)
        # A batch of a different size reuses the dynamic-shape graph.
        single = molecules().get_example(0)
        torch.testing.assert_close(
            compiled(single.z, single.pos), model(single.z, single.pos), **close
        )
