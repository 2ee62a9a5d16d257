"""Checks of user-facing values: each failure is a ConfigError naming the key, the value and what is accepted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is impossible; the message names the key, the value and the accepted values."""


def check_arg(key: str, value: Any, ok: bool, accepted: str) -> None:
    """Raise a ConfigError naming ``key``, ``value`` and what is ``accepted`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted: expected {accepted}")


def positive(key: str, value: T, *, allow_zero: bool = False) -> T:
    """``value`` if it is a number > 0 (>= 0 with ``allow_zero``), else a ConfigError naming ``key``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value != value:
        accepted = "a number >= 0" if allow_zero else "a number > 0"
        raise ConfigError(f"{key}={value!r} is not accepted: expected {accepted}")
    return value


def positive_int(key: str, value: Any, *, allow_zero: bool = False) -> int:
    """``value`` if it is an int > 0 (>= 0 with ``allow_zero``), else a ConfigError naming ``key``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not accepted: expected an integer")
    return positive(key, value, allow_zero=allow_zero)


def fraction(key: str, value: Any, *, open_low: bool = True, open_high: bool = True) -> float:
    """``value`` if it is a number in (0, 1) (bounds closed on request), else a ConfigError."""
    lo_ok = value > 0 if open_low else value >= 0
    hi_ok = value < 1 if open_high else value <= 1
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (lo_ok and hi_ok):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"{key}={value!r} is not accepted: expected a number in {lo}0, 1{hi}")
    return float(value)


def one_of(key: str, value: T, choices: Iterable[Any]) -> T:
    """``value`` if it is one of ``choices``, else a ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not accepted: expected one of {choices}")
    return value
