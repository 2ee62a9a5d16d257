"""Validation of a composed run config: unknown keys, wrong types and impossible values fail before training."""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.checks import ConfigError, positive

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
INSTANTIATED_GROUPS = ("data", "model", "trainer", "logger", "callbacks")


def product(*factors: int) -> int:
    """``${mul:a,b,...}`` in a config: the product of the factors, so that a preset derives sizes from one key."""
    return math.prod(factors)


def if_null(value: Any, then: Any, otherwise: Any) -> Any:
    """``${if_null:x,a,b}`` in a config: a where x is null, else b (a tuned default that gives way to a preset)."""
    return then if value is None else otherwise


# at import, before Hydra composes (genlab.train imports this module)
for name, resolver in (("mul", product), ("if_null", if_null)):
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, resolver)


def _signature(target: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters, resolved type hints, accepts **kwargs) of a class constructor or a function."""
    fn = target.__init__ if inspect.isclass(target) else target
    params = dict(inspect.signature(fn).parameters)
    params.pop("self", None)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations just skip the type check
        hints = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return params, hints, var_kw


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (after resolution) can stand for a parameter annotated ``hint``."""
    if hint is Any or value is None and _allows_none(hint):
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict)
    return True  # richer types (callables, tensors, paths) are checked by the code that uses them


def _allows_none(hint: Any) -> bool:
    return hint is type(None) or (
        typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    )


def _hint_name(hint: Any) -> str:
    """A readable name of an annotation: Literal values are listed, unions joined with 'or'."""
    literals: list[Any] = []
    names: list[str] = []

    def walk(h: Any) -> None:
        origin = typing.get_origin(h)
        if origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(h):
                walk(arg)
        elif origin is typing.Literal:
            literals.extend(typing.get_args(h))
        elif h is type(None):
            names.append("null")
        else:
            names.append(getattr(h, "__name__", None) or str(h).replace("typing.", ""))

    walk(hint)
    parts = ([f"one of {literals}"] if literals else []) + names
    return " or ".join(parts)


def check_node(node: Any, key: str, supplied: Sequence[str] = ()) -> None:
    """Check a resolved config node and its children against the signatures of their ``_target_``s.

    ``supplied`` names the constructor arguments the code passes itself (e.g. ``data_shape``).
    """
    if isinstance(node, list):
        for i, child in enumerate(node):
            check_node(child, f"{key}[{i}]")
        return
    if not isinstance(node, dict):
        return
    target_path = node.get("_target_")
    if target_path is None:
        for name, child in node.items():
            check_node(child, f"{key}.{name}" if key else name)
        return
    try:
        target = get_object(target_path)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{key}._target_={target_path!r} cannot be imported: {err}") from None
    params, hints, var_kw = _signature(target)
    for name, value in node.items():
        if name in HYDRA_KEYS:
            continue
        full = f"{key}.{name}"
        if name not in params and not var_kw:
            accepted = [p for p in params if p not in supplied and not p.startswith("_")]
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f" Did you mean {key}.{close[0]}?" if close else ""
            raise ConfigError(f"{full} is not a known key.{hint} Accepted keys of {key}: {sorted(accepted)}")
        if isinstance(value, dict) and "_target_" in value:
            check_node(value, full)
            continue
        if name in hints and not _matches(value, hints[name]):
            raise ConfigError(f"{full}={value!r} is not accepted: expected {_hint_name(hints[name])}")
        if name in ("lr", "learning_rate") and str(target_path).startswith("torch.optim"):
            positive(full, value)
    if not node.get("_partial_", False):
        missing = [
            p.name for p in params.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            and p.name not in node and p.name not in supplied
        ]
        if missing:
            raise ConfigError(f"{key} is missing required keys: {missing}")


def validate_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolve ``cfg`` and check every instantiated group; return the resolved config as plain data."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - interpolation and missing-value errors name the key
        raise ConfigError(f"the config cannot be resolved: {err}") from None
    if not isinstance(resolved.get("seed"), int) or isinstance(resolved.get("seed"), bool):
        raise ConfigError(f"seed={resolved.get('seed')!r} is not accepted: expected an integer")
    check_node(resolved["data"], "data")
    check_node(resolved["model"], "model", supplied=("data_shape",))
    check_node(resolved["trainer"], "trainer", supplied=("callbacks", "logger"))
    check_node(resolved.get("logger") or {}, "logger")
    check_node(resolved.get("callbacks") or {}, "callbacks")
    return resolved


def instantiate_checked(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose value errors are re-raised as ConfigErrors naming the full key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise ConfigError(f"{key}.{cause}") from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{key}: {cause}") from None
        raise
