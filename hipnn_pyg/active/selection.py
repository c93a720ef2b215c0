r"""Choosing which candidates the oracle labels.

* :func:`select_by_committee`: query by committee. Candidates whose disagreement
  passes the threshold, highest first, at most ``max_frames``, spread out: at most
  ``max_per_group`` from one trajectory (or pool) and none closer than
  ``min_separation`` frames along it to one already taken. With ``diversity="fps"``
  a shortlist of ``shortlist_factor`` times as many is made that way, and the picks
  are thinned from it by farthest-point sampling (starting from the most uncertain),
  so a batch does not spend its labels on near-copies of one uncertain structure.
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
#: Batch diversity rules of :func:`select_by_committee`.
DIVERSITY = (None, "fps")


def inverse_distances(atoms: Atoms) -> np.ndarray:
    r"""The structure's descriptor for diversity: inverse interatomic distances
    ``1/r_ij`` (1/Å) over atom pairs ``i < j`` (minimum image where periodic), invariant
    to rotation and translation."""
    distances = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    upper = np.triu_indices(len(atoms), k=1)
    return 1.0 / np.maximum(distances[upper], 1e-6)


def farthest_points(candidates: Sequence[Atoms], order: Sequence[int], count: int) -> list[int]:
    r"""``count`` of the candidate indices in ``order``, by farthest-point sampling on
    :func:`inverse_distances` (root-mean-square difference), starting from ``order[0]``.
    Structures of other atom sequences are infinitely far apart."""
    order = list(order)
    if len(order) <= count:
        return order
    descriptors = [inverse_distances(candidates[i]) for i in order]
    keys = [tuple(candidates[i].numbers) for i in order]
    nearest = np.full(len(order), np.inf)
    chosen = [0]
    for _ in range(count - 1):
        last = chosen[-1]
        for k in range(len(order)):
            if keys[k] == keys[last]:
                rms = float(np.sqrt(np.mean((descriptors[k] - descriptors[last]) ** 2)))
                nearest[k] = min(nearest[k], rms)
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))  # ties: the more uncertain (earlier)
    return [order[k] for k in chosen]


def disagreement(atoms: Atoms, measure: str) -> float:
    r"""The disagreement ``measure`` (``"energy"``: ρ, ``"forces"``) that exploration
    stored in ``atoms.info``."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure '{measure}'; choose one of {sorted(MEASURES)}")
    return float(atoms.info[MEASURES[measure]])


def select_by_committee(candidates: Sequence[Atoms], measure: str = "energy",
                        threshold: float = 0.0, max_frames: int = 10,
                        max_per_group: int | None = None, min_separation: int = 0,
                        diversity: str | None = None, shortlist_factor: int = 3) -> list[int]:
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
        diversity (str, optional): ``"fps"``: thin a shortlist by farthest-point
            sampling (see module docs). (default: :obj:`None`)
        shortlist_factor (int): The shortlist's size in multiples of ``max_frames``.
            (default: :obj:`3`)
    """
    if diversity not in DIVERSITY:
        raise ValueError(f"unknown diversity rule {diversity!r}; choose one of {DIVERSITY}")
    if diversity is not None:
        shortlist = select_by_committee(candidates, measure, threshold,
                                        max_frames * max(int(shortlist_factor), 1),
                                        max_per_group, min_separation)
        return farthest_points(candidates, shortlist, max_frames)
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
