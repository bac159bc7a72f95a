"""Gradients as values: ``grad`` returns derivatives instead of storing them in ``.grad``.

>>> from chainrule import Value
>>> from chainrule.autograd import grad
>>> x = Value(3.0)
>>> y = x * x * x
>>> (dy,) = grad(y, [x], create_graph=True)   # 3x^2, as a Value with its own graph
>>> dy.data
27.0
>>> grad(dy, [x])                             # 6x
[18.0]
>>> x.grad                                    # no .grad was touched
0.0
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Literal, overload

from .engine import Value, propagate


@overload
def grad(
    output: Value | float, inputs: Iterable[Value], create_graph: Literal[False] = ...
) -> list[float]: ...
@overload
def grad(output: Value | float, inputs: Iterable[Value], create_graph: Literal[True]) -> list[Value]: ...
@overload
def grad(output: Value | float, inputs: Iterable[Value], create_graph: bool) -> list[float] | list[Value]: ...
def grad(
    output: Value | float, inputs: Iterable[Value], create_graph: bool = False
) -> list[float] | list[Value]:
    """The derivatives of scalar ``output`` with respect to each Value in ``inputs``.

    Floats by default; Values that can be differentiated again when ``create_graph=True``.
    An input that ``output`` does not depend on gets 0.0. No ``.grad`` is read or written.
    """
    inputs = list(inputs)
    for x in inputs:
        if not isinstance(x, Value):
            raise TypeError(f"grad: inputs must be Values, got {type(x).__name__}")
    if not isinstance(output, Value):  # a constant: it depends on nothing
        if isinstance(output, numbers.Real):
            return [0.0 for _ in inputs]
        raise TypeError(f"grad: output must be a Value, got {type(output).__name__}")
    pending = propagate(output, 1.0, create_graph)
    return [pending.get(x, 0.0) for x in inputs]  # an input outside the graph gets 0.0
