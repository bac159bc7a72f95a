"""Checks of the arguments that users pass to the public functions.

Each raises the right exception type (TypeError for the wrong kind of thing, ValueError for a
value out of range) with a message that names the function, the argument and what it got.

>>> check_integer("moons", "n_samples", 0, low=2)
Traceback (most recent call last):
...
ValueError: moons: n_samples must be at least 2, got 0
>>> check_number("SGD", "lr", -0.5)
Traceback (most recent call last):
...
ValueError: SGD: lr must be a finite number >= 0.0, got -0.5
"""

from __future__ import annotations

import math
import numbers


def check_integer(where: str, name: str, value, low: int = 1) -> int:
    """``value`` as an int, after checking that it is an integer (not a bool) >= ``low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be an integer, got {value!r}")
    if value < low:
        bound = "a positive integer" if low == 1 else f"at least {low}"
        raise ValueError(f"{where}: {name} must be {bound}, got {value!r}")
    return int(value)


def check_number(where: str, name: str, value, low: float = 0.0, *, strict: bool = False) -> float:
    """``value`` as a float, after checking that it is a finite real number >= ``low``
    (> ``low`` when ``strict``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{where}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)
