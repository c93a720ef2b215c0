r"""The package's own exception types (importable from anywhere without cycles)."""

from __future__ import annotations


class GeometryError(ValueError):
    r"""A structure that is not a valid geometry: NaN or infinite positions, or atoms
    closer than the model's ``min_distance``. MD explorers stop a trajectory on it (and
    on nothing else: other errors are bugs or out of memory, and pass through)."""


__all__ = ["GeometryError"]
