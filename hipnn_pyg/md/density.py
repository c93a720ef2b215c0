r"""Densities of periodic systems and their statistical errors (block averaging)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from hipnn_pyg.plotting import pyplot, save_figure

#: 1 amu/Å³ in g/cm³.
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def density_g_cm3(atoms: Atoms) -> float:
    r"""Mass density of a periodic cell in g/cm³ (standard atomic masses)."""
    volume = abs(atoms.cell.volume)
    if volume <= 0:
        raise ValueError("density needs a cell with positive volume")
    return float(atoms.get_masses().sum() / volume * AMU_PER_A3_TO_G_PER_CM3)


@dataclass
class BlockAverage:
    r"""Mean of a correlated time series with its block-averaging standard error."""

    mean: float
    error: float
    num_blocks: int
    block_size: int


def block_average(series: np.ndarray, num_blocks: int = 5) -> BlockAverage:
    r"""Mean and standard error of a correlated series from ``num_blocks`` contiguous
    blocks: :math:`\sigma = s_\mathrm{blocks} / \sqrt{n_\mathrm{blocks}}`. Blocks must
    be longer than the correlation time for the error to be honest; with few, long
    blocks it is a rough (and noisy) estimate.

    Args:
        series (np.ndarray): The values, in time order.
        num_blocks (int): Number of blocks (the tail that does not fill a block is
            dropped). (default: :obj:`5`)
    """
    series = np.asarray(series, dtype=float)
    if num_blocks < 2:
        raise ValueError("block averaging needs at least 2 blocks")
    size = len(series) // num_blocks
    if size < 1:
        raise ValueError(f"{len(series)} values cannot fill {num_blocks} blocks")
    blocks = series[: size * num_blocks].reshape(num_blocks, size).mean(axis=1)
    error = float(blocks.std(ddof=1) / np.sqrt(num_blocks))
    return BlockAverage(float(blocks.mean()), error, num_blocks, size)


def equilibrium_density(time_ps: np.ndarray, density: np.ndarray, equilibration_ps: float,
                        num_blocks: int = 5) -> BlockAverage:
    r"""Block average of the density after discarding the first ``equilibration_ps``."""
    time_ps, density = np.asarray(time_ps), np.asarray(density)
    keep = time_ps >= equilibration_ps
    if keep.sum() < num_blocks:
        raise ValueError(f"only {int(keep.sum())} samples after {equilibration_ps} ps of "
                         "equilibration: run longer or log more often")
    return block_average(density[keep], num_blocks)


def plot_density(time_ps: np.ndarray, density: np.ndarray, path: str | Path,
                 average: BlockAverage | None = None, equilibration_ps: float | None = None,
                 reference: float | None = None, title: str = "NPT density",
                 label: str = "HIP-NN NPT") -> Path:
    r"""Saves a density-vs-time PNG with the equilibrium mean ± error band (and a
    dashed ``reference`` density)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(time_ps, density, lw=1, color="C0", label=label)
    if equilibration_ps is not None:
        ax.axvspan(float(np.min(time_ps)), equilibration_ps, color="0.9",
                   label="equilibration")
    if average is not None:
        ax.axhline(average.mean, color="C1",
                   label=f"mean {average.mean:.3f} ± {average.error:.3f} g/cm³")
        ax.axhspan(average.mean - average.error, average.mean + average.error, color="C1",
                   alpha=0.25)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"reference {reference:.3f}")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("density (g/cm³)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
