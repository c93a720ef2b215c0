"""IR spectra (MD and harmonic) and densities with block-averaged errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from hipnn_pyg.md import block_average, density_g_cm3, harmonic_ir, ir_from_dipoles, run_md
from hipnn_pyg.md.density import equilibrium_density, plot_density
from hipnn_pyg.md.ir import C_CM_PER_FS, compare_modes, dipoles_from_log, plot_ir
from tests.md.helpers import relaxed_ethanol


def test_md_spectrum_finds_the_lines_of_a_synthetic_dipole() -> None:
    dt = 1.0
    t = np.arange(4000) * dt
    lines = (1000.0, 3000.0)
    signal = sum(np.sin(2 * np.pi * C_CM_PER_FS * nu * t + k) for k, nu in enumerate(lines))
    dipoles = np.stack([signal, 0.5 * signal, np.zeros_like(t)], axis=1)
    for correction in ("harmonic", "none"):
        spectrum = ir_from_dipoles(dipoles, dt, correlation_fs=1000.0, correction=correction)
        peaks = spectrum.peaks(prominence=0.01)
        assert len(peaks) == 2
        np.testing.assert_allclose(peaks, lines, atol=20.0)
    # dipole derivative, classical: the 3000 cm⁻¹ line is ~9x the 1000 cm⁻¹ one
    height = np.interp(peaks, spectrum.wavenumber, spectrum.intensity)
    assert 6 < height[1] / height[0] < 12
    with pytest.raises(ValueError, match="resolve only up to"):
        ir_from_dipoles(dipoles, 5.0)


def test_md_dipole_log_gives_a_spectrum(tmp_path) -> None:
    atoms, calc = relaxed_ethanol()
    run_md(atoms, calc, "nve", steps=200, timestep_fs=0.5, log=tmp_path / "md.csv",
           trajectory=tmp_path / "t.extxyz", log_interval=1, traj_interval=100,
           progress=False)
    time_ps, dipoles = dipoles_from_log(tmp_path / "md.csv")
    spectrum = ir_from_dipoles(dipoles, 1000 * (time_ps[1] - time_ps[0]))
    assert np.isfinite(spectrum.intensity).all() and spectrum.intensity.max() == 1.0
    path = plot_ir(tmp_path / "ir.png", {"model MD": spectrum})
    assert path.stat().st_size > 1000


def test_harmonic_ir_of_water_with_gfn2_and_the_model(tmp_path) -> None:
    tblite = pytest.importorskip("tblite.ase")
    water = molecule("H2O")
    reference = harmonic_ir(water, tblite.TBLite(method="GFN2-xTB", verbosity=0))
    assert reference.frequencies.shape == (3,)
    # GFN2-xTB water: bend near 1540, stretches near 3600-3700 cm⁻¹
    assert 1400 < reference.frequencies[0] < 1700 and reference.frequencies[2] > 3400
    assert (reference.intensities > 0).all()
    atoms, calc = relaxed_ethanol()
    model = harmonic_ir(atoms, calc, fmax=0.01)
    assert model.frequencies.shape == (21,) and np.isfinite(model.intensities).all()
    np.testing.assert_allclose(compare_modes(model, model), 0.0)
    plot_ir(tmp_path / "h.png", {"model": model.spectrum()}, sticks={"model": model})
    with pytest.raises(ValueError, match="gives no dipoles"):
        harmonic_ir(atoms, relaxed_ethanol(charges=False)[1])


def test_block_average_and_density(tmp_path) -> None:
    rng = np.random.default_rng(0)
    series = 1.0 + 0.01 * rng.standard_normal(10000)
    average = block_average(series, num_blocks=10)
    assert average.mean == pytest.approx(1.0, abs=5 * average.error)
    assert average.error == pytest.approx(0.01 / 100, rel=0.5)
    with pytest.raises(ValueError, match="cannot fill"):
        block_average(series[:3], num_blocks=5)
    water = molecule("H2O", cell=[3.1036] * 3, pbc=True)  # one molecule per 29.9 Å³
    assert density_g_cm3(water) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="positive volume"):
        density_g_cm3(molecule("H2O"))
    time_ps = np.linspace(0, 2, 200)
    result = equilibrium_density(time_ps, series[:200], equilibration_ps=0.5)
    assert plot_density(time_ps, series[:200], tmp_path / "d.png", result, 0.5,
                        reference=1.0).stat().st_size > 1000
    with pytest.raises(ValueError, match="run longer"):
        equilibrium_density(time_ps, series[:200], equilibration_ps=1.99)

