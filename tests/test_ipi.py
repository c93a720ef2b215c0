"""i-PI drives the ASE calculator through ASE's SocketClient: the real i-pi server runs a
short NVE trajectory of ethanol on forces from HIPNNCalculator, and its first potential
energy is the calculator's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from hipnn_pyg import HIPNN, HIPNNCalculator, save_model
from tests.nn.helpers import ethanol

pytest.importorskip("ipi", reason="pip install ipi (scripts/setup.sh)")

STEPS = 10


def test_ipi_runs_nve_on_the_calculators_forces(tmp_path: Path) -> None:
    from ase import Atoms
    from ase.calculators.socketio import SocketClient

    server = shutil.which("i-pi", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("i-pi not installed next to this Python")
    torch.manual_seed(0)
    model = HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=1,
                  soft_max_distance=3.5, cutoff=4.0).double()
    save_model(model, tmp_path / "model.pt")
    z, pos = ethanol()
    atoms = Atoms(numbers=z.numpy(), positions=pos.numpy() + 10.0, cell=np.eye(3) * 20.0)
    (tmp_path / "init.xyz").write_text(_ipi_xyz(atoms))
    address = f"hipnn_{uuid.uuid4().hex[:8]}"
    (tmp_path / "input.xml").write_text(f"""<simulation verbosity='low'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties>
  </output>
  <total_steps>{STEPS}</total_steps>
  <prng><seed>3</seed></prng>
  <ffsocket name='hipnn' mode='unix'><address>{address}</address></ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='xyz'>init.xyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='hipnn'/></forces>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nve'><timestep units='femtosecond'>0.5</timestep></dynamics>
    </motion>
  </system>
</simulation>
""")
    process = subprocess.Popen([server, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        socket = Path(f"/tmp/ipi_{address}")
        deadline = time.monotonic() + 180
        while not socket.exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "i-pi did not open its socket"
            time.sleep(0.2)
        client_atoms = atoms.copy()
        client_atoms.pbc = False
        client_atoms.calc = HIPNNCalculator(tmp_path / "model.pt")
        SocketClient(unixsocket=address).run(client_atoms)
        process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    rows = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert rows.shape[0] == STEPS + 1 and rows[-1, 0] == STEPS
    reference = atoms.copy()
    reference.pbc = False
    reference.calc = HIPNNCalculator(tmp_path / "model.pt")
    assert rows[0, 1] == pytest.approx(reference.get_potential_energy(), rel=1e-6)
    assert np.ptp(rows[:, 1]) > 0  # the atoms moved


def _ipi_xyz(atoms) -> str:
    # i-PI's xyz: the cell and units in the comment line.
    a, b, c = atoms.cell.lengths()
    alpha, beta, gamma = atoms.cell.angles()
    lines = [str(len(atoms)), f"# CELL(abcABC): {a} {b} {c} {alpha} {beta} {gamma} Step: 0 "
             "Bead: 0 positions{angstrom} cell{angstrom}"]
    lines += [f"{s} {x:.10f} {y:.10f} {w:.10f}" for s, (x, y, w) in
              zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)]
    return "\n".join(lines) + "\n"
