r"""Infrared spectra: from an MD dipole time series, or harmonic (finite differences).

(a) :func:`ir_from_dipoles`: the classical line shape is the Fourier transform of the
autocorrelation of the dipole *derivative*, :math:`C(\tau) = \langle\dot\mu(0)\cdot
\dot\mu(\tau)\rangle` (equivalent to :math:`\omega^2` times that of :math:`\mu`, and
free of the drift of a charged or slowly rotating dipole), tapered by a window,

.. math::
    I(\omega) \propto Q(\omega) \int C(\tau)\, w(\tau) \cos(\omega\tau)\, d\tau,
    \qquad Q_\mathrm{harmonic}(\omega) = \frac{\beta\hbar\omega}{1 - e^{-\beta\hbar\omega}},

with the harmonic quantum correction factor :math:`Q` (Ramírez et al., J. Chem. Phys.
121, 3973 (2004)). Intensities are in arbitrary units (normalised to 1 at the
maximum), wavenumbers in cm⁻¹.

(b) :func:`harmonic_ir`: ASE's :class:`~ase.vibrations.Infrared` (finite differences
of forces and dipoles at a relaxed geometry): frequencies in cm⁻¹ and intensities in
km/mol, for any calculator that gives dipoles (a HIP-NN with a charge head, tblite).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from hipnn_pyg.plotting import pyplot, save_figure

#: Speed of light in cm/fs, to turn 1/fs into cm⁻¹.
C_CM_PER_FS = 2.99792458e-5
#: hc/k_B in cm·K, so that hcν̃/kT = HC_OVER_K * ν̃ / T.
HC_OVER_K = 1.438776877
#: Porezag & Pederson's (D/Å)²/amu -> km/mol, as in :mod:`ase.vibrations.infrared`.
KM_PER_MOL = 42.255


@dataclass
class Spectrum:
    r"""A spectrum on a wavenumber grid."""

    wavenumber: np.ndarray  # cm⁻¹
    intensity: np.ndarray  # arbitrary units (MD) or km/mol per cm⁻¹ (broadened)

    def peaks(self, prominence: float = 0.05, min_wavenumber: float = 200.0) -> np.ndarray:
        r"""Peak positions (cm⁻¹) with a prominence above ``prominence`` of the maximum."""
        from scipy.signal import find_peaks

        keep = self.wavenumber >= min_wavenumber
        x, y = self.wavenumber[keep], self.intensity[keep]
        if y.size == 0 or y.max() <= 0:
            return np.array([])
        index, _ = find_peaks(y, prominence=prominence * y.max())
        return x[index]


def quantum_correction(wavenumber: np.ndarray, temperature_K: float,
                       kind: str = "harmonic") -> np.ndarray:
    r"""The factor :math:`Q(\omega)` that turns a classical line shape into an estimate
    of the quantum one: ``"harmonic"`` (:math:`x/(1-e^{-x})`, :math:`x=\beta\hbar\omega`)
    or ``"none"``."""
    if kind == "none":
        return np.ones_like(wavenumber)
    if kind != "harmonic":
        raise ValueError(f"quantum correction must be 'harmonic' or 'none', got '{kind}'")
    x = HC_OVER_K * np.asarray(wavenumber, dtype=float) / temperature_K
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = x / -np.expm1(-x)
    return np.where(x > 1e-12, factor, 1.0)


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    r"""Time-origin-averaged autocorrelation :math:`\langle x(t)\cdot x(t+\tau)\rangle`
    of a ``[T, d]`` series for lags ``0..max_lag-1``, by zero-padded FFT."""
    series = np.asarray(series, dtype=float).reshape(len(series), -1)
    n = len(series)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(series, n=size, axis=0)
    acf = np.fft.irfft(spectrum * spectrum.conj(), n=size, axis=0)[:max_lag].sum(axis=1)
    return acf / (n - np.arange(max_lag))


def ir_from_dipoles(
    dipoles: np.ndarray,
    timestep_fs: float,
    temperature_K: float = 300.0,
    correlation_fs: float | None = None,
    window: str = "hann",
    correction: str = "harmonic",
    max_wavenumber: float = 4500.0,
    resolution_cm1: float | None = None,
) -> Spectrum:
    r"""IR spectrum from a dipole time series (see module docs).

    Args:
        dipoles (np.ndarray): Dipoles ``[num_frames, 3]`` (e·Å) at equal spacing.
        timestep_fs (float): Time between frames in fs (the MD step times the log
            interval); its Nyquist limit must exceed ``max_wavenumber``
            (1 fs reaches 16,678 cm⁻¹).
        temperature_K (float): Temperature of the run, for the correction.
            (default: :obj:`300.0`)
        correlation_fs (float, optional): Longest lag of the autocorrelation; shorter
            means smoother, broader lines. (default: :obj:`None`, half the run)
        window (str): Taper of the autocorrelation: ``"hann"`` (:math:`\cos^2`
            half-window), ``"gaussian"`` or ``"none"``. (default: :obj:`"hann"`)
        correction (str): ``"harmonic"`` or ``"none"``. (default: :obj:`"harmonic"`)
        max_wavenumber (float): Upper end of the returned grid, cm⁻¹.
            (default: :obj:`4500.0`)
        resolution_cm1 (float, optional): Zero-pad the correlation to this grid
            spacing (interpolation only). (default: :obj:`None`)
    """
    dipoles = np.asarray(dipoles, dtype=float)
    if dipoles.ndim != 2 or dipoles.shape[1] != 3 or len(dipoles) < 8:
        raise ValueError(f"need dipoles [num_frames >= 8, 3], got {list(dipoles.shape)}")
    if not np.isfinite(dipoles).all():
        raise ValueError("dipole series contains NaN or inf")
    nyquist = 0.5 / timestep_fs / C_CM_PER_FS
    if nyquist < max_wavenumber:
        raise ValueError(f"frames {timestep_fs} fs apart resolve only up to {nyquist:.0f} "
                         f"cm⁻¹ < max_wavenumber={max_wavenumber}: log dipoles more often")
    derivative = np.gradient(dipoles, timestep_fs, axis=0)
    max_lag = len(dipoles) // 2 if correlation_fs is None else min(
        len(dipoles) - 1, int(round(correlation_fs / timestep_fs)) + 1)
    acf = autocorrelation(derivative, max_lag)
    lags = np.arange(max_lag) / max_lag
    if window == "hann":
        acf = acf * np.cos(0.5 * np.pi * lags) ** 2
    elif window == "gaussian":
        acf = acf * np.exp(-0.5 * (lags / 0.4) ** 2)
    elif window != "none":
        raise ValueError(f"window must be 'hann', 'gaussian' or 'none', got '{window}'")
    size = 2 * max_lag - 2
    if resolution_cm1 is not None:
        wanted = int(np.ceil(1.0 / (resolution_cm1 * C_CM_PER_FS * timestep_fs)))
        size = max(size, wanted)
    # cosine transform of the even extension of the one-sided correlation
    even = np.zeros(size)
    even[:max_lag] = acf
    even[size - max_lag + 1:] = acf[1:][::-1]
    intensity = np.fft.rfft(even).real
    wavenumber = np.fft.rfftfreq(size, d=timestep_fs) / C_CM_PER_FS
    intensity = intensity * quantum_correction(wavenumber, temperature_K, correction)
    keep = wavenumber <= max_wavenumber
    wavenumber, intensity = wavenumber[keep], np.clip(intensity[keep], 0.0, None)
    if intensity.max() > 0:
        intensity = intensity / intensity.max()
    return Spectrum(wavenumber, intensity)


@dataclass
class HarmonicIR:
    r"""Harmonic frequencies (cm⁻¹, the 3N-6 or 3N-5 vibrations, ascending) and IR
    intensities (km/mol) at the relaxed geometry ``atoms``."""

    frequencies: np.ndarray
    intensities: np.ndarray
    atoms: Atoms

    def spectrum(self, width_cm1: float = 15.0, start: float = 0.0, stop: float = 4000.0,
                 step: float = 1.0) -> Spectrum:
        r"""Lorentzian-broadened spectrum (km/mol per cm⁻¹)."""
        grid = np.arange(start, stop + step, step)
        gamma = 0.5 * width_cm1
        lines = gamma / np.pi / ((grid[:, None] - self.frequencies[None]) ** 2 + gamma**2)
        return Spectrum(grid, lines @ self.intensities)

    def strongest(self, count: int = 5) -> np.ndarray:
        r"""Frequencies of the ``count`` most intense modes, ascending."""
        order = np.argsort(self.intensities)[::-1][:count]
        return np.sort(self.frequencies[order])


def harmonic_ir(atoms: Atoms, calculator: Calculator, delta: float = 0.01, nfree: int = 2,
                fmax: float | None = 1e-3, max_steps: int = 500,
                workdir: str | Path | None = None) -> HarmonicIR:
    r"""Harmonic IR spectrum with ASE's :class:`~ase.vibrations.Infrared`.

    Args:
        atoms (Atoms): A molecule (a copy is relaxed and displaced).
        calculator (Calculator): Must provide forces and ``dipole``.
        delta (float): Finite-difference displacement in Å. (default: :obj:`0.01`)
        nfree (int): 2 (central) or 4 points per coordinate. (default: :obj:`2`)
        fmax (float, optional): Relax to this force (eV/Å) with BFGS first; each
            calculator at its own minimum. (default: :obj:`1e-3`)
        max_steps (int): Relaxation step limit. (default: :obj:`500`)
        workdir (str, optional): Folder for ASE's displacement cache.
            (default: :obj:`None`, a temporary folder)
    """
    from ase.optimize import BFGS
    from ase.vibrations import Infrared

    if "dipole" not in calculator.implemented_properties:
        raise ValueError(f"{type(calculator).__name__} gives no dipoles: an IR spectrum "
                         "needs a model with a charge head (HIPNNPotential)")
    work = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    work.calc = calculator
    if fmax is not None:
        BFGS(work, logfile=None).run(fmax=fmax, steps=max_steps)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        ir = Infrared(work, name=str(folder / "ir"), delta=delta, nfree=nfree)
        ir.clean()
        ir.run()
        ir.read()
        frequencies = np.real(ir.get_frequencies())
        intensities = np.asarray(ir.intensities) * KM_PER_MOL
        ir.clean()
    linear = len(work) == 2 or _is_linear(work)
    num_vib = 3 * len(work) - (5 if linear else 6)
    # the largest |frequency| modes are the vibrations; the rest are rotations/translations
    order = np.sort(np.argsort(np.abs(np.real(frequencies)))[-num_vib:])
    freq, inten = frequencies[order], intensities[order]
    ascending = np.argsort(freq)
    return HarmonicIR(freq[ascending], inten[ascending], work.copy())


def _is_linear(atoms: Atoms) -> bool:
    centered = atoms.positions - atoms.positions.mean(0)
    return bool(np.linalg.svd(centered, compute_uv=False)[1] < 1e-3)


def compare_modes(model: HarmonicIR, reference: HarmonicIR) -> np.ndarray:
    r"""Model minus reference frequencies (cm⁻¹) mode by mode, both sorted (the
    assignment that minimises the total absolute difference in one dimension)."""
    if model.frequencies.shape != reference.frequencies.shape:
        raise ValueError("the two spectra have different numbers of modes")
    return np.sort(model.frequencies) - np.sort(reference.frequencies)


def plot_ir(path: str | Path, spectra: dict[str, Spectrum],
            sticks: dict[str, HarmonicIR] | None = None, title: str = "IR spectrum",
            annotate: int = 6) -> Path:
    r"""Overlays spectra (each normalised to its maximum) in one PNG, with stick
    spectra and the positions of the strongest peaks marked.

    Args:
        path: The PNG file.
        spectra (dict[str, Spectrum]): Label -> spectrum (model first, reference next).
        sticks (dict[str, HarmonicIR], optional): Label -> harmonic modes drawn as
            sticks (normalised to the strongest). (default: :obj:`None`)
        title (str): Plot title. (default: :obj:`"IR spectrum"`)
        annotate (int): Mark the positions of this many strongest peaks of each
            spectrum. (default: :obj:`6`)
    """
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, (label, spectrum) in enumerate(spectra.items()):
        scale = spectrum.intensity.max() or 1.0
        y = spectrum.intensity / scale
        sign = 1.0 if k == 0 else -1.0  # mirror the reference below the axis
        ax.plot(spectrum.wavenumber, sign * y, color=f"C{k}", lw=1.2, label=label)
        peaks = spectrum.peaks()
        if peaks.size:
            heights = np.interp(peaks, spectrum.wavenumber, y)
            for x in peaks[np.argsort(heights)[::-1][:annotate]]:
                height = float(np.interp(x, spectrum.wavenumber, y))
                ax.annotate(f"{x:.0f}", (x, sign * height), fontsize=7, color=f"C{k}",
                            ha="center", va="bottom" if sign > 0 else "top")
    for k, (label, modes) in enumerate((sticks or {}).items()):
        scale = modes.intensities.max() or 1.0
        sign = 1.0 if k == 0 else -1.0
        ax.vlines(modes.frequencies, 0, sign * modes.intensities / scale, color=f"C{k}",
                  alpha=0.5, lw=1, label=f"{label} modes")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("intensity (normalised; reference mirrored)")
    ax.set_xlim(0, 4000)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def dipoles_from_log(log: str | Path) -> tuple[np.ndarray, np.ndarray]:
    r"""Times (ps) and dipoles ``[T, 3]`` (e·Å) from a :func:`hipnn_pyg.md.run_md` log."""
    import csv

    with open(log, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "dipole_x_eA" not in rows[0]:
        raise ValueError(f"{log} has no dipole columns: run MD with a charge-head model")
    time = np.array([float(r["time_ps"]) for r in rows])
    dipoles = np.array([[float(r[f"dipole_{c}_eA"]) for c in "xyz"] for r in rows])
    return time, dipoles


__all__ = ["Spectrum", "HarmonicIR", "ir_from_dipoles", "harmonic_ir", "compare_modes",
           "plot_ir", "quantum_correction", "autocorrelation", "dipoles_from_log"]
