"""Shared fixtures: the real data folder and small, seeded models."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]


def _import_triton_for_its_interpreter() -> None:
    # Triton's interpreter (TRITON_INTERPRET=1) covers triton.language's own helpers
    # (tl.sum...) only when it is set as triton is first imported, and torch_geometric
    # imports triton while the test modules are collected. Without a GPU (nothing to
    # compile for), import it here under the interpreter and put the environment back:
    # tests/nn/test_triton_kernels.py sets TRITON_INTERPRET again for its own tests only.
    if importlib.util.find_spec("triton") is None or torch.cuda.is_available():
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except ImportError:  # a broken install: the Triton tests skip or say why
        pass
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


_import_triton_for_its_interpreter()


def _one_thread_per_worker() -> None:
    # Under pytest-xdist (-n N) the N workers already fill the cores: torch's intra-op
    # threads in each worker, and in the processes its tests start, would only contend.
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


_one_thread_per_worker()

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


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: one thread is several times faster.
    with _torch_threads(1):
        yield


@pytest.fixture
def two_threads() -> Iterator[None]:
    # The C++ kernels split their work over torch's threads (at::parallel_for): their
    # tests take two, also under pytest-xdist's one thread per worker.
    with _torch_threads(2):
        yield


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
