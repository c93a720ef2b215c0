r"""The models of ``same_loop.py``, each behind one energy-and-forces function: hipnn_pyg's
HIPNN, LANL's hippynn (``pip install hippynn``) and MACE (``pip install mace-torch``,
the ``peers`` extra), with each implementation's standard start from the training data.

* ours: per-species self-energies fitted by least squares on the training split, then
  shifted by a fit of the untrained network's own energy residuals
  (:func:`hipnn_pyg.train.self_energy.initialize_self_energies`, as ``hipnn-train``
  does), so the untrained model starts at the data's energy level rather than tens of
  eV away; ``readout_decay`` also scales the higher energy readouts down, as hippynn
  does (``hipnn-train``'s ``initial_readout_decay``);
* MACE: MACE's default model (``--model MACE``: ``ScaleShiftMACE`` with shift 0, the
  interaction energies scaled by the RMS of the training forces, E0s by least squares
  on the training split's element counts, the average number of neighbours of the
  training frames), built as ``mace/tools/model_script_utils.py`` builds it from
  ``mace/cli/run_train.py``'s defaults;
* hippynn: its own ``hierarchical_energy_initialization`` (E0s by least squares, frozen;
  the higher readouts scaled by 1e-2, 1e-4, ...).

Every function takes ``z [B, A]``, ``pos [B, A, 3]`` (one molecule, fixed atom count)
and returns ``(energy [B], forces [B, A, 3])`` in eV and eV/Å, float32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

SHAPE = dict(features=64, interactions=3, atom_layers=3, sensitivities=20,
             soft_min=0.75, soft_max=5.0, cutoff=5.5)
SPECIES = (1, 6, 7, 8)

#: (z [B, A], pos [B, A, 3], create_graph) -> (energy [B], forces [B, A, 3])
EnergyForces = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor]]

#: MACE's sizes: the rMD17-style model (68,464 parameters on ethanol) and a smaller one
#: for a second point of the accuracy-against-speed figure; the rest is run_train's
#: defaults (8 Bessel functions, polynomial cutoff p = 5, radial MLP [64, 64, 64],
#: MLP irreps 16x0e, residual interaction blocks after a plain first one, SiLU gates).
MACE_SIZES: dict[str, dict[str, Any]] = {
    "mace": dict(hidden_irreps="32x0e+32x1o", max_ell=2, correlation=2, num_interactions=2,
                 r_max=5.0),
    "mace_small": dict(hidden_irreps="16x0e+16x1o", max_ell=1, correlation=2,
                       num_interactions=2, r_max=5.0),
}


def ours(tensor_order: int, shape: dict = SHAPE, tensor_products: bool = False,
         ) -> tuple[torch.nn.Module, EnergyForces]:
    r"""hipnn_pyg's HIPNN of ``shape`` and its energy-and-forces function.

    Args:
        tensor_order: 0 for HIP-NN, 1 or 2 for HIP-NN-TS.
        tensor_products: with order 2, the HIP-HOP-NN product invariants too.
        shape: features, interactions, atom_layers, sensitivities, soft_min, soft_max
            and cutoff (Å), as :data:`SHAPE`.
    """
    from hipnn_pyg import HIPNN

    model = HIPNN(species=SPECIES, hidden_channels=shape["features"],
                  num_interactions=shape["interactions"], num_atom_layers=shape["atom_layers"],
                  num_sensitivities=shape["sensitivities"], soft_min_distance=shape["soft_min"],
                  soft_max_distance=shape["soft_max"], cutoff=shape["cutoff"],
                  tensor_order=tensor_order, tensor_products=tensor_products)

    def run(z: Tensor, pos: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        count, atoms = z.shape
        flat = pos.reshape(-1, 3).detach().requires_grad_(True)
        energy = model(z.reshape(-1), flat, torch.arange(count).repeat_interleave(atoms))
        (gradient,) = torch.autograd.grad(energy.sum(), flat, create_graph=create_graph)
        return energy.float(), -gradient.view(count, atoms, 3)

    return model, run


def fit_initial_energy(model: torch.nn.Module, train: dict[str, Tensor], offset: float,
                       readout_decay: float | None = None) -> None:
    r"""Fits ``model``'s self-energies on the training frames' energies less ``offset``,
    then shifts them by a fit of the untrained network's residuals (what ``hipnn-train``
    does before its first step, ``fit_self_energies`` and ``fit_network_offset``).

    Args:
        model: a hipnn_pyg model with all-zero self-energies.
        train: the training frames (``z``, ``pos``, ``energy``).
        offset: subtracted from the energies, as the loop does (eV).
        readout_decay: hippynn's decay of the higher layers' readouts (layer n scaled
            by ``readout_decay ** (2 ** (n - 1))``); ``None`` leaves them.
    """
    from hipnn_pyg.train.self_energy import initialize_self_energies, scale_readouts

    if readout_decay is not None:
        scale_readouts(model, readout_decay)
    with warnings.catch_warnings():  # one molecule: the counts have rank 1, as expected
        warnings.simplefilter("ignore", UserWarning)
        initialize_self_energies(model, _frames(train, offset), network_offset=True)


def _frames(train: dict[str, Tensor], offset: float) -> list:
    from torch_geometric.data import Data

    return [Data(z=z, pos=pos, energy=(energy - offset).reshape(1))
            for z, pos, energy in zip(train["z"], train["pos"], train["energy"], strict=True)]


def refit_energy(model: torch.nn.Module, train: dict[str, Tensor], offset: float) -> None:
    r"""Shifts a trained model's self-energies by a least-squares fit of its residuals on
    the training frames (energies less ``offset``), as ``hipnn-train`` ends
    (``refit_self_energies``); forces do not change."""
    from hipnn_pyg.train.self_energy import refit_self_energies

    with warnings.catch_warnings():  # one molecule: rank 1, as expected
        warnings.simplefilter("ignore", UserWarning)
        refit_self_energies(model, _frames(train, offset))


def hippynn_available() -> bool:
    r"""Whether hippynn is importable (the peer of the benchmarks)."""
    try:
        import hippynn  # noqa: F401
    except ImportError:
        return False
    # hippynn compiles its pytorch kernels and hits dynamo's recompile limit: noise only.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    return True


def hippynn_model(tensor_order: int, shape: dict = SHAPE) -> tuple[torch.nn.Module,
                                                                    EnergyForces]:
    r"""hippynn's ``Hipnn`` (``HipnnVec``/``HipnnQuad`` for orders 1/2) of ``shape``, same
    function."""
    warnings.filterwarnings("ignore")  # hippynn warns about its optional kernels
    from hippynn.graphs import GraphModule, inputs, networks, physics, targets

    species = inputs.SpeciesNode(db_name="Z")
    positions = inputs.PositionsNode(db_name="R")
    options = dict(possible_species=[0, *SPECIES], n_features=shape["features"],
                   n_sensitivities=shape["sensitivities"], dist_soft_min=shape["soft_min"],
                   dist_soft_max=shape["soft_max"], dist_hard_max=shape["cutoff"],
                   n_interaction_layers=shape["interactions"],
                   n_atom_layers=shape["atom_layers"])
    if tensor_order == 1:
        network = networks.HipnnVec("hipnn", (species, positions),
                                    module_kwargs=dict(options, cusp_reg=1e-6))
    elif tensor_order == 2:
        network = networks.HipnnQuad("hipnn", (species, positions),
                                     module_kwargs=dict(options, cusp_reg=1e-6))
    else:
        network = networks.Hipnn("hipnn", (species, positions), module_kwargs=options)
    energy_node = targets.HEnergyNode("HEnergy", network)
    forces_node = physics.GradientNode("forces", (energy_node, positions), sign=-1)
    model = GraphModule([species, positions], [energy_node.mol_energy, forces_node])
    model.energy_node = energy_node  # for hippynn's ASE calculator (bench_md.py)

    def run(z: Tensor, pos: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        energy, forces = model(z, pos)  # hippynn always keeps the graph of its forces
        return energy.view(-1), forces

    return model, run


def hippynn_initialize(model: torch.nn.Module, train: dict[str, Tensor], offset: float) -> None:
    r"""hippynn's own start (``hippynn.pretraining.hierarchical_energy_initialization``
    with its defaults): E0 per species by least squares on the training energies less
    ``offset`` (then frozen, ``trainable_after=False``), the higher energy readouts
    scaled by 1e-2, 1e-4, ...; called on ``hippynn_model``'s model."""
    from types import SimpleNamespace

    from hippynn.pretraining import hierarchical_energy_initialization

    database = SimpleNamespace(splits={"train": {
        "Z": train["z"], "T": (train["energy"].double() - offset).float().unsqueeze(-1)}})
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the E0s
        hierarchical_energy_initialization(model.energy_node, database, energy_name="T",
                                           species_name="Z")


