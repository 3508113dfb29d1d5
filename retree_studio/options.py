"""Checking option values that arrive from a user interface or an API call (strings, floats, None),
with messages that name the option and its allowed range."""
from __future__ import annotations

import math
import re

PATH_IN_MESSAGE = re.compile(r"(?<![\w.~])(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")  # absolute paths


def readable(exc: BaseException | str) -> str:
    """An exception (or a message) for people: server folders stripped from paths, the file names kept."""
    text = str(exc)
    return PATH_IN_MESSAGE.sub(r"\1", text) or (type(exc).__name__ if isinstance(exc, BaseException) else "")


def _number(value) -> float:
    if isinstance(value, bool):  # float(True) is 1.0, but a yes/no is no count
        raise TypeError("a truth value is not a number")
    return float(value)


def whole_number(value, name: str, low: int, high: int) -> int:
    """`value` as an int within [low, high], or a ValueError naming the option."""
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def bounded_number(value, name: str, low: float, high: float) -> float:
    """`value` as a float within [low, high], or a ValueError naming the option."""
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return number


__all__ = ["readable", "whole_number", "bounded_number"]
