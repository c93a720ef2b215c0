r"""Training, validation and test errors of finished ``same_loop.py`` runs, from their
records and saved weights: how far each model fits its 950 training frames beyond what
carries over to new frames (over-fitting), which the test error alone does not show.

    python scripts/same_loop_fit.py logs/bench/mace_own_30_seeds/ethanol_*_s1.json

Each record's split is rebuilt from its seed (the same 950 / 50 frames it trained and
validated on) and its model from the record's config and ``<record>.weights.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import same_loop  # noqa: E402 - the harness's split and errors (siblings)
from bench_pareto import rebuild  # noqa: E402


def fit_errors(record: Path, data_dir: Path) -> dict[str, tuple[float, float]]:
    r"""``{part: (energy MAE meV, force MAE meV/Å)}`` for train, val and test."""
    result = json.loads(record.read_text())
    _, run = rebuild(result, record.with_suffix(".weights.pt"))
    data = same_loop.split(data_dir, result["molecule"], result["seed"])
    out = {}
    for part in ("train", "val", "test"):
        energy, forces, _ = same_loop.errors(run, data[part], result["offset_eV"])
        out[part] = (1000 * energy, 1000 * forces)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="same_loop.py JSON records")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding rmd17/ (default: $HIPNN_DATA_DIR or ../shared/data)")
    args = parser.parse_args()
    from hipnn_pyg.train.resolvers import reference_data_dir

    torch.set_num_threads(1)
    data_dir = args.data_dir or Path(reference_data_dir())
    print("| run | train E / F | validation E / F | test E / F | test F / train F |")
    print("|---|---|---|---|---|")
    for record in args.records:
        errors = fit_errors(record, data_dir)
        cells = [f"{e:.2f} / {f:.2f}" for e, f in errors.values()]
        print(f"| {record.stem} | {' | '.join(cells)} | "
              f"{errors['test'][1] / errors['train'][1]:.1f} |")


if __name__ == "__main__":
    main()
