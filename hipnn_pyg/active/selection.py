r"""Choosing which candidates the oracle labels.

* :func:`select_by_committee`: query by committee. Candidates whose disagreement
  passes the threshold, highest first, at most ``max_frames``, spread out: at most
  ``max_per_group`` from one trajectory (or pool) and none closer than
  ``min_separation`` frames along it to one already taken.
* :func:`select_random`: the baseline. The same number of frames drawn uniformly
  from the same candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from hipnn_pyg.active.committee import MEASURES

#: Selection methods of the loop (``selection=...``).
METHODS = ("qbc", "random")


def disagreement(atoms: Atoms, measure: str) -> float:
    r"""The disagreement ``measure`` (``"energy"``: ρ, ``"forces"``) that exploration
    stored in ``atoms.info``."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure '{measure}'; choose one of {sorted(MEASURES)}")
    return float(atoms.info[MEASURES[measure]])


def select_by_committee(candidates: Sequence[Atoms], measure: str = "energy",
                        threshold: float = 0.0, max_frames: int = 10,
                        max_per_group: int | None = None, min_separation: int = 0) -> list[int]:
    r"""Indices of the candidates to label, by query by committee (see module docs),
    in decreasing disagreement.

    Args:
        candidates (Sequence[Atoms]): Frames with the committee's verdict in ``info``
            (``rho``, ``force_dev``) and ``active_group``/``active_order``.
        measure (str): ``"energy"`` or ``"forces"``. (default: :obj:`"energy"`)
        threshold (float): Keep only candidates above this. (default: :obj:`0.0`)
        max_frames (int): Most frames to pick. (default: :obj:`10`)
        max_per_group (int, optional): Most frames from one group. (default:
            :obj:`None`, no limit)
        min_separation (int): Smallest distance in ``active_order`` between two picks
            of one group. (default: :obj:`0`)
    """
    values = np.array([disagreement(atoms, measure) for atoms in candidates])
    order = np.argsort(-values, kind="stable")
    picked: list[int] = []
    taken: dict[str, list[int]] = {}
    for index in order:
        if len(picked) >= max_frames or not values[index] > threshold:
            break
        info = candidates[index].info
        group, position = str(info.get("active_group", index)), int(info.get("active_order", 0))
        others = taken.setdefault(group, [])
        if max_per_group is not None and len(others) >= max_per_group:
            continue
        if any(abs(position - other) < min_separation for other in others):
            continue
        others.append(position)
        picked.append(int(index))
    return picked


def select_random(candidates: Sequence[Atoms], count: int, seed: int) -> list[int]:
    r"""``count`` candidate indices (or all, if fewer) drawn without replacement with
    ``seed``, in the order drawn."""
    count = max(min(int(count), len(candidates)), 0)
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(len(candidates), size=count, replace=False)]