@contextmanager
def _mace_import() -> Iterator[None]:
    # mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on import (e3nn 0.4's constants need a
    # full unpickler), which would switch off weights-only loading for every later
    # torch.load of this process, ours included: put the variable back afterwards.
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


def import_mace() -> ModuleType:
    r"""``mace.modules``, imported without mace's side effect on this process (it
    switches off weights-only :func:`torch.load`; the variable is put back)."""
    with _mace_import():
        from mace import modules
    return modules


def mace_calculator(model: torch.nn.Module) -> Any:
    r"""MACE's own ASE calculator (``MACECalculator``) around ``model``, float32, CPU."""
    with _mace_import():
        from mace.calculators import MACECalculator
    return MACECalculator(models=model, device="cpu", default_dtype="float32")


def mace_available() -> bool:
    r"""Whether mace-torch is installed (``pip install -e .[peers]``)."""
    try:
        import_mace()
    except ImportError:
        return False
    return True


def mace_inputs(z: Tensor, pos: Tensor, zs: list[int], r_max: float) -> dict[str, Tensor]:
    r"""MACE's input dictionary for ``B`` copies of one molecule (``z [B, A]``,
    ``pos [B, A, 3]``): one-hot species over ``zs``, every pair closer than ``r_max`` in
    both directions (no periodic images), graph pointers."""
    from torch_cluster import radius_graph

    count, atoms = z.shape
    flat = pos.reshape(-1, 3).detach()
    batch = torch.arange(count).repeat_interleave(atoms)
    edge_index = radius_graph(flat, r_max, batch, loop=False, max_num_neighbors=atoms)
    lookup = torch.full((int(max(zs)) + 1,), -1, dtype=torch.long)
    lookup[torch.as_tensor(zs)] = torch.arange(len(zs))
    node_attrs = torch.nn.functional.one_hot(lookup[z.reshape(-1)], len(zs)).to(flat.dtype)
    shifts = torch.zeros(edge_index.size(1), 3, dtype=flat.dtype)
    return dict(positions=flat.requires_grad_(True), node_attrs=node_attrs,
                edge_index=edge_index, shifts=shifts, unit_shifts=shifts.clone(),
                batch=batch, ptr=torch.arange(count + 1) * atoms,
                cell=torch.zeros(3 * count, 3, dtype=flat.dtype),
                head=torch.zeros(count, dtype=torch.long))


