"""Shared fixtures: the real data folder and small, seeded models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property-based tests: the same draws on every run by default ("ci"), so that CI is
# reproducible; HYPOTHESIS_PROFILE=explore draws new ones on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def data_dir() -> Path:
    """The shared reference data: $HIPNN_DATA_DIR, else ../shared/data beside the repo."""
    return Path(os.environ.get("HIPNN_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set HIPNN_DATA_DIR)")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: one thread is several times faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
