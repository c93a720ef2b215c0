"""Fixtures of the training tests: one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread (``tests/conftest.py``)."""
