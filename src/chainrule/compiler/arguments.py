"""Arguments: numbers and nested lists/tuples of numbers in, flattened into float64 arrays; results out."""

from __future__ import annotations

import itertools
import numbers
import reprlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..engine import Value

if TYPE_CHECKING:
    import numpy

# ---------------------------------------------------------------------------------------------
# Arguments: numbers and nested lists/tuples of numbers, flattened into float64 arrays plus a
# hashable structure that says how to rebuild them.


def flatten_all(np, args):
    """All the arguments of a call as (their structure, one float64 array of their numbers)."""
    float64 = np.dtype(np.float64)
    for a in args:  # float arrays, the usual fast case, need no look at their numbers
        if type(a) is not np.ndarray or a.dtype is not float64:
            break
    else:
        structure = tuple([("block", False, a.shape) for a in args])  # what _flatten_arguments says
        return structure, np.concatenate([a.ravel() for a in args]) if args else np.empty(0)
    flat: list[numpy.ndarray] = []
    structure = tuple(_flatten_arguments(arg, flat, (i,)) for i, arg in enumerate(args))
    return structure, np.concatenate(flat) if flat else np.empty(0)


def _flatten_arguments(obj, flat, position):
    """Append ``obj``'s numbers to ``flat`` (a list of 1-d arrays) and return its structure.

    ``position`` says where ``obj`` is, for error messages: (argument index, item index, ...).
    Only real numbers get in, as in eager arithmetic; anything else is a TypeError naming it.
    """
    np = sys.modules["numpy"]
    kind = type(obj)
    if kind is list or kind is tuple or isinstance(obj, np.ndarray):
        array = _real_block(np, obj, position)
        # A block's inner rows are rebuilt as lists, so rows given as tuples take the slower path
        # (a numpy array's rows are arrays, which are fine, so they need no look).
        rows_fit = array is not None and (
            array.ndim <= 1 or kind is np.ndarray or _rows_are_lists(obj, array.ndim, np)
        )
        if rows_fit:
            flat.append(array.ravel())
            # (a block of bools is told apart from one of numbers: see bool_leaves)
            return ("bools" if _holds_bools(np, obj) else "block", kind is tuple, array.shape)
        if getattr(obj, "ndim", 1) > 0:  # ragged, or items of several types: one by one
            items = tuple(_flatten_arguments(x, flat, (*position, i)) for i, x in enumerate(obj))
            return ("nest", kind is tuple, items)
        obj = obj.item()  # a 0-d array of objects holds one item
    flat.append(np.array([_real_number(np, obj, position)]))
    return "bool" if isinstance(obj, (bool, np.bool_)) else None


def _holds_bools(np: ModuleType, obj: Any) -> bool:
    """Whether a block holds bools (a bool array, or lists of Python/numpy bools only)."""
    if isinstance(obj, np.ndarray):
        return obj.dtype.kind == "b"
    return np.asarray(obj).dtype.kind == "b"


def bool_leaves(structure: tuple[Any, ...]) -> list[bool]:
    """For each number of a call's flattened arguments, whether it was given as a bool.

    A bool is a number in arithmetic, as eagerly, but not an index: ``take`` refuses it, and a
    compiled call must refuse it as well, on every call. So bools and numbers make different
    structures (a trace each), and the trace knows which of its inputs were bools.
    """
    flags: list[bool] = []
    for arg in structure:
        _collect_bools(arg, flags)
    return flags


def _collect_bools(structure: Any, flags: list[bool]) -> None:
    if structure is None or structure == "bool":
        flags.append(structure == "bool")
        return
    kind, _, shape = structure
    if kind == "nest":
        for item in shape:
            _collect_bools(item, flags)
        return
    size = 1
    for n in shape:
        size *= n
    flags.extend([kind == "bools"] * size)


def _real_block(np, obj, position):
    """``obj`` as a float64 array if it is a regular block of real numbers, else None.

    A numpy array of strings, complex numbers, dates, ... is refused here; in a list, the item
    by item path names the first item that is not a real number.
    """
    try:
        array = np.asarray(obj)
    except (TypeError, ValueError, OverflowError):  # ragged rows, or items numpy cannot store
        return None
    if array.dtype.kind in "biuf":  # bools, integers, floats
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O" or not isinstance(obj, np.ndarray):
        return None
    raise TypeError(
        f"{_argument(position)} must hold real numbers, not a numpy array of {array.dtype.type.__name__}"
    )


def _real_number(np: ModuleType, obj: Any, position: tuple[int, ...]) -> float:
    """``obj`` as a float, if it is a real number (numpy's too) that a float can hold."""
    if isinstance(obj, (numbers.Real, np.bool_)) and not isinstance(obj, Value):
        try:
            return float(obj)
        except OverflowError:
            message = f"{_argument(position)} is too large for a float: {reprlib.repr(obj)}"
            raise OverflowError(message) from None
    hint = " (use Values from outside the function as parameters instead)" if isinstance(obj, Value) else ""
    raise TypeError(
        f"{_argument(position)} must be a real number (or a list, tuple or numpy array of them), "
        f"not {type(obj).__name__}: {reprlib.repr(obj)}{hint}"
    )


def _argument(position: tuple[int, ...]) -> str:
    """``(0, 2, 1)`` as 'argument 0[2][1] of the compiled function'."""
    index, *items = position
    return f"argument {index}{''.join(f'[{i}]' for i in items)} of the compiled function"


def _rows_are_lists(obj: Any, ndim: int, np: ModuleType) -> bool:
    """Whether every container inside ``obj`` (an ``ndim``-deep block) is a list or an array."""
    if set(map(type, obj)) <= {list}:  # the usual case, checked in one pass in C
        return ndim <= 2 or all(_rows_are_lists(row, ndim - 1, np) for row in obj)
    return all(
        (type(row) is list or isinstance(row, np.ndarray))
        and (ndim <= 2 or _rows_are_lists(row, ndim - 1, np))
        for row in obj
    )


def _unflatten_arguments(structure, leaves):
    """Rebuild the argument structure with the next items of the iterator ``leaves``."""
    if structure is None or structure == "bool":
        return next(leaves)
    kind, is_tuple, shape = structure
    if kind in ("block", "bools"):
        size = 1
        for n in shape:
            size *= n
        built = _reshape(list(itertools.islice(leaves, size)), shape)
    else:
        built = [_unflatten_arguments(item, leaves) for item in shape]
    return tuple(built) if is_tuple and isinstance(built, list) else built


def _reshape(items, shape):
    """A flat list as nested lists of the given shape (a block's rows are lists)."""
    if len(shape) <= 1:
        return items if shape else items[0]
    if len(shape) == 2 and shape[1] > 0:  # rows of numbers, the usual case: cut in C-level loops
        return list(map(list, zip(*[iter(items)] * shape[1])))
    step = len(items) // shape[0]
    return [_reshape(items[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _flatten_result(result, outputs):
    if isinstance(result, Value):
        outputs.append(result)
        return None
    if isinstance(result, (list, tuple)):
        return (type(result) is tuple, tuple(_flatten_result(r, outputs) for r in result))
    raise TypeError(
        f"a compiled function must return a Value or a list/tuple of Values, not {type(result).__name__}"
    )


def _unflatten_result(structure, values):
    if structure is None:
        return next(values)
    is_tuple, items = structure
    built = [_unflatten_result(item, values) for item in items]
    return tuple(built) if is_tuple else built
