r"""Inference export: a trained potential's energy, forces and virial as a
:func:`torch.export` program, the form production MD codes load (the LAMMPS pair style
``hipnn``, :mod:`hipnn_pyg.lammps`; the C++ consumer in ``scripts/aoti_consumer``).

The exported function is :class:`EnergyForces`: atomic numbers, positions, a pair list
and which atoms are local in; energy, per-atom energies, forces and virial out, for one
structure of any size (the atom and pair counts are symbolic, 0 and 1 included). The
neighbour search stays outside, as in LAMMPS-style interfaces: the MD code passes its
own pairs within :attr:`cutoff`, with the Cartesian offset of each neighbour's periodic
image (zero where its ghost atoms are explicit images, as in LAMMPS). The energy sums
the local atoms only, and the forces act on every atom, ghosts included, so a domain
decomposition adds ghost forces back to their owners. The forces are in the program
itself: the energy's backward is traced into explicit operations, so no autograd is
needed to run it. On CPU the program calls the compiled environment-sum operators
(``torch.ops.hipnn.*``; a C++ program loads :func:`hipnn_pyg.nn.csrc.library_path`
first), elsewhere plain tensor operations.

Files are ``.pt2`` archives of :func:`torch.export.save`, with the model's species,
cutoff, interaction count and precision in an extra file ``hipnn_pyg.json`` (and in an
AOTInductor package's metadata). In Python, :func:`load_exported` reads one back
weights-only (an archive that asks for a full unpickling is refused) as an
:class:`ExportedPotential` that builds the pair list and checks its inputs like the
model; :meth:`torch.export.ExportedProgram.module` or AOTInductor
(:func:`compile_aoti`) take it further.

Example::

    from hipnn_pyg import load_model
    from hipnn_pyg.export import export_energy_forces, load_exported

    export_energy_forces(load_model("model.pt"), "model.pt2")
    exported = load_exported("model.pt2")
    out = exported(z, pos)              # {"energy", "atom_energy", "forces", "virial"}
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from hipnn_pyg.atomic import atomic_write
from hipnn_pyg.compat.torch import aoti_compile, assert_in_program, sizes_traced_symbolically
from hipnn_pyg.graph import Graph, radius_graph
from hipnn_pyg.nn.checks import (
    check_inputs,
    check_min_distance,
    species_index,
    species_lookup,
)
from hipnn_pyg.nn.contraction import available_backends
from hipnn_pyg.nn.potential import Potential
from hipnn_pyg.nn.representation import RepresentationOutput

__all__ = ["EnergyForces", "ExportedPotential", "compile_aoti", "export_energy_forces",
           "load_exported", "pair_list"]

#: The archive's extra file with what a caller needs besides the program.
METADATA_FILE = "hipnn_pyg.json"
#: Version of the exported function's signature (inputs and outputs).
EXPORT_VERSION = 2
#: The program's inputs and outputs, in order.
INPUTS = ("z", "pos", "edge_index", "edge_offsets", "is_local")
OUTPUTS = ("energy", "atom_energy", "forces", "virial")


class EnergyForces(nn.Module):
    r"""The function that :func:`export_energy_forces` exports: energy, forces and
    virial of one structure from a given pair list.

    A frozen copy of ``model`` whose interactions sum environments on the compiled
    operators (CPU, where they build; :attr:`kernels` ``"cpp"``) or by one scatter-add
    per sensitivity (``"scatter"``: plain tensor operations for any device), with
    per-edge temporaries no larger than the neighbour features; its parameters need no
    gradient.

    Args:
        model (Potential): A trained potential (:class:`~hipnn_pyg.HIPNN` or any
            :class:`~hipnn_pyg.nn.Potential`); only its representation and energy head
            are used.
    """

    def __init__(self, model: Potential) -> None:
        super().__init__()
        if not hasattr(model, "energy_head") or not hasattr(model, "heads"):
            raise ValueError(f"export takes a potential with one representation and an "
                             f"energy head; {type(model).__name__} has not (a Δ model: "
                             "run it through HIPNNCalculator, or train a multi-fidelity "
                             "one)")
        frozen = copy.deepcopy(model).eval()
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        like = next(frozen.parameters())
        compiled = like.device.type == "cpu" and "cpp" in available_backends()
        self.kernels = "cpp" if compiled else "scatter"
        for interaction in frozen.representation.interactions:
            interaction.lean = False  # blocks of atoms need concrete sizes
            interaction.method = "envsum" if compiled else "scatter"
            interaction.envsum_backend = "cpp" if compiled else None
        self.representation = frozen.representation
        self.head = frozen.energy_head

    def forward(
        self, z: Tensor, pos: Tensor, edge_index: Tensor, edge_offsets: Tensor,
        is_local: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Args:
            z (torch.Tensor): Atomic numbers ``[num_atoms]`` (int64), all of the model's
                species.
            pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å, in the model's precision.
            edge_index (torch.Tensor): Pairs ``[2, num_edges]`` (int64), rows (neighbour
                j, centre i), each pair in both directions, all within the cutoff.
            edge_offsets (torch.Tensor): Cartesian offset of neighbour j's periodic
                image ``[num_edges, 3]`` (Å), so that :math:`r_{ij} = x_j - x_i +
                \text{offset}`; zeros for a free molecule and for explicit ghost atoms.
            is_local (torch.Tensor): ``[num_atoms]`` (bool): the atoms whose energies
                count (all of them, except an MD code's ghost atoms).

        Returns:
            ``(energy, atom_energy, forces, virial)``: the local atoms' energy ``[]`` and
            every atom's own ``[num_atoms]`` in eV (float64); forces ``[num_atoms, 3]``
            in eV/Å, :math:`-\partial E / \partial x` on every atom (ghosts too); the
            virial ``[3, 3]`` in eV, :math:`W = -\sum_{ij} r_{ij} \otimes \partial E /
            \partial r_{ij}` (LAMMPS's sign: the pressure is :math:`(N k T + \mathrm{tr}\,
            W / 3) / V`; ASE's stress is :math:`-W / V`). Any number of atoms and pairs,
            none included; an element the model lacks raises :obj:`RuntimeError`.
        """
        species = known_species(z, self.representation.species_lookup)
        neighbours, centres = edge_index
        with torch.enable_grad():
            # Gradients by pair vector: forces on both ends, and the virial, from one.
            vectors = (pos[neighbours] - pos[centres] + edge_offsets).detach()
            vectors.requires_grad_(True)
            graph = Graph(edge_index, edge_offsets, vectors, vectors.norm(dim=-1))
            layers, atoms = receptive_graphs(graph, is_local,
                                             len(self.representation.interactions))
            features = self.representation.layer_features(species, graph, layers, atoms)
            batch = torch.zeros_like(z)
            values = self.head(RepresentationOutput(features, graph, z, pos, batch, 1,
                                                    None, None))
            atom_energy = values[f"atom_{self.head.output}"]
            energy = torch.where(is_local, atom_energy, torch.zeros_like(atom_energy)).sum()
            (pair_gradient,) = torch.autograd.grad(energy, vectors)
        forces = torch.zeros_like(pos).index_add_(0, centres, pair_gradient)
        forces = forces.index_add_(0, neighbours, -pair_gradient)
        virial = -(vectors.detach().t() @ pair_gradient).to(torch.float64)
        return energy.detach(), atom_energy.detach(), forces, virial


