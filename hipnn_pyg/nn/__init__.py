r"""HIP-NN building blocks: sensitivities, interaction layers, heads and the model."""

from hipnn_pyg.nn.charges import HierarchicalCharges, HIPNNPotential
from hipnn_pyg.nn.heads import HierarchicalEnergy, HierarchicalReadout
from hipnn_pyg.nn.interaction import AtomLayer, HIPNNInteraction, ResidualLayer
from hipnn_pyg.nn.model import HIPNN, HIPNNOutput, energy_forces_stress
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.nn.sensitivity import CosineCutoff, InverseGaussianSensitivity

__all__ = [
    "HIPNN",
    "HIPNNOutput",
    "HIPNNInteraction",
    "AtomLayer",
    "ResidualLayer",
    "HierarchicalEnergy",
    "HierarchicalReadout",
    "HierarchicalCharges",
    "HIPNNPotential",
    "CosineCutoff",
    "InverseGaussianSensitivity",
    "energy_forces_stress",
    "predict",
]
