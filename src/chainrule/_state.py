"""Checking a state dict against the shapes a module needs, and the error that says what is wrong.

Both ``Module.load_state_dict`` (nn.py) and loading a checkpoint (serialize.py) check a state
here, so nn.py, which serialize.py builds modules from, need not import serialize.py.

>>> state_problems({"w": [1.0, 2.0], "b": 0.5}, {"w": 2, "b": None})
[]
"""

from __future__ import annotations

import math
import numbers


class CheckpointError(ValueError):
    """A checkpoint or a state dict that cannot be used: the message says what is wrong."""


CheckpointError.__module__ = "chainrule.serialize"  # where users import it from, and its name in tracebacks


def number_problem(x: object, where: str) -> str | None:
    """Why ``x`` cannot be a parameter's value, or None if it can."""
    if type(x) is float and math.isfinite(x):  # the usual case, answered without the slower ABC check
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return f"{where} is {x!r} ({type(x).__name__}), not a number"
    try:
        finite = math.isfinite(float(x))
    except OverflowError:
        finite = False
    if not finite:
        return f"{where} is {x!r}; a checkpoint holds finite numbers only"
    return None


def list_keys(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def state_problems(state: object, shapes: dict[str, int | None]) -> list[str]:
    """Everything that stops ``state`` from filling a module whose entries have ``shapes``.

    ``shapes`` maps each name to the length of its list of numbers, or to None for a single
    number. The result is an empty list when ``state`` fits.

    >>> state_problems({"w": [1.0, "x"], "c": 2.0}, {"w": 2, "b": None})
    ["missing key 'b'", "unexpected key 'c'", "w[1] is 'x' (str), not a number"]
    """
    if not isinstance(state, dict):
        return [f"a state must be a dict of names to numbers, not {type(state).__name__}"]
    problems = []
    missing = [name for name in shapes if name not in state]
    unexpected = [name for name in state if name not in shapes]
    if missing:
        problems.append(f"missing key{'s' if len(missing) > 1 else ''} {list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected key{'s' if len(unexpected) > 1 else ''} {list_keys(unexpected)}")
    for name, length in shapes.items():
        if name not in state:
            continue
        value = state[name]
        if length is None:
            problem = number_problem(value, name)
        elif not isinstance(value, (list, tuple)):
            problem = f"{name} should be a list of {length} numbers, not {type(value).__name__}"
        elif len(value) != length:
            problem = f"{name} has {len(value)} numbers, the model needs {length}"
        else:
            # Name an entry only once it is found wrong: formatting a name for each of a
            # large model's numbers would cost more than checking them.
            bad = next((i for i, x in enumerate(value) if number_problem(x, "")), None)
            problem = None if bad is None else number_problem(value[bad], f"{name}[{bad}]")
        if problem:
            problems.append(problem)
    if len(problems) > 6:
        problems = problems[:6] + [f"and {len(problems) - 6} more problems"]
    return problems
