"""The physics on every available device (CPU always; CUDA where present): energies,
forces and stress equal the CPU float64 reference, the kernels agree, a training step
runs, the exported program and the calculator move to the device. On a machine with a
GPU these run there unchanged (scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from hipnn_pyg import HIPNNCalculator, energy_forces_stress
from hipnn_pyg.nn.contraction import KERNELS, OPS
from hipnn_pyg.nn.envsum import neighbour_layout
from tests.nn.helpers import ethanol, random_crystal, small_model, trained_looking

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def reference_model():
    torch.manual_seed(0)  # the same weights at every call
    return trained_looking(small_model(), 0.1, seed=3)


def test_energy_forces_and_stress_equal_the_cpu_reference(device: torch.device) -> None:
    model = reference_model()
    z, pos, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(2))
    pbc = torch.ones(1, 3, dtype=torch.bool)
    expected = energy_forces_stress(model, z, pos, None, cell[None], pbc, compute_stress=True)
    found = energy_forces_stress(model.to(device), z.to(device), pos.to(device), None,
                                 cell[None].to(device), pbc.to(device), compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(found[key].cpu(), expected[key], rtol=1e-9, atol=1e-9)


def test_the_torch_kernels_agree_with_the_cpu_ones(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(4)
    edge_index = torch.randint(0, 10, (2, 40), generator=generator)
    s = torch.rand(40, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(10, 7, generator=generator, dtype=torch.float64)
    env = torch.randn(10, 5, 7, generator=generator, dtype=torch.float64)
    on_cpu = neighbour_layout(edge_index, 10).atoms
    on_device = neighbour_layout(edge_index.to(device), 10).atoms
    for op, (a, b) in zip(OPS, [(s, x), (env, x), (env, s)], strict=True):
        torch.testing.assert_close(
            KERNELS["torch"][op](a.to(device), b.to(device), on_device).cpu(),
            KERNELS["torch"][op](a, b, on_cpu), rtol=1e-12, atol=1e-12)


def test_a_force_training_step_runs_and_moves_the_weights(device: torch.device) -> None:
    model = reference_model().float().to(device).train()
    z, pos = ethanol(torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    out = energy_forces_stress(model, z.to(device), pos.to(device), create_graph=True)
    (out["energy"].square().sum() + out["forces"].square().sum()).backward()
    optimiser.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_calculator_runs_on_the_device(device: torch.device) -> None:
    from ase import Atoms

    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
    atoms.calc = HIPNNCalculator(reference_model(), device=device)
    assert next(atoms.calc.model.parameters()).device.type == device.type
    expected = energy_forces_stress(reference_model(), z, pos)["forces"]
    torch.testing.assert_close(torch.as_tensor(atoms.get_forces()), expected, rtol=1e-9,
                               atol=1e-9)


def test_the_exported_program_runs_on_the_device_it_was_exported_on(
        device: torch.device, tmp_path) -> None:
    from hipnn_pyg.export import export_energy_forces, load_exported

    model = reference_model().to(device)
    export_energy_forces(model, tmp_path / "model.pt2")
    exported = load_exported(tmp_path / "model.pt2")
    assert exported.device.type == device.type
    z, pos = ethanol()
    out = exported(z, pos)
    expected = energy_forces_stress(reference_model(), z, pos)
    torch.testing.assert_close(out["forces"].cpu(), expected["forces"], rtol=1e-9, atol=1e-9)