def receptive_graphs(graph: Graph, is_local: Tensor, num_layers: int
                     ) -> tuple[list[Graph], list[Tensor]]:
    r"""Each interaction layer's pairs and atoms, only those the local atoms' energies
    need: the last layer's centres are the local atoms, each earlier layer's also their
    neighbours (HIP-NN's energy reads every layer's features of the local atoms). An MD
    engine's ghost atoms far from the local ones are then computed in the first layers
    only; with every atom local, every layer keeps every pair and atom."""
    neighbours, centres = graph.edge_index
    needed = is_local
    masks = []
    for _ in range(num_layers):
        masks.append(needed)
        # atoms whose features a needed centre reads: its neighbours
        reached = torch.zeros_like(needed, dtype=torch.int32).scatter_reduce(
            0, neighbours, needed[centres].to(torch.int32), reduce="amax")
        needed = needed | reached.bool()
    graphs, atoms = [], []
    for mask in reversed(masks):
        keep = mask[centres]
        graphs.append(Graph(graph.edge_index[:, keep], graph.shifts[keep],
                            graph.vectors[keep], graph.distances[keep]))
        atoms.append(mask.nonzero().view(-1))
    return graphs, atoms


def known_species(z: Tensor, lookup: Tensor) -> Tensor:
    r"""Rows of the one-hot species table for ``z``, with an in-program check: a program
    given an element the model lacks raises (``RuntimeError`` naming the problem, in
    Python, AOTInductor's C++ runtime and MD engines alike) instead of reading outside
    the table."""
    inside = (z >= 0) & (z < lookup.numel())
    index = lookup[z.clamp(0, lookup.numel() - 1)]
    assert_in_program((inside & (index >= 0)).all(),
                      "hipnn: an atomic number in z is not among the model's species")
    return index


