"""Parameters: the leaf Values a model learns, and the groups that list a model's in order.

A Parameter is a Value in every way: its number and gradient sit in the same slots as any
Value's, so micrograd's update loop ``p.data -= lr * p.grad`` costs what it costs on plain
Values. A model's Parameters are also listed, in ``parameters()`` order, in one group
(``Parameters``), whose ``data`` and ``grad`` give all their numbers at once as flat float64
arrays; chainrule.compile, ``zero_grad`` and the optimizers read and write a model's
parameters that way, with loops in C (``_graph.c``) that copy between the slots and an
array.

>>> from chainrule import Parameter, pack_parameters
>>> a, b = Parameter(1.0), Parameter(2.0)
>>> group = pack_parameters([a, b])
>>> (a * b).backward()
>>> list(group.data), list(group.grad)
([1.0, 2.0], [2.0, 1.0])
"""

from __future__ import annotations

import array
import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import engine
from .engine import Value, _restore_leaf

if TYPE_CHECKING:
    import numpy


class Parameters:
    """A group of Parameters in a fixed order, whose numbers and gradients read as flat arrays.

    ``data`` and ``grad`` are new ``array('d')`` copies each time they are read (a gradient
    that is not a number, None or a Value after ``backward(create_graph=True)``, reads as its
    number or 0.0): to change a Parameter, set its ``data``.
    """

    __slots__ = ("members",)

    def __init__(self, members: Iterable[Parameter] = ()) -> None:
        self.members = tuple(members)  # the Parameters, in order: p.index is p's place here

    @property
    def data(self) -> array.array:
        """The numbers, a new flat array('d')."""
        return array.array("d", [p.data for p in self.members])

    @property
    def grad(self) -> array.array:
        """The gradients, a new flat array('d'): 0.0 for None, a Value's number for a Value."""
        return array.array("d", [_number(p.grad) for p in self.members])

    def __len__(self) -> int:
        return len(self.members)

    def __deepcopy__(self, memo: dict[int, Any]) -> Parameters:
        # Registered before the members are copied: each member's copy asks for this copy.
        copied = memo[id(self)] = Parameters()
        copied.members = tuple(copy.deepcopy(p, memo) for p in self.members)
        return copied

    def numpy(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        """``(data, grad)`` as new numpy arrays."""
        import numpy

        return numpy.frombuffer(self.data), numpy.frombuffer(self.grad)

    def __repr__(self) -> str:
        return f"Parameters({len(self)} numbers)"


def _number(g: Any) -> float:
    if g is None:
        return 0.0
    return g.data if isinstance(g, Value) else float(g)


class Parameter(Value):
    """A leaf Value that a model learns: a Value in every way, listed in its model's group.

    nn's modules make their weights Parameters and list each model's in one group
    (``pack_parameters``); a Parameter not packed yet is in a group of its own.

    >>> w = Parameter(3.0, label="w")
    >>> (w * w).backward()
    >>> w.data, w.grad, w.index
    (3.0, 6.0, 0)
    """

    __slots__ = ("_at",)  # (group, index) once packed, else None

    def __init__(self, data: float, label: str = "") -> None:
        super().__init__(data, label=label)
        self._at: tuple[Parameters, int] | None = None

    @property
    def group(self) -> Parameters:
        """The Parameters this one is listed in (a group of its own until it is packed)."""
        if self._at is None:
            self._at = (Parameters((self,)), 0)
        return self._at[0]

    @property
    def index(self) -> int:
        """Where in its group: ``p.group.members[p.index] is p``."""
        self.group  # noqa: B018 (makes the group of its own, if it has none yet)
        return self._at[1]  # type: ignore[index]  # (never None now)

    def __reduce__(self) -> tuple[Any, ...]:
        # copy.copy and pickle: an independent Parameter, in a group of its own.
        _, args, *state = Value.__reduce__(self)
        return (_restore_parameter, args, *state)

    def __deepcopy__(self, memo: dict[int, Any]) -> Parameter:
        # copy.deepcopy(model): the copies are listed in one copy of the group, in order.
        _, args, *state = Value.__reduce__(self)
        copied = memo[id(self)] = _restore_parameter(*args)
        if state and state[0]:
            copied.__dict__.update(copy.deepcopy(state[0], memo))
        if self._at is not None:
            group, i = self._at
            copied._at = (copy.deepcopy(group, memo), i)
        return copied


# The engine's fast paths take a Parameter as they take a Value.
engine._fast_paths_take(Parameter)


def _restore_parameter(*args: Any) -> Parameter:
    """A Parameter made from what Value.__reduce__ gives for a leaf."""
    leaf = _restore_leaf(*args)
    parameter = Parameter(leaf.data, label=leaf.label)
    parameter.grad = leaf.grad
    return parameter


def pack_parameters(parameters: Iterable[Value]) -> Parameters | None:
    """List these Parameters in one new group, in this order, and return it.

    A Parameter listed twice takes one place, and anything that is not a Parameter (a plain
    Value) is left out. None if there are no Parameters. The group they were in before keeps
    its list, but they no longer say they are in it.

    >>> a, b = Parameter(1.0), Parameter(2.0)
    >>> group = pack_parameters([a, b])
    >>> list(group.data), b.group is group, b.index
    ([1.0, 2.0], True, 1)
    """
    members = [p for p in dict.fromkeys(parameters) if isinstance(p, Parameter)]
    if not members:
        return None
    group = Parameters(members)
    for i, p in enumerate(members):
        p._at = (group, i)
    return group
