r"""The jobs of ``hipnn-train -m`` sweeps side by side (not a test): each job's
command-line overrides, validation loss and test errors, best validation loss first.

    python scripts/sweep_table.py logs/train/multiruns/<date>/<time> [more sweep folders]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

#: Result keys shown, as (column title, key in results.json's metrics, scale).
COLUMNS = (
    ("val loss", "val/loss", 1.0),
    ("test E MAE (meV)", "test/energy_mae", 1000.0),
    ("test F MAE (meV/Å)", "test/forces_mae", 1000.0),
)


def jobs(sweep: Path) -> list[dict]:
    r"""One row per finished job folder (``<sweep>/<n>/results.json``)."""
    rows = []
    for results in sorted(sweep.glob("*/results.json")):
        folder = results.parent
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads(results.read_text())["metrics"]
        rows.append({"job": str(folder), "overrides": overrides, "metrics": metrics})
    return rows


def table(rows: list[dict], common: set[str], sort: str = "val/loss") -> str:
    lines = ["| overrides | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in sorted(rows, key=lambda r: r["metrics"].get(sort, float("inf"))):
        varied = " ".join(o for o in row["overrides"] if o not in common) or "(none)"
        cells = [f"{row['metrics'][key] * scale:.4g}" if key in row["metrics"] else "-"
                 for _, key, scale in COLUMNS]
        lines.append(f"| {varied} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--sort", default="val/loss",
                        help="metric to rank by; a test error (e.g. test/forces_mae) when "
                             "the sweep changes the loss weights, which rescale val/loss")
    args = parser.parse_args()
    rows = [row for sweep in args.sweeps for row in jobs(sweep)]
    if not rows:
        raise SystemExit(f"no finished jobs (*/results.json) under {args.sweeps}")
    common = set.intersection(*(set(row["overrides"]) for row in rows))
    print("common overrides: " + " ".join(sorted(common)))
    print(table(rows, common, args.sort))


if __name__ == "__main__":
    main()
