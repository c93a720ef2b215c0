r"""Parity plots (prediction against reference) with matplotlib's Agg backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hipnn_pyg.plotting import pyplot, save_figure


def parity_plot(
    reference: np.ndarray,
    prediction: np.ndarray,
    path: str | os.PathLike[str],
    title: str,
    unit: str,
    max_points: int = 200_000,
    center: bool = False,
) -> Path:
    r"""Writes a parity plot of ``prediction`` against ``reference`` to ``path`` (PNG),
    with the identity line and MAE/RMSE in the title.

    Args:
        reference (np.ndarray): Reference values, any shape (flattened).
        prediction (np.ndarray): Predictions, same shape.
        path (str | os.PathLike): Output PNG file.
        title (str): Plot title, e.g. ``"Energy"``.
        unit (str): Unit of the values, for the axis labels.
        max_points (int): Plot at most this many points (an even subsample), so that
            force plots of large sets stay small and fast.
        center (bool): Subtract the mean reference from both axes (total energies of
            one molecule span a few eV around 10³-10⁴ eV, unreadable as tick labels).
    """
    plt = pyplot()

    reference = np.asarray(reference, dtype=np.float64).ravel()
    prediction = np.asarray(prediction, dtype=np.float64).ravel()
    error = prediction - reference
    offset = reference.mean() if center and reference.size else 0.0
    reference, prediction = reference - offset, prediction - offset
    mae, rmse = np.abs(error).mean(), np.sqrt((error**2).mean())
    step = max(1, reference.size // max_points)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(reference[::step], prediction[::step], s=3, alpha=0.4, linewidths=0)
    low = min(reference.min(), prediction.min())
    high = max(reference.max(), prediction.max())
    ax.plot([low, high], [low, high], color="k", linewidth=0.8)
    shifted = f" {'+' if offset < 0 else '−'} {abs(offset):.6g}" if offset else ""
    ax.set_xlabel(f"reference{shifted} ({unit})")
    ax.set_ylabel(f"predicted{shifted} ({unit})")
    ax.set_title(f"{title}: MAE {mae:.4g}, RMSE {rmse:.4g} {unit}", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path, dpi=100)
