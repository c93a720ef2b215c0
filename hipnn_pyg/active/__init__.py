r"""Active learning by query by committee (``hipnn-active``, ``conf/active.yaml``).

One module per role: :mod:`~hipnn_pyg.active.committee` (disagreement measures),
:mod:`~hipnn_pyg.active.explore` (candidate structures),
:mod:`~hipnn_pyg.active.selection`, :mod:`~hipnn_pyg.active.oracle` (resumable
labelling), :mod:`~hipnn_pyg.active.training` (the committee, through the Hydra
training), :mod:`~hipnn_pyg.active.report` and :mod:`~hipnn_pyg.active.loop` (rounds,
run folder, state file).
"""

from hipnn_pyg.active.committee import Committee, energy_disagreement, force_disagreement
from hipnn_pyg.active.explore import LangevinExplorer, NormalModeExplorer, PoolExplorer
from hipnn_pyg.active.loop import ActiveLearning, run_active
from hipnn_pyg.active.oracle import Oracle, label_frames
from hipnn_pyg.active.selection import select_by_committee, select_random

__all__ = [
    "ActiveLearning",
    "Committee",
    "LangevinExplorer",
    "NormalModeExplorer",
    "Oracle",
    "PoolExplorer",
    "energy_disagreement",
    "force_disagreement",
    "label_frames",
    "run_active",
    "select_by_committee",
    "select_random",
]
