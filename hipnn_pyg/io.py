r"""Saving and loading trained models, with atomic writes."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    r"""Writes ``torch.save(obj)`` to a temporary file beside ``path`` and renames it
    into place, so a crash mid-write never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def model_state(model: nn.Module) -> dict[str, Any]:
    r"""A self-describing dictionary: class path, constructor arguments, weights."""
    if not hasattr(model, "hyperparameters"):
        raise TypeError(f"{type(model).__name__} has no hyperparameters() to save")
    cls = type(model)
    return {
        "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "hyperparameters": model.hyperparameters(),
        "state_dict": model.state_dict(),
    }


def model_from_state(state: dict[str, Any]) -> nn.Module:
    r"""Rebuilds a model from :func:`model_state`'s dictionary."""
    for key in ("class", "hyperparameters", "state_dict"):
        if key not in state:
            raise ValueError(f"not a hipnn_pyg model file: key '{key}' missing")
    module_name, _, class_name = state["class"].rpartition(".")
    if not module_name.startswith("hipnn_pyg."):
        raise ValueError(f"refusing to build class {state['class']} outside hipnn_pyg")
    cls = getattr(importlib.import_module(module_name), class_name)
    model = cls.from_hyperparameters(state["hyperparameters"]) if hasattr(
        cls, "from_hyperparameters"
    ) else cls(**state["hyperparameters"])
    model.load_state_dict(state["state_dict"])
    return model


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    r"""Saves a model (class, hyperparameters and weights) atomically to ``path``."""
    atomic_torch_save(model_state(model), path)


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    r"""Loads a model written by :func:`save_model`, or the model inside a Lightning
    checkpoint written by :class:`hipnn_pyg.train.HIPNNLightningModule`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(f"cannot read model file {path}: {error}") from error
    if isinstance(state, dict) and "hipnn_model" in state:  # a Lightning checkpoint
        state = state["hipnn_model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a hipnn_pyg model")
    model = model_from_state(state)
    model.eval()
    return model
