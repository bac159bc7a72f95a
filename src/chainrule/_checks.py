"""Checks of the arguments that users pass to the public functions.

Each raises the right exception type (TypeError for the wrong kind of thing, ValueError for a
value out of range) with a message that names the function, the argument and what it got.

An integer is any ``numbers.Integral``, so numpy's integers (``np.int64(3)``, or an item of
``list(np.array([16, 1]))``) count as much as Python's ``int``; a bool does not, although
Python makes ``True`` an int. A flag is ``True`` or ``False``, Python's or numpy's.

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
from typing import Any


def is_integer(value: object) -> bool:
    """True for an integer of any kind (Python's, numpy's), False for a bool and anything else.

    >>> is_integer(3), is_integer(True), is_integer(3.0)
    (True, False, False)
    """
    # numpy's bool is not a numbers.Integral, so only Python's bool needs turning away here.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_integer(where: str, name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int, after checking that it is an integer (not a bool) >= ``low``."""
    if not is_integer(value):
        raise TypeError(f"{where}: {name} must be an integer, got {value!r}")
    if value < low:
        bound = "a positive integer" if low == 1 else f"at least {low}"
        raise ValueError(f"{where}: {name} must be {bound}, got {value!r}")
    return int(value)


def check_number(where: str, name: str, value: float, low: float = 0.0, *, strict: bool = False) -> float:
    """``value`` as a float, after checking that it is a finite real number >= ``low``
    (> ``low`` when ``strict``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{where}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_flag(where: str, name: str, value: object) -> bool:
    """``value`` as a bool, after checking that it is True or False (Python's or numpy's).

    A string such as ``"False"`` is refused: it is truthy, so it would silently mean True.

    >>> check_flag("Neuron", "nonlin", "no")
    Traceback (most recent call last):
    ...
    TypeError: Neuron: nonlin must be True or False, got 'no'
    """
    if not is_flag(value):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def is_flag(value: object) -> bool:
    """True for True or False, Python's or numpy's."""
    # numpy's bool (np.True_) is not a subclass of bool; it is told by its dtype, so that
    # this module never needs to import numpy.
    dtype_kind = getattr(getattr(value, "dtype", None), "kind", None)
    return isinstance(value, bool) or (dtype_kind == "b" and getattr(value, "shape", None) == ())
