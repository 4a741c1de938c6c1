"""Small value checks shared by configs, data and search: each returns the value or raises
`ConfigError` naming the field and a value to pass instead.

Example:
    >>> positive_int(32, "batch_size", "batch_size=32")
    32
    >>> finite_real(float("nan")) is None
    True
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import ConfigError


def finite_real(value: Any) -> float | None:
    """`value` as a float if it is a finite real number (bools and strings are not), else None."""
    if hasattr(value, "ndim") and getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d tensor or array
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def positive_int(value: Any, name: str, example: str) -> int:
    """`value` if it is an int ≥ 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(
            f"{name} must be a positive int, got {value!r}: pass {example} or another positive "
            "number."
        )
    return int(value)


def positive_number(value: Any, name: str, example: str) -> float:
    """`value` as a float if it is finite and > 0."""
    number = finite_real(value)
    if number is None or number <= 0:
        raise ConfigError(
            f"{name} must be a finite number > 0, got {value!r}: pass e.g. {example}."
        )
    return number