def _example(model: Potential, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # A zigzag chain of every species, 1.2 Å bonds: several atoms and pairs, so that no
    # size is 0 or 1 (which a trace would fix as a constant).
    species = torch.tensor(model.species * 2, dtype=torch.long)
    steps = torch.arange(species.numel(), dtype=dtype)
    pos = torch.stack([steps * 1.0, (steps % 2) * 0.7, torch.zeros_like(steps)], dim=1)
    return species, pos


def pair_list(pos: Tensor, cutoff: float, cell: Tensor | None = None,
              pbc: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""The program's pair inputs for one structure: ``edge_index`` of the pairs within
    ``cutoff`` and their Cartesian image offsets ``[num_edges, 3]``.

    Args:
        pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å.
        cutoff (float): Pair radius in Å (the model's cutoff, or more for a Verlet list).
        cell (torch.Tensor, optional): Cell ``[1, 3, 3]``. (default: :obj:`None`)
        pbc (torch.Tensor, optional): Periodic directions ``[1, 3]``.
            (default: :obj:`None`)
    """
    graph = radius_graph(pos, cutoff, None, cell, pbc)
    if cell is None or pbc is None or not bool(pbc.any()):
        return graph.edge_index, pos.new_zeros(graph.edge_index.size(1), 3)
    return graph.edge_index, graph.shifts.to(pos.dtype) @ cell[0]


def export_energy_forces(
    model: Potential,
    path: str | os.PathLike[str] | None = None,
    example: tuple[Tensor, Tensor] | None = None,
) -> ExportedProgram:
    r"""Exports :class:`EnergyForces` of ``model`` with symbolic atom and pair counts.

    The energy's backward is traced first (:func:`torch.fx.experimental.proxy_tensor.make_fx`),
    so the program holds the forces as plain operations; :func:`torch.export.export`
    then checks and packages it.

    Args:
        model (Potential): The trained potential, in the precision and on the device
            to export for.
        path (str or os.PathLike, optional): Where to write the ``.pt2`` archive
            (atomically), with :data:`METADATA_FILE`. (default: :obj:`None`, not saved)
        example (tuple, optional): ``(z, pos)`` of a structure to trace with; it needs
            at least two atoms and two pairs (the program then takes any number,
            none included). (default: :obj:`None`, a chain of the model's species)

    Returns:
        The :class:`torch.export.ExportedProgram`; call ``.module()(z, pos, edge_index,
        edge_offsets, is_local)`` to run it.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    function = EnergyForces(model)
    like = next(function.parameters())
    dtype, device = like.dtype, like.device  # the program runs in both, as traced
    z, pos = example if example is not None else _example(model, dtype)
    z, pos = z.to(device), pos.to(device=device, dtype=dtype)
    edge_index, offsets = pair_list(pos, model.cutoff)
    if z.numel() < 2 or edge_index.size(1) < 2:
        raise ValueError("the example structure needs at least two atoms and two pairs "
                         f"within the cutoff, got {z.numel()} atoms, {edge_index.size(1)} pairs")
    inputs = (z.long(), pos, edge_index, offsets, torch.ones_like(z, dtype=torch.bool))
    # Sizes 0 and 1 stay symbolic too (an isolated atom, a dilute gas, an empty MD
    # rank), not specialised away as tracing does by default.
    with sizes_traced_symbolically():
        # Real weights enter the symbolic trace as constants of the graph.
        traced = make_fx(function, tracing_mode="symbolic",
                         _allow_non_fake_inputs=True)(*inputs)
        atoms, edges = Dim("atoms", min=0), Dim("edges", min=0)
        program = torch.export.export(
            traced, inputs,
            dynamic_shapes=({0: atoms}, {0: atoms}, {1: edges}, {0: edges}, {0: atoms}),
            strict=False,
        )
    if path is not None:
        with atomic_write(path) as stream:
            torch.export.save(program, stream, extra_files={
                METADATA_FILE: json.dumps(export_metadata(model, function))})
    return program


def export_metadata(model: Potential, function: EnergyForces) -> dict[str, Any]:
    r"""What a caller of the program needs besides it: species, cutoff, the receptive
    field (interactions x cutoff: the ghost shell of a domain decomposition), dtype,
    device, the kernels it calls, its inputs and outputs."""
    like = next(function.parameters())
    return {"export_version": EXPORT_VERSION, "species": [int(z) for z in model.species],
            "cutoff": float(model.cutoff),
            "num_interactions": len(model.representation.interactions),
            "dtype": str(like.dtype).removeprefix("torch."), "device": str(like.device),
            "min_distance": float(model.representation.min_distance),
            "kernels": function.kernels, "inputs": list(INPUTS), "outputs": list(OUTPUTS)}


def compile_aoti(program: ExportedProgram, path: str | os.PathLike[str],
                 metadata: dict[str, Any] | None = None) -> Path:
    r"""Compiles an exported program ahead of time with AOTInductor into a ``.pt2``
    package that C++ (``torch::inductor::AOTIModelPackageLoader``; LAMMPS's ``pair_style
    hipnn``) or Python (``torch._inductor.aoti_load_package``) runs without hipnn_pyg;
    needs a C++ compiler. A program on the compiled kernels needs their library loaded
    first (:func:`hipnn_pyg.nn.csrc.library_path`).

    Args:
        program (torch.export.ExportedProgram): From :func:`export_energy_forces`.
        path (str or os.PathLike): The package to write (atomically).
        metadata (dict, optional): :func:`export_metadata`, stored as the package's
            metadata (string values, ``loader.get_metadata()`` in C++).
            (default: :obj:`None`)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = {}
    if metadata is not None:
        configs["aot_inductor.metadata"] = {key: _as_text(value)
                                            for key, value in metadata.items()}
    # The pairs each layer keeps have data-dependent counts: their bounds stay symbolic
    # here too (else AOTInductor bounds them by the traced example's sizes).
    with atomic_write(path) as stream, sizes_traced_symbolically():
        aoti_compile(program, stream, configs)
    return path


def _as_text(value: Any) -> str:
    # Lists as comma-separated values (species "1,6,8"), the rest as str.
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    # torch.export.load unpickles some payloads with weights_only=False (and falls back to
    # it when a weights-only read fails): torch honours this variable at every call.
    saved = {name: os.environ.pop(name, None)
             for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


class ExportedPotential(nn.Module):
    r"""An exported potential read back by :func:`load_exported`: builds the pair list
    (molecules or periodic cells), checks the inputs as the model does, and runs the
    program.

    Attributes:
        program (torch.export.ExportedProgram): The exported :class:`EnergyForces`.
        species (list[int]): Atomic numbers the model knows.
        cutoff (float): Pair cutoff (Å).
        dtype (torch.dtype): Precision of positions the program takes.
        device (torch.device): Where it runs (where the model was when exported).
        num_interactions (int): Interaction layers: the receptive field is this many
            cutoffs.
        kernels (str): ``"cpp"`` (the compiled operators) or ``"scatter"``.
    """

    def __init__(self, program: ExportedProgram, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.program = program
        self.function = program.module()
        self.species = [int(z) for z in metadata["species"]]
        self.cutoff = float(metadata["cutoff"])
        self.min_distance = float(metadata["min_distance"])
        self.dtype = getattr(torch, metadata["dtype"])
        self.device = torch.device(metadata.get("device", "cpu"))
        self.num_interactions = int(metadata["num_interactions"])
        self.kernels = str(metadata["kernels"])
        self.species_lookup = species_lookup(self.species)

    def check(self, z: Tensor, pos: Tensor, cell: Tensor | None = None,
              pbc: Tensor | None = None) -> None:
        r"""Raises :obj:`ValueError` for inputs the model would refuse: shapes, NaN, and
        elements it does not know (by name)."""
        check_inputs(z, pos, None, cell, pbc)
        species_index(z, self.species_lookup, self.species)

    def run(self, z: Tensor, pos: Tensor, edge_index: Tensor, edge_offsets: Tensor,
            program: Any = None) -> dict[str, Tensor]:
        r"""The program on a pair list (of :func:`pair_list`, or a Verlet list that
        holds it), every atom local, after the model's closest-approach check.

        Args:
            z, pos, edge_index, edge_offsets: As :meth:`EnergyForces.forward` takes them,
                on :attr:`device`, ``pos`` in :attr:`dtype`.
            program (callable, optional): Another build of the same program, such as
                its AOTInductor package. (default: :obj:`None`, the exported graph)
        """
        distances = (pos[edge_index[0]] - pos[edge_index[1]] + edge_offsets).norm(dim=-1)
        check_min_distance(distances, edge_index, self.min_distance)
        is_local = torch.ones_like(z, dtype=torch.bool)
        outputs = (program or self.function)(z.long(), pos, edge_index, edge_offsets, is_local)
        return dict(zip(OUTPUTS, outputs, strict=True))

    def forward(self, z: Tensor, pos: Tensor, cell: Tensor | None = None,
                pbc: Tensor | None = None) -> dict[str, Tensor]:
        r"""Energy (``[]``), per-atom energies and forces of one structure.

        Args:
            z (torch.Tensor): Atomic numbers ``[num_atoms]``.
            pos (torch.Tensor): Positions ``[num_atoms, 3]`` in Å.
            cell (torch.Tensor, optional): Cell ``[1, 3, 3]`` or ``[3, 3]`` in Å.
                (default: :obj:`None`)
            pbc (torch.Tensor, optional): Periodic directions ``[1, 3]`` or ``[3]``.
                (default: :obj:`None`)
        """
        if cell is not None and pbc is not None:
            cell, pbc = cell.reshape(1, 3, 3).to(self.dtype), pbc.reshape(1, 3)
        self.check(z, pos, cell, pbc)
        z, pos = z.to(self.device), pos.detach().to(device=self.device, dtype=self.dtype)
        if cell is not None and pbc is not None:
            cell, pbc = cell.to(self.device), pbc.to(self.device)
        return self.run(z, pos, *pair_list(pos, self.cutoff, cell, pbc))


def load_exported(path: str | os.PathLike[str]) -> ExportedPotential:
    r"""Reads a ``.pt2`` archive of :func:`export_energy_forces`, weights-only.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not such an archive (no :data:`METADATA_FILE`, broken, or
            holding objects only a code-running unpickling reads).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    from hipnn_pyg.nn.csrc import extension_available

    extension_available()  # programs on the compiled operators need them registered
    extra_files = {METADATA_FILE: ""}
    try:
        with _weights_only_loads():
            program = torch.export.load(path, extra_files=extra_files)
    except Exception as error:  # broken zip, foreign archive, refused pickle
        raise ValueError(f"cannot read the exported model {path}: {error}") from error
    if not extra_files[METADATA_FILE]:
        raise ValueError(f"{path} is not an export of hipnn_pyg: it has no {METADATA_FILE}")
    metadata = json.loads(extra_files[METADATA_FILE])
    if metadata.get("export_version") != EXPORT_VERSION:
        raise ValueError(f"{path} has export version {metadata.get('export_version')}; "
                         f"this hipnn_pyg reads version {EXPORT_VERSION} (export the model "
                         "again with hipnn-export)")
    return ExportedPotential(program, metadata)
