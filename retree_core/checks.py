"""The checks of option values, for the configs, the command line and the app: each error names the option."""
from __future__ import annotations

import math
import numbers
from typing import Any


class ConfigError(ValueError):
    """An option out of range, or options that do not fit together: a usage error (the CLI exits 2)."""


def _number(value: Any, name: str, kind: str) -> float:
    if isinstance(value, bool):  # float(True) is 1.0, but a yes/no is no count
        raise ConfigError(f"{name} must be a {kind}, got {value!r}".strip())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind}, got {value!r}".strip()) from None


def whole_number(value: Any, name: str, low: int, high: int | None = None) -> int:
    """`value` (a number or its text) as an int from `low` to `high` (None: no upper bound), or a ValueError
    naming the option: the one check of whole-number options, for the command line and the app."""
    number = _number(value, name, "whole number")
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{name} must be a whole number, got {value!r}".strip())
    if high is None and number < low:
        raise ConfigError(f"{name} must be at least {low}, got {value!r}".strip())
    if high is not None and not low <= number <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}".strip())
    return int(number)


def bounded_number(value: Any, name: str, low: float, high: float, low_open: bool = False) -> float:
    """`value` as a finite float from `low` (excluded when `low_open`) to `high`, or a ValueError naming
    the option: the one check of number options, for the command line and the app."""
    number = _number(value, name, "number")
    if not (math.isfinite(number) and (low < number if low_open else low <= number) and number <= high):
        span = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise ConfigError(f"{name} must be a number {span}, got {value!r}".strip())
    return number


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
