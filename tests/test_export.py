"""The exported energy-and-forces program equals the eager model, at other sizes than
the one it was traced with, and its archives are read safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hipnn_pyg import HIPNN, save_model
from hipnn_pyg.export import (
    METADATA_FILE,
    ExportedPotential,
    export_energy_forces,
    load_exported,
    pair_list,
)
from hipnn_pyg.nn import energy_forces_stress
from hipnn_pyg.nn.contraction import available_backends
from tests.nn.helpers import ethanol, random_crystal, small_model, trained_looking
from tests.test_serialization import RunsCode


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[HIPNN, ExportedPotential]:
    model = trained_looking(small_model(), 0.1, seed=7)
    path = tmp_path_factory.mktemp("export") / "model.pt2"
    export_energy_forces(model, path)
    return model, load_exported(path)


def _water_dimer() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.tensor([8, 1, 1, 8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                        [2.9, 0.1, 0.2], [3.4, 0.8, 0.5], [3.3, -0.7, 0.4]],
                       dtype=torch.float64)
    return z, pos


@pytest.mark.parametrize("structure", [ethanol, _water_dimer])
def test_exported_energy_and_forces_equal_eager(
        exported: tuple[HIPNN, ExportedPotential], structure) -> None:
    model, potential = exported
    z, pos = structure()
    out = potential(z, pos)
    reference = energy_forces_stress(model, z, pos)
    assert out["energy"].dtype == torch.float64 and out["energy"].shape == ()
    torch.testing.assert_close(out["energy"], reference["energy"][0].detach(),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(out["atom_energy"], reference["atom_energy"].detach(),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-10)
    assert out["forces"].abs().max() > 1e-3  # a real comparison, not of zeros


def test_exported_forces_in_a_periodic_cell(exported: tuple[HIPNN, ExportedPotential]) -> None:
    model, potential = exported
    z, pos, cell = random_crystal(8, 3.5, torch.Generator().manual_seed(3))
    pbc = torch.tensor([True, True, True])
    out = potential(z, pos, cell, pbc)
    reference = energy_forces_stress(model, z, pos, cell=cell[None], pbc=pbc[None],
                                     compute_stress=True)
    torch.testing.assert_close(out["energy"], reference["energy"][0].detach(),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-10)
    # the virial is -dE/d(strain): minus the volume times the stress
    volume = torch.linalg.det(cell).abs()
    torch.testing.assert_close(out["virial"], -volume * reference["stress"][0], rtol=0,
                               atol=1e-10)
    assert out["virial"].abs().max() > 1e-3


def test_ghost_atoms_count_only_through_their_forces(
        exported: tuple[HIPNN, ExportedPotential]) -> None:
    # What one MPI rank of LAMMPS passes: its local atoms, then ghost atoms (explicit
    # periodic images out to the receptive field), pairs among all of them with zero
    # offsets. Local energies are the cell's; forces on ghosts, added back to the atoms
    # they copy, give the cell's forces; the virial of all forces is the cell's.
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    model, potential = exported
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(9))
    reach = potential.num_interactions * potential.cutoff
    shifts = torch.cartesian_prod(*[torch.arange(-3, 4)] * 3).to(pos.dtype)
    images = (pos[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    owner = torch.arange(len(z)).repeat(len(shifts))
    home = (shifts == 0).all(dim=1).repeat_interleave(len(z))
    distance = torch.cdist(images, pos).min(dim=1).values
    keep = home | (distance < reach)
    order = torch.argsort((~home[keep]).long(), stable=True)  # local atoms first
    all_pos, all_owner, is_local = images[keep][order], owner[keep][order], home[keep][order]
    atoms = Atoms(numbers=z[all_owner].numpy(), positions=all_pos.numpy())
    centre, neighbour = neighbor_list("ij", atoms, potential.cutoff)
    edge_index = torch.from_numpy(np.stack([neighbour, centre]))
    energy, atom_energy, forces, virial = potential.function(
        z[all_owner], all_pos, edge_index, torch.zeros(edge_index.size(1), 3,
                                                      dtype=pos.dtype), is_local)
    reference = energy_forces_stress(model, z, pos, cell=cell[None],
                                     pbc=torch.ones(1, 3, dtype=torch.bool), compute_stress=True)
    torch.testing.assert_close(energy, reference["energy"][0].detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(atom_energy[is_local], reference["atom_energy"].detach(),
                               rtol=0, atol=1e-9)
    folded = torch.zeros_like(pos).index_add_(0, all_owner, forces)
    torch.testing.assert_close(folded, reference["forces"], rtol=0, atol=1e-9)
    volume = torch.linalg.det(cell).abs()
    torch.testing.assert_close(virial, -volume * reference["stress"][0], rtol=0, atol=1e-9)
    fdotr = all_pos.t() @ forces  # LAMMPS's virial_fdotr_compute over local + ghost
    torch.testing.assert_close(fdotr, virial, rtol=0, atol=1e-9)


@pytest.mark.skipif("cpp" not in available_backends(), reason="the C++ kernels do not build")
def test_the_program_calls_the_compiled_kernels(exported: tuple[HIPNN, ExportedPotential]
                                                ) -> None:
    _, potential = exported
    assert potential.kernels == "cpp"
    called = {str(node.target) for node in potential.program.graph.nodes}
    assert {"hipnn.envsum.default", "hipnn.featsum.default", "hipnn.sensesum.default"} \
        <= called


def test_program_takes_an_md_codes_pair_list(exported: tuple[HIPNN, ExportedPotential]) -> None:
    # What a C++ MD code passes: its own pairs (here from ASE) and image offsets.
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    model, potential = exported
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(5))
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy(), cell=cell.numpy(), pbc=True)
    centre, neighbour, offsets = neighbor_list("ijS", atoms, model.cutoff)
    edge_index = torch.from_numpy(np.stack([neighbour, centre]))
    edge_offsets = torch.tensor(offsets, dtype=torch.float64) @ cell
    is_local = torch.ones_like(z, dtype=torch.bool)
    energy, _, forces, _ = potential.program.module()(z, pos, edge_index, edge_offsets,
                                                      is_local)
    reference = energy_forces_stress(model, z, pos, cell=cell[None],
                                     pbc=torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(energy, reference["energy"][0].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, reference["forces"], rtol=0, atol=1e-10)


def test_exported_potential_names_bad_inputs(exported: tuple[HIPNN, ExportedPotential]) -> None:
    _, potential = exported
    z, pos = ethanol()
    with pytest.raises(ValueError, match="Cl"):
        potential(torch.tensor([6, 6, 17, 1, 1, 1, 1, 1, 1]), pos)
    with pytest.raises(ValueError, match="NaN"):
        potential(z, torch.full_like(pos, float("nan")))


def test_the_program_itself_refuses_an_element_the_model_lacks(
        exported: tuple[HIPNN, ExportedPotential]) -> None:
    # What a C++ consumer calls: no Python checks in front of the program.
    _, potential = exported
    z, pos = ethanol()
    for unknown in (17, 2, 500, -1):  # beside the table, inside it, beyond it, negative
        bad = z.clone()
        bad[2] = unknown
        edge_index, offsets = pair_list(pos, potential.cutoff)
        with pytest.raises(RuntimeError, match="not among the model's species"):
            potential.function(bad, pos, edge_index, offsets,
                               torch.ones_like(bad, dtype=torch.bool))


@pytest.mark.parametrize("num_atoms, separation",
                         [(0, 0.0), (1, 0.0), (2, 9.0), (2, 1.0), (3, 9.0)])
def test_the_program_serves_structures_with_no_pair_or_one(
        exported: tuple[HIPNN, ExportedPotential], num_atoms: int, separation: float) -> None:
    # An isolated atom, a dilute gas, a single bond: what an MD engine meets.
    model, potential = exported
    z = torch.tensor([8, 1, 6][:num_atoms], dtype=torch.long)
    pos = torch.tensor([[0.0, 0, 0], [separation, 0, 0], [0, 2 * separation, 0]],
                       dtype=torch.float64)[:num_atoms]
    out = potential(z, pos)
    reference = energy_forces_stress(model, z, pos)
    torch.testing.assert_close(out["energy"], reference["energy"][0].detach(), rtol=0,
                               atol=1e-10)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-10)


def test_load_exported_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_exported(tmp_path / "none.pt2")
    model_file = tmp_path / "model.pt"
    save_model(small_model(), model_file)  # a model file, not an export
    with pytest.raises(ValueError, match="cannot read the exported model"):
        load_exported(model_file)
    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),)), plain)
    with pytest.raises(ValueError, match=f"no {METADATA_FILE}"):
        load_exported(plain)


def test_load_exported_never_unpickles_code(tmp_path: Path, monkeypatch) -> None:
    # torch.export.load reads some payloads with torch.load(weights_only=False): under
    # load_exported that call must stay weights-only.
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"payload": RunsCode(marker)}, buffer)

    def unsafe_load(*args, **kwargs):
        return torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)

    archive = tmp_path / "crafted.pt2"
    archive.write_bytes(b"PK")
    monkeypatch.setattr(torch.export, "load", unsafe_load)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # restored afterwards
    with pytest.raises(ValueError, match="cannot read the exported model"):
        load_exported(archive)
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_export_entry_point_writes_a_float32_tensor_sensitivity_archive(
        tmp_path: Path, capsys) -> None:
    from hipnn_pyg.cli import export_task
    from tests.train.helpers import compose_config

    # One interaction: the trace (most of this test's time) stays short.
    model = trained_looking(small_model(tensor_order=2, num_interactions=1), 0.1, seed=7)
    save_model(model, tmp_path / "model.pt")
    output = tmp_path / "out" / "model.pt2"
    export_task(compose_config("export", tmp_path, [f"model_path={tmp_path / 'model.pt'}",
                                                    f"output={output}", "dtype=float32"]))
    assert "exported" in capsys.readouterr().out
    potential = load_exported(output)
    assert potential.dtype == torch.float32 and potential.species == [1, 6, 8]
    z, pos = ethanol(torch.float32)
    out, reference = potential(z, pos), energy_forces_stress(model.float(), z, pos)
    torch.testing.assert_close(out["energy"], reference["energy"][0].detach(),
                               rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=1e-4, atol=1e-5)
    with pytest.raises(SystemExit):
        export_task(compose_config("export", tmp_path, [f"model_path={tmp_path / 'none.pt'}",
                                                        f"output={output}"]))
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("skin", [0.0, 0.15])
def test_exported_calculator_follows_the_eager_calculator_through_md(
        exported: tuple[HIPNN, ExportedPotential], skin: float) -> None:
    # Hot ethanol: with a 0.15 Å skin the pair list is kept for some steps and searched
    # again for others, and both must give the eager calculator's forces at every step.
    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from hipnn_pyg import ExportedCalculator, HIPNNCalculator

    model, potential = exported
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(0))
    fast = ExportedCalculator(potential, skin=skin)
    eager = HIPNNCalculator(model)
    atoms.calc = fast
    steps = 30
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for _ in range(steps):
        dynamics.run(1)
        probe = atoms.copy()
        probe.calc = eager
        np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), rtol=0, atol=1e-10)
        assert abs(atoms.get_potential_energy() - probe.get_potential_energy()) < 1e-10
    if skin == 0.0:
        assert fast.searches == steps + 1
    else:
        assert 1 < fast.searches < steps + 1  # the list was reused and renewed


def test_exported_calculator_in_a_periodic_cell_and_bad_input(
        exported: tuple[HIPNN, ExportedPotential]) -> None:
    from ase import Atoms

    from hipnn_pyg import ExportedCalculator, HIPNNCalculator

    model, potential = exported
    z, pos, cell = random_crystal(8, 3.5, torch.Generator().manual_seed(11))
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy(), cell=cell.numpy(), pbc=True)
    atoms.calc = ExportedCalculator(potential, skin=0.5)
    probe = atoms.copy()
    probe.calc = HIPNNCalculator(model)
    np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), rtol=0, atol=1e-10)
    atoms.positions[0] += 0.1  # within the skin: same list, still exact
    probe.positions[0] += 0.1
    np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), rtol=0, atol=1e-10)
    assert atoms.calc.searches == 1
    atoms.numbers[0] = 17
    with pytest.raises(ValueError, match="Cl"):
        atoms.get_forces()
    with pytest.raises(ValueError, match="skin"):
        ExportedCalculator(potential, skin=-1)
