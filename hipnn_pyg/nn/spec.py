r"""One description of a model: the config tree that built it.

A model's *spec* is the tree of ``{"_target_": "hipnn_pyg...Class", **arguments}`` that
Hydra would instantiate, nested for injected parts (sensitivity, representation,
heads). Every module deriving from :class:`Configurable` records its constructor
arguments when built, from Python or by Hydra alike, so :func:`model_spec` never goes
stale; :func:`build_from_spec` rebuilds the (untrained) model and refuses any target
outside ``hipnn_pyg``, so a model file cannot run foreign code.

Files of format version 1 stored a class path and hand-written hyperparameters, with
the weights of the pre-split layout; :func:`upgrade_v1` turns them into a spec and
today's parameter names.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

#: Only targets under this package are built from a spec.
TRUSTED_PREFIX = "hipnn_pyg."
#: Hydra's own keys that a spec may carry and the builder may ignore.
_HYDRA_KEYS = frozenset({"_target_", "_convert_", "_recursive_"})


class Configurable:
    r"""Mixin that records the constructor arguments of a module, as bound to its
    signature (defaults filled in), for :func:`model_spec`.

    Only the outermost constructor call records: a subclass that builds its parts and
    calls ``super().__init__(parts)`` is saved with its own (flat) arguments.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__init__)  # type: ignore[method-assign]


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))  # self
            for name, parameter in signature.parameters.items():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(arguments.pop(name, {}))
                elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                    raise TypeError(f"{type(self).__name__}: *args cannot be recorded")
            self.__dict__["_config"] = arguments  # bypasses nn.Module.__setattr__
        init(self, *args, **kwargs)

    return wrapper


def target_name(obj: object) -> str:
    r"""The import path of ``obj``'s class, as written in ``_target_``."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def model_spec(module: nn.Module) -> dict[str, Any]:
    r"""The config tree that rebuilds ``module``: ``{"_target_": ..., **arguments}``,
    with injected modules replaced by their own specs and tensors by lists.

    Raises:
        TypeError: If ``module`` (or a part passed to its constructor) does not derive
            from :class:`Configurable`.
    """
    if "_config" not in module.__dict__:
        raise TypeError(
            f"{type(module).__name__} does not record its constructor arguments; "
            "derive it from hipnn_pyg.nn.spec.Configurable to save it"
        )
    arguments = {name: _plain(value, f"{type(module).__name__}.{name}")
                 for name, value in module.__dict__["_config"].items()}
    return {"_target_": target_name(module), **arguments}


def _plain(value: Any, where: str) -> Any:
    r"""Turns a recorded argument into plain data (also Hydra's DictConfig/ListConfig)."""
    if isinstance(value, nn.Module):
        return model_spec(value)
    if isinstance(value, Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, Sequence):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"cannot save argument {where} of type {type(value).__name__} in a spec")


def build_from_spec(spec: Any) -> Any:
    r"""Builds the objects of a spec tree, innermost first; plain values pass through.

    Raises:
        ValueError: If a ``_target_`` lies outside ``hipnn_pyg`` or cannot be found.
    """
    if isinstance(spec, Mapping):
        arguments = {key: build_from_spec(value) for key, value in spec.items()
                     if key not in _HYDRA_KEYS}
        unknown = sorted(key for key in arguments if key.startswith("_") and key.endswith("_"))
        if unknown:
            raise ValueError(f"unsupported Hydra keys {unknown} in a model spec")
        if "_target_" not in spec:
            return arguments
        return _resolve(str(spec["_target_"]))(**arguments)
    if isinstance(spec, (list, tuple)):
        return [build_from_spec(value) for value in spec]
    return spec


def _resolve(target: str) -> Callable[..., Any]:
    if not target.startswith(TRUSTED_PREFIX):
        raise ValueError(
            f"refusing to build '{target}': model specs may only name classes inside "
            f"{TRUSTED_PREFIX.rstrip('.')}"
        )
    module_name, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model spec names '{target}', which does not exist") from error
    # Only model parts: a spec must not call other functions of the package.
    if not (isinstance(found, type) and issubclass(found, Configurable)
            and issubclass(found, nn.Module)):
        raise ValueError(f"refusing to build '{target}': not a torch module class of "
                         "hipnn_pyg that records its arguments (Configurable)")
    return found


# --- format version 1: class path + hyperparameters, weights of the pre-split layout ---

#: Old HIP-NN state-dict prefixes and their new places.
_V1_HIPNN_KEYS = (
    ("interactions.", "representation.interactions."),
    ("atom_layers.", "representation.atom_layers."),
    ("energy_head.", "heads.energy."),
)


def _v1_hipnn_key(key: str) -> str:
    for old, new in _V1_HIPNN_KEYS:
        if key.startswith(old):
            return new + key.removeprefix(old)
    raise KeyError(f"unexpected key '{key}' in a format-1 HIP-NN state dict")


def convert_v1_state_dict(class_path: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    r"""Maps the weights of a format-1 ``HIPNN`` or ``HIPNNPotential`` file onto today's
    parameter names. The energy head of a separate charge model, never used, is
    dropped."""
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if class_path.endswith(".HIPNN"):
            converted[_v1_hipnn_key(key)] = value
        elif key.startswith("energy_model."):
            converted[_v1_hipnn_key(key.removeprefix("energy_model."))] = value
        elif key.startswith("charge_head."):
            converted["heads.charges." + key.removeprefix("charge_head.")] = value
        elif key.startswith("charge_model.") and ".energy_head." not in f".{key}":
            inner = _v1_hipnn_key(key.removeprefix("charge_model."))
            if inner.startswith("representation."):
                converted["heads.charges." + inner] = value
        elif not key.startswith("charge_model."):
            raise KeyError(f"unexpected key '{key}' in a format-1 {class_path} state dict")
    return converted


def spec_from_v1(class_path: str, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    r"""The spec of a format-1 model: ``HIPNN`` (flat hyperparameters) or
    ``HIPNNPotential`` (nested ``class``/``hyperparameters`` of its HIP-NNs)."""
    if not class_path.startswith(TRUSTED_PREFIX):
        raise ValueError(f"refusing to build class '{class_path}' outside hipnn_pyg")
    if class_path.endswith(".HIPNN"):
        return {"_target_": "hipnn_pyg.nn.model.HIPNN", **hyperparameters}
    if class_path.endswith(".HIPNNPotential"):
        nested = {key: None if hyperparameters.get(key) is None else spec_from_v1(
            hyperparameters[key]["class"], hyperparameters[key]["hyperparameters"])
            for key in ("energy_model", "charge_model")}
        return {"_target_": "hipnn_pyg.nn.model.HIPNNPotential", **nested,
                "origin": hyperparameters.get("origin", "center_of_mass")}
    raise ValueError(f"format-1 model file of unknown class '{class_path}'")


def upgrade_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    r"""Turns a format-1 model dictionary (``class``, ``hyperparameters``,
    ``state_dict``) into today's (``spec``, ``state_dict`` with today's parameter
    names); other entries, such as ``dtype``, are kept."""
    for key in ("class", "hyperparameters", "state_dict"):
        if key not in state:
            raise ValueError(f"not a hipnn_pyg model file: key '{key}' missing")
    class_path = str(state["class"])
    upgraded = {key: value for key, value in state.items()
                if key not in ("class", "hyperparameters", "state_dict")}
    upgraded.update(
        format_version=2,
        spec=spec_from_v1(class_path, state["hyperparameters"]),
        state_dict=convert_v1_state_dict(class_path, state["state_dict"]),
    )
    return upgraded
