r"""What an active-learning run reports: errors of the committee on fixed test sets,
per-round metrics, ``summary.csv``, the learning-curve PNG and the one-line summary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hipnn_pyg.active.committee import Committee
from hipnn_pyg.atomic import atomic_write_text

#: Leading columns of ``summary.csv``; error columns (eV, eV/Å) and ``stop_reason`` follow.
SUMMARY_COLUMNS = ["round", "train_size", "labelled", "failed", "oracle_seconds",
                   "candidates", "rho_mean", "rho_max", "force_dev_max"]
#: The disagreement measures whose rank correlation with the error is reported.
MEASURE_KEYS = ("rho", "rho_centred", "force_dev")
#: Error columns per split (``val`` and ``test_<name>``).
ERROR_KEYS = ["energy_mae", "energy_rmse", "forces_mae", "forces_rmse"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def committee_errors(committee: Committee, frames: Sequence[Atoms]) -> dict[str, float]:
    r"""The committee mean's errors on labelled ``frames`` and how well its disagreement
    ranks them.

    Energies (eV per structure): ``energy_mae``, ``energy_rmse`` and
    ``energy_mae_offset_free`` (after removing the mean error over the frames, which
    moves no force). Forces (eV/Å, components): ``forces_mae``, ``forces_rmse``, and over
    the frames' own force RMSEs their 95th percentile ``frame_forces_rmse_p95`` and
    maximum ``frame_forces_rmse_max``. ``spearman_<measure>``: the rank correlation of
    each disagreement measure (``rho``, ``rho_centred``, ``force_dev``) with the frames'
    force RMSE (with the offset-free absolute energy error without forces).
    """
    from scipy.stats import spearmanr

    energy, forces, measures = [], [], []
    for atoms, prediction in zip(frames, committee.predict_many(frames), strict=True):
        reference = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in reference:
            raise ValueError(f"test frame {len(energy)} has no energy label")
        energy.append(prediction.energy - float(reference["energy"]))
        measures.append({key: getattr(prediction, key) for key in MEASURE_KEYS})
        if "forces" in reference:
            forces.append(prediction.forces - np.asarray(reference["forces"]))
    energy_error = np.array(energy)
    offset_free = energy_error - energy_error.mean()
    errors = {"energy_mae": float(np.mean(np.abs(energy_error))),
              "energy_rmse": float(np.sqrt(np.mean(np.square(energy_error)))),
              "energy_mae_offset_free": float(np.mean(np.abs(offset_free)))}
    per_frame = np.abs(offset_free)
    if len(forces) == len(frames):
        flat = np.concatenate([f.reshape(-1) for f in forces])
        per_frame = np.array([np.sqrt(np.mean(np.square(f))) for f in forces])
        errors.update(forces_mae=float(np.mean(np.abs(flat))),
                      forces_rmse=float(np.sqrt(np.mean(np.square(flat)))),
                      frame_forces_rmse_p95=float(np.percentile(per_frame, 95)),
                      frame_forces_rmse_max=float(per_frame.max()))
    if len(frames) > 2:
        for key in MEASURE_KEYS:
            values = np.array([m[key] for m in measures])
            if np.ptp(values) > 0 and np.ptp(per_frame) > 0:
                errors[f"spearman_{key}"] = float(spearmanr(values, per_frame)[0])
    return errors


def member_validation(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    r"""The members' validation errors (from their ``results.json``), averaged."""
    out: dict[str, float] = {}
    for key in ERROR_KEYS:
        values = [float(r["metrics"][f"val/{key}"]) for r in results
                  if f"val/{key}" in r.get("metrics", {})]
        if values:
            out[key] = float(np.mean(values))
    return out


def summary_row(metrics: dict[str, Any]) -> dict[str, Any]:
    r"""One ``summary.csv`` row from a round's ``metrics.json``."""
    row = {key: metrics.get(key, "") for key in SUMMARY_COLUMNS}
    for split, errors in metrics.get("errors", {}).items():
        row.update({f"{split}_{key}": value for key, value in errors.items()})
    row["stop_reason"] = metrics.get("stop_reason", "")
    return row


def write_summary(path: Path, rounds: Sequence[dict[str, Any]]) -> None:
    r"""``summary.csv``: one row per round (see :data:`SUMMARY_COLUMNS`)."""
    rows = [summary_row(metrics) for metrics in rounds]
    columns = list(SUMMARY_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns and key != "stop_reason"]
    columns.append("stop_reason")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def plot_learning_curve(path: Path, rounds: Sequence[dict[str, Any]], title: str = "") -> None:
    r"""Test error (validation when there is no test set) of the committee against the
    training-set size: energy MAE (meV) and force MAE (meV/Å), log-log."""
    from hipnn_pyg.plotting import pyplot, save_figure

    trained = [m for m in rounds if m.get("errors")]
    if not trained:
        return
    splits = sorted({s for m in trained for s in m["errors"] if s.startswith("test_")})
    splits = splits or ["val"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, key, unit in zip(axes, ("energy_mae", "forces_mae"), ("meV", "meV/Å"),
                               strict=True):
        for split in splits:
            points = [(m["train_size"], 1000 * m["errors"][split][key]) for m in trained
                      if key in m["errors"].get(split, {})]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(x, y, "o-", label=split.removeprefix("test_"))
        axis.set_xlabel("training-set size (frames)")
        axis.set_ylabel(f"{key.replace('_', ' ')} ({unit})")
        log_axes(axis, [m["train_size"] for m in trained])
        axis.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def log_axes(axis: Any, sizes: Sequence[float]) -> None:
    r"""Log-log axes with plain-number labels: x ticks at the training-set sizes, y
    ticks at 1, 2 and 5 times powers of ten."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(sorted(set(sizes)))
    axis.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    for ax in (axis.xaxis, axis.yaxis):
        ax.set_minor_formatter(NullFormatter())
    axis.grid(alpha=0.3, which="both")


def one_line(metrics: dict[str, Any]) -> str:
    r"""A round in one line, e.g. ``round 1: 24 frames, +8 labelled (0 failed, 0.3 s
    oracle); 120 candidates, rho mean 2.1 max 9.8 meV/atom^0.5; test_md E 12 meV F 98
    meV/A``."""
    parts = [f"round {metrics['round']}: {metrics.get('train_size', '?')} training frames"]
    if "labelled" in metrics:
        parts[-1] += (f", +{metrics['labelled']} labelled ({metrics.get('failed', 0)} failed, "
                      f"{metrics.get('oracle_seconds', 0.0):.1f} s oracle)")
    if metrics.get("candidates"):
        parts.append(f"{metrics['candidates']} candidates, rho mean "
                     f"{1000 * metrics['rho_mean']:.2f} max {1000 * metrics['rho_max']:.2f} "
                     "meV/atom^0.5")
    for split, errors in metrics.get("errors", {}).items():
        text = f"{split} E {1000 * errors['energy_mae']:.3g} meV"
        if "forces_mae" in errors:
            text += f" F {1000 * errors['forces_mae']:.3g} meV/A"
        parts.append(text)
    if metrics.get("stop_reason"):
        parts.append(f"stop: {metrics['stop_reason']}")
    return "; ".join(parts)
