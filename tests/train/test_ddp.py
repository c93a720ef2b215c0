"""Two CPU processes (DDP, gloo) give the same metrics as one process with the same
global batch: full-batch steps make the result independent of how the training set
is shuffled and sharded, and the metrics are exact sums over processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hipnn_pyg.train.run import train

from .helpers import SHIPPED, TINY, compose_config, results

REPO = Path(__file__).resolve().parents[2]
RUN = [
    *SHIPPED,
    *TINY,
    "data.num_train=8",
    # odd sizes: DistributedSampler pads with duplicates, which the metrics must skip
    "data.num_val=7",
    "data.num_test=5",
    "trainer.max_epochs=2",
    "module.ema_decay=0.5",
]


@pytest.mark.slow
def test_ddp_cpu_matches_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(compose_config("train", single, [*RUN, "data.batch_size=8", "data.val_batch_size=8"]))

    overrides = [*RUN, "trainer=ddp_cpu", "data.batch_size=4", "data.val_batch_size=2",
                 f"hydra.run.dir={ddp}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.run(
        [sys.executable, "scripts/train.py", *overrides], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert "distributed_backend=gloo" in process.stderr + process.stdout

    want, got = results(single)["metrics"], results(ddp)["metrics"]
    for key in ("val/loss", "val/energy_mae", "val/energy_rmse", "val/forces_mae",
                "val/forces_rmse", "test/energy_mae", "test/forces_mae"):
        assert got[key] == pytest.approx(want[key], rel=2e-5), key
