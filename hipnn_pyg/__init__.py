r"""hipnn_pyg: HIP-NN interatomic potentials for PyTorch Geometric.

``from hipnn_pyg import HIPNN`` gives the model in the style of PyG's model zoo;
:mod:`hipnn_pyg.ase` the ASE calculator, :mod:`hipnn_pyg.data` the datasets and
:mod:`hipnn_pyg.train` the Lightning training module.
"""

from hipnn_pyg.graph import radius_graph
from hipnn_pyg.nn import HIPNN, HIPNNOutput, energy_forces_stress

__version__ = "0.1.0"

__all__ = ["HIPNN", "HIPNNOutput", "energy_forces_stress", "radius_graph", "__version__"]
