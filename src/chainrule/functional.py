"""Derivatives of plain functions, JAX style: ``grad(f)`` is a function, and it composes.

>>> from chainrule import grad
>>> f = lambda x: x ** 3
>>> grad(f)(2.0)                 # 3x^2
12.0
>>> grad(grad(f))(2.0)           # 6x
12.0
>>> grad(grad(grad(f)))(2.0)     # 6
6.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import autograd
from ._checks import is_integer
from .engine import Value


def _as_leaves(args: Iterable[Value | float]) -> list[Value]:
    """The points to differentiate at, as Values: a number becomes a new leaf (not a constant:
    it is the variable), a Value is taken as it is."""
    return [a if isinstance(a, Value) else Value(a) for a in args]


def grad(f: Callable[..., Value], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """A function that returns the derivative of scalar ``f`` with respect to argument(s) ``argnums``.

    ``argnums`` is an int (one derivative) or a tuple of ints (a tuple of derivatives). Called
    with numbers, the result is floats; called with Values (as an outer ``grad`` does), the
    result is Values with a graph, which is what lets ``grad(grad(f))`` work.
    """
    single = is_integer(argnums)
    nums: tuple[int, ...] = (argnums,) if single else tuple(argnums)  # type: ignore[assignment, arg-type]

    def derivative(*args: Value | float) -> Any:  # a float or a Value, or a tuple of them
        for i in nums:
            if not -len(args) <= i < len(args):
                raise IndexError(f"grad: argnums {i} is out of range for {len(args)} argument(s)")
        nested = any(isinstance(a, Value) for a in args)  # inside another grad: keep the graph
        values = _as_leaves(args)
        derivatives = autograd.grad(f(*values), [values[i] for i in nums], create_graph=nested)
        return derivatives[0] if single else tuple(derivatives)

    derivative.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return derivative


def hessian(f: Callable[..., Value]) -> Callable[..., list[list[float]]]:
    """A function returning the matrix of second derivatives of scalar ``f``, as a list of lists.

    >>> hessian(lambda x, y: x * x * y)(1.0, 2.0)     # [[2y, 2x], [2x, 0]]
    [[4.0, 2.0], [2.0, 0.0]]
    """

    def matrix(*args: float) -> list[list[float]]:
        values = _as_leaves(args)
        first = autograd.grad(f(*values), values, create_graph=True)
        return [autograd.grad(d, values) for d in first]

    return matrix


def hvp(f: Callable[..., Value], xs: Iterable[float], v: Iterable[float]) -> list[float]:
    """The Hessian of ``f`` at ``xs`` times the vector ``v``, by reverse-over-reverse.

    One gradient with a graph, then the gradient of its dot product with ``v``: the cost of two
    backward passes, without forming the Hessian.

    >>> hvp(lambda x, y: x * x * y, [1.0, 2.0], [1.0, 0.0])
    [4.0, 2.0]
    """
    xs, v = list(xs), list(v)
    if len(xs) != len(v):
        raise ValueError(f"hvp: {len(xs)} inputs but a vector of length {len(v)}")
    values = _as_leaves(xs)
    first = autograd.grad(f(*values), values, create_graph=True)
    directional = sum((d * vi for d, vi in zip(first, v)), Value(0.0))
    return autograd.grad(directional, values)
