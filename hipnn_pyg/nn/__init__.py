r"""HIP-NN building blocks: sensitivities, interaction layers, the representation,
heads, the potential and the model-zoo front doors."""

from hipnn_pyg.nn.fidelity import DeltaPotential, MultiFidelityHead
from hipnn_pyg.nn.forces import energy_forces_stress
from hipnn_pyg.nn.heads import ChargeHead, EnergyHead, HierarchicalReadout
from hipnn_pyg.nn.interaction import AtomLayer, HIPNNInteraction, ResidualLayer
from hipnn_pyg.nn.model import HIPNN, HIPNNPotential
from hipnn_pyg.nn.potential import HIPNNOutput, Potential
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.nn.representation import HIPNNRepresentation, RepresentationOutput
from hipnn_pyg.nn.sensitivity import CosineCutoff, InverseGaussianSensitivity
from hipnn_pyg.nn.spec import build_from_spec, model_spec

__all__ = [
    "DeltaPotential",
    "MultiFidelityHead",
    "HIPNN",
    "HIPNNOutput",
    "HIPNNPotential",
    "Potential",
    "HIPNNRepresentation",
    "RepresentationOutput",
    "HIPNNInteraction",
    "AtomLayer",
    "ResidualLayer",
    "HierarchicalReadout",
    "EnergyHead",
    "ChargeHead",
    "CosineCutoff",
    "InverseGaussianSensitivity",
    "energy_forces_stress",
    "predict",
    "model_spec",
    "build_from_spec",
]