def mace_statistics(train: dict[str, Tensor], offset: float, r_max: float) -> dict[str, Any]:
    r"""What MACE's ``run_train`` computes from the training split: E0s by least squares
    of energies (less ``offset``) on element counts (``compute_average_E0s``: NumPy's
    minimum-norm solution), the RMS of the force components (``rms_forces_scaling``)
    and the average number of neighbours within ``r_max``."""
    z = train["z"]
    zs = sorted(int(s) for s in torch.unique(z))
    counts = np.stack([(z == s).sum(dim=1).numpy() for s in zs], axis=1).astype(np.float64)
    energy = (train["energy"].double() - offset).numpy()
    e0s = np.linalg.lstsq(counts, energy, rcond=None)[0]
    inputs = mace_inputs(z, train["pos"], zs, r_max)
    return dict(zs=zs, e0s=[float(e) for e in e0s],
                avg_num_neighbors=inputs["edge_index"].size(1) / z.numel(),
                scale=float(train["forces"].double().square().mean().sqrt()))


def mace_from_config(size: str, zs: list[int], e0s: list[float], avg_num_neighbors: float,
                     scale: float) -> torch.nn.Module:
    r"""MACE's default model (``ScaleShiftMACE``, shift 0) of size ``size`` (a key of
    :data:`MACE_SIZES`) for elements ``zs`` with the training statistics of
    :func:`mace_statistics`, in float32."""
    modules = import_mace()
    from e3nn import o3

    options = MACE_SIZES[size]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with warnings.catch_warnings():  # e3nn's code generation warns about its own AST use
            warnings.simplefilter("ignore")
            model = modules.ScaleShiftMACE(
                r_max=options["r_max"], num_bessel=8, num_polynomial_cutoff=5,
                max_ell=options["max_ell"],
                interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
                num_interactions=options["num_interactions"], num_elements=len(zs),
                hidden_irreps=o3.Irreps(options["hidden_irreps"]),
                MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.asarray(e0s),
                avg_num_neighbors=avg_num_neighbors, atomic_numbers=zs,
                correlation=options["correlation"], gate=torch.nn.functional.silu,
                atomic_inter_scale=scale, atomic_inter_shift=0.0, radial_MLP=[64, 64, 64],
                radial_type="bessel", pair_repulsion=False, distance_transform="None",
                heads=["Default"], apply_cutoff=True)
    finally:
        torch.set_default_dtype(previous)
    return model.float()


def mace_model(size: str, train: dict[str, Tensor],
               offset: float) -> tuple[torch.nn.Module, EnergyForces, dict[str, Any]]:
    r"""MACE of ``size`` started from the training split's statistics
    (:func:`mace_statistics`), its energy-and-forces function and its config (the
    arguments of :func:`mace_from_config`, saved with the results to rebuild it)."""
    config = dict(size=size, **mace_statistics(train, offset, MACE_SIZES[size]["r_max"]))
    model = mace_from_config(**config)
    return model, mace_function(model, config["zs"], MACE_SIZES[size]["r_max"]), config


def mace_function(model: torch.nn.Module, zs: list[int], r_max: float) -> EnergyForces:
    r"""The energy-and-forces function of a MACE model for elements ``zs``."""

    def run(z: Tensor, pos: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        out = model(mace_inputs(z, pos, zs, r_max), training=create_graph, compute_force=True)
        return out["energy"].view(-1), out["forces"].view(pos.shape)

    return run
