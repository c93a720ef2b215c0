r"""Saving and loading trained models.

Files are written atomically (:mod:`hipnn_pyg.atomic`) and read weights-only: opening a
model or checkpoint file never runs code. A pickle may name any Python callable, so a
crafted ``model.pt`` could otherwise run commands the moment it is loaded;
:func:`torch_load` accepts only tensors, plain containers and numbers, and refuses
anything else with an error naming the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hipnn_pyg.atomic import atomic_torch_save
from hipnn_pyg.nn.spec import build_from_spec, model_spec, upgrade_v1

__all__ = ["UnsafeFileError", "atomic_torch_save", "build_model", "load_model",
           "model_from_state", "model_state", "save_model", "torch_load"]

#: 2: spec + precision + weights. 1: class path + hyperparameters, upgraded on load.
FORMAT_VERSION = 2


class UnsafeFileError(ValueError):
    r"""A file holds Python objects that only a full (code-running) unpickling reads."""


#: Phrases of torch's weights-only unpickler that mean "an object outside the allowlist"
#: (rather than a broken file).
_REFUSALS = ("unsupported global", "unrecognized function", "can only build",
             "can only create new object", "unsupported class")


def _unpickler_detail(error: Exception) -> str:
    r"""What torch's weights-only unpickler stopped at, from its long message."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.split("Please use", 1)[0].split("Check the documentation", 1)[0]
    return " ".join(text.split()).rstrip(".")


def torch_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    r"""``torch.load(path, weights_only=True)``, with clear errors.

    Args:
        path (str or os.PathLike): A file written by :func:`torch.save`.
        map_location: Where to put the tensors, as :func:`torch.load` takes it.
            (default: :obj:`"cpu"`)

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeFileError: if the file holds Python objects beyond tensors, plain
            containers and numbers; they are refused because unpickling could run code.
        ValueError: if the file is not a readable torch file (truncated, foreign...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickler_detail(error)
        if not any(phrase in detail.lower() for phrase in _REFUSALS):
            raise ValueError(f"cannot read {path}: not a torch file ({detail})") from None
        raise UnsafeFileError(
            f"refusing to load {path}: it holds Python objects beyond tensors and plain "
            f"containers ({detail}), and unpickling them could run arbitrary code. Only "
            f"weights-only files are read; hipnn_pyg's model files and training checkpoints "
            f"are such files."
        ) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # truncated (the zip reader's EINVAL), foreign, corrupted
        raise ValueError(f"cannot read {path}: {error}") from error


def _floating_dtype(tensors: Any) -> torch.dtype | None:
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            return tensor.dtype
    return None


def model_state(model: nn.Module) -> dict[str, Any]:
    r"""A self-describing dictionary of plain data: the model's spec (the config tree
    that built it, :func:`~hipnn_pyg.nn.spec.model_spec`), its precision
    (``"float32"``, ``"float64"``...) and its weights."""
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "spec": model_spec(model),
        "state_dict": model.state_dict(),
    }
    dtype = _floating_dtype(model.parameters())
    if dtype is not None:
        state["dtype"] = str(dtype).removeprefix("torch.")
    return state


def _saved_dtype(state: dict[str, Any]) -> torch.dtype | None:
    r"""The precision the model was saved in: the recorded one, else (older files)
    that of its first floating-point weight."""
    name = state.get("dtype")
    if name is None:
        return _floating_dtype(state["state_dict"].values())
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"model file: dtype '{name}' is not a floating-point torch dtype")
    return dtype


def build_model(spec: dict[str, Any]) -> nn.Module:
    r"""Builds (untrained) the model that ``spec`` describes, with
    :func:`~hipnn_pyg.nn.spec.build_from_spec`: only model classes of ``hipnn_pyg`` are
    built, so a file cannot make us import or call foreign code.

    Args:
        spec (dict): A model spec, ``{"_target_": "hipnn_pyg...", **arguments}``.
    """
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ValueError("not a hipnn_pyg model file: the spec has no '_target_'")
    try:
        model = build_from_spec(spec)
    except TypeError as error:  # arguments that the classes do not take
        raise ValueError(f"the model spec does not fit {spec['_target_']}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"the spec of {spec['_target_']} builds no torch module")
    return model


def model_from_state(state: dict[str, Any], device: torch.device | None = None) -> nn.Module:
    r"""Rebuilds a model from :func:`model_state`'s dictionary (or from one of format 1,
    class path and hyperparameters, through :func:`~hipnn_pyg.nn.spec.upgrade_v1`), in
    the precision it was saved in, so that it predicts bit for bit what the saved
    model did."""
    if "spec" not in state:
        state = upgrade_v1(state)
    if not isinstance(state.get("state_dict"), dict):
        raise ValueError("not a hipnn_pyg model file: 'state_dict' missing or not a dict")
    model = build_model(state["spec"])
    dtype = _saved_dtype(state)
    if dtype is not None:  # before loading: weights are copied in without rounding
        model = model.to(dtype)
    if device is not None:  # on the device asked for, not copied into a CPU model
        model = model.to(device)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        raise ValueError(
            f"the weights do not fit {state['spec']['_target_']}: {error}"
        ) from None
    return model


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    r"""Saves a model (spec, precision and weights) atomically to
    ``path``; only tensors and plain containers, so :func:`load_model` reads it
    weights-only."""
    atomic_torch_save(model_state(model), path)


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    r"""Loads a model written by :func:`save_model`, or the model inside a Lightning
    checkpoint written by :class:`hipnn_pyg.train.HIPNNLightningModule`, in the
    precision it was saved in and in eval mode.

    The file is read weights-only (see :func:`torch_load`): a file holding other
    Python objects is refused, and no code in it runs.

    Args:
        path (str or os.PathLike): The ``model.pt`` or ``.ckpt`` file.
        map_location (str or torch.device): Where to load the weights and put the
            model (``"cuda"``, ``"meta"``...). (default: :obj:`"cpu"`)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    state = torch_load(path, map_location=map_location)
    if isinstance(state, dict) and "hipnn_model" in state:  # a Lightning checkpoint
        state = state["hipnn_model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a hipnn_pyg model")
    try:
        model = model_from_state(state, _device(map_location))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    model.eval()
    return model


def _device(map_location: Any) -> torch.device | None:
    # A device to build the model on; None for torch.load's mappings and callables.
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    return None
