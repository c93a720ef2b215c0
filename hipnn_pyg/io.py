r"""Saving and loading trained models, with atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hipnn_pyg.nn.spec import build_from_spec, model_spec, upgrade_v1

#: 2: spec + weights (1: class path + hyperparameters, read through upgrade_v1).
FORMAT_VERSION = 2


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
    r"""A self-describing dictionary: the model's spec (the config tree that built it,
    :func:`~hipnn_pyg.nn.spec.model_spec`), its precision and its weights; plain data
    only."""
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "spec": model_spec(model),
        "state_dict": model.state_dict(),
    }
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None:
        state["dtype"] = str(dtype).removeprefix("torch.")
    return state


def model_from_state(state: dict[str, Any]) -> nn.Module:
    r"""Rebuilds a model from :func:`model_state`'s dictionary (or a format-1 one:
    class path and hyperparameters), in the precision it was saved in."""
    if "spec" not in state:
        state = upgrade_v1(state)
    if "state_dict" not in state:
        raise ValueError("not a hipnn_pyg model file: key 'state_dict' missing")
    model = build_from_spec(state["spec"])
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model spec builds a {type(model).__name__}, not a model")
    weights = state["state_dict"]
    name = state.get("dtype") or next(
        (str(w.dtype).removeprefix("torch.") for w in weights.values()
         if w.is_floating_point()), None)
    if name is not None:  # before loading: weights are copied in without rounding
        model = model.to(getattr(torch, name))
    model.load_state_dict(weights)
    return model


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    r"""Saves a model (spec, precision and weights) atomically to ``path``."""
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
