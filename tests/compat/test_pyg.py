"""The PyG internals of hipnn_pyg.compat.pyg: a Data's attribute store, and what
Batch.from_data_list records; a gathered batch splits back exactly like a collated one."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data

from hipnn_pyg.compat import pyg as compat


def test_the_attribute_store_is_what_attributes_read() -> None:
    data = Data()
    compat.attribute_store(data)["z"] = torch.tensor([1, 8])
    assert torch.equal(data.z, torch.tensor([1, 8])) and data.keys() == ["z"]


def test_recorded_collation_matches_from_data_list() -> None:
    graphs = [Data(z=torch.tensor([1, 8, 1]), energy=torch.tensor([1.0])),
              Data(z=torch.tensor([6]), energy=torch.tensor([2.0]))]
    collated = Batch.from_data_list(graphs)
    for name in ("_num_graphs", "_slice_dict", "_inc_dict"):  # what collation records
        assert hasattr(collated, name), name
    batch = Batch(_base_cls=Data)
    batch.z, batch.energy = collated.z, collated.energy
    batch.batch, batch.ptr = collated.batch, collated._slice_dict["z"]
    compat.record_collation(batch, 2, dict(collated._slice_dict),
                            dict(collated._inc_dict))
    assert batch.num_graphs == 2
    for ours, theirs in zip(batch.to_data_list(), graphs, strict=True):
        assert torch.equal(ours.z, theirs.z) and torch.equal(ours.energy, theirs.energy)
