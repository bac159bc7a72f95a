"""Parameters: Values whose number and gradient live in one flat array, shared by a model.

A model's weights are read, reset and updated all together, several times a step. As plain
Values each number is its own object, somewhere in memory; as Parameters they are handles
onto two flat float64 arrays (numbers and gradients) shared by the whole model, which
chainrule.compile, ``zero_grad`` and the optimizers read and write a slice at a time. Reading
or setting ``p.data`` and ``p.grad`` reads or sets p's entry, so a Parameter is a Value in
every other way: engine.py's fast paths take it as they take a Value.

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
import numbers

from .engine import Value, _as_float, _graph


class Parameters:
    """The numbers and gradients of a group of Parameters, as two flat float64 ``array``s.

    A gradient that is not a number (None, or a Value after ``backward(create_graph=True)``)
    is kept in ``grad_objects`` by position, and the array holds 0.0 there. ``version`` goes
    up whenever Parameters leave the group (see ``pack_parameters``), so that code which
    remembered where they live can tell that it must look again.
    """

    __slots__ = ("_data", "_grad", "grad_objects", "version", "_numpy")

    def __init__(self, numbers, grads=None):
        self._data = array.array("d", numbers)
        self._grad = array.array("d", bytes(8 * len(self._data)) if grads is None else grads)
        if len(self._grad) != len(self._data):
            raise ValueError(f"Parameters: {len(self._data)} numbers but {len(self._grad)} gradients")
        self.grad_objects = {}
        self.version = 0
        self._numpy = None

    # The arrays themselves cannot be replaced (their entries can): numpy views of them, and
    # the C loops, rely on it.
    data = property(lambda self: self._data, doc="The numbers, a flat array('d').")
    grad = property(lambda self: self._grad, doc="The gradients, a flat array('d') (0.0 where an object is).")

    def __len__(self):
        return len(self._data)

    def __deepcopy__(self, memo):
        # As a Value's copy does, a gradient that is a Value is copied as its number.
        copied = Parameters(self._data, self._grad)
        for i, g in self.grad_objects.items():
            if g is None:
                copied.grad_objects[i] = None
            else:
                copied.grad[i] = g.data
        return copied

    def numpy(self):
        """``(data, grad)`` as numpy arrays that share this group's memory (made once)."""
        if self._numpy is None:
            import numpy

            self._numpy = numpy.frombuffer(self._data), numpy.frombuffer(self._grad)
        return self._numpy

    def __repr__(self):
        return f"Parameters({len(self)} numbers)"


class Parameter(Value):
    """A leaf Value whose number and gradient are an entry of a shared flat array (``Parameters``).

    nn's modules make their weights Parameters and gather each model's into one array; a
    Parameter made alone has a group of its own.

    >>> w = Parameter(3.0, label="w")
    >>> (w * w).backward()
    >>> w.data, w.grad
    (3.0, 6.0)
    """

    # Where the entry is: (group, index), one slot, so that moving it is a single store.
    __slots__ = ("_at",)

    def __init__(self, data, label=""):
        self._at = (Parameters([_as_float(data)]), 0)
        self.label = label
        self.children, self._rule, self._local = (), None, None

    @property
    def group(self) -> Parameters:
        """The Parameters whose arrays hold this one's number and gradient."""
        return self._at[0]

    @property
    def index(self) -> int:
        """Where in them: ``p.data == p.group.data[p.index]``."""
        return self._at[1]

    def __reduce__(self):
        # copy.copy and pickle: an independent Parameter, in a group of its own.
        return _restore_parameter, Value.__reduce__(self)[1]

    def __deepcopy__(self, memo):
        # copy.deepcopy(model): the copies share one copy of the group, so they stay packed.
        group, i = self._at
        copied = _restore_parameter(0.0, 0.0, self.label)
        copied._at = (copy.deepcopy(group, memo), i)
        return copied


def _restore_parameter(data, grad, label):
    parameter = Parameter(data, label=label)
    parameter.grad = grad
    return parameter


def _parameter_data(p):
    group, i = p._at
    return group.data[i]


def _set_parameter_data(p, x):
    group, i = p._at
    group.data[i] = x if type(x) is float else _as_float(x)


def _parameter_grad(p):
    group, i = p._at
    if group.grad_objects and i in group.grad_objects:
        return group.grad_objects[i]
    return group.grad[i]


def _set_parameter_grad(p, g):
    group, i = p._at
    if g is None or isinstance(g, Value):
        group.grad_objects[i] = g
        group.grad[i] = 0.0
    elif isinstance(g, numbers.Real) and not isinstance(g, bool):
        group.grad[i] = float(g)
        group.grad_objects.pop(i, None)
    else:
        raise TypeError(f"the grad of a Parameter must be a number, a Value or None; got {g!r}")


Parameter.data = property(_parameter_data, _set_parameter_data, doc="The number, in the group's array.")
Parameter.grad = property(_parameter_grad, _set_parameter_grad, doc="The gradient, in the group's array.")


def pack_parameters(parameters) -> Parameters | None:
    """Move these Parameters into one new group, in this order, and return it.

    Their numbers and gradients come along; a Parameter listed twice takes one entry, and
    anything that is not a Parameter (a plain Value) is left where it is. None if there
    are no Parameters.

    >>> a, b = Parameter(1.0), Parameter(2.0)
    >>> group = pack_parameters([a, b])
    >>> list(group.data), b._at == (group, 1)
    ([1.0, 2.0], True)
    """
    handles = [p for p in dict.fromkeys(parameters) if isinstance(p, Parameter)]
    if not handles:
        return None
    group = Parameters(map(_parameter_data, handles))
    for i, p in enumerate(handles):
        old_group, old_i = p._at
        old_group.version += 1  # before anything moves: whoever remembered it looks again
        group.grad[i] = old_group.grad[old_i]
        if old_group.grad_objects and old_i in old_group.grad_objects:
            group.grad_objects[i] = old_group.grad_objects[old_i]
    for i, p in enumerate(handles):
        p._at = (group, i)
    return group


class _ParameterRuns:
    """Where the Values of a fixed tuple live, as runs of consecutive entries of their groups,
    so that code which reads or updates all of them (a compiled call, an optimizer) can do it
    a slice at a time: ``(group, start, stop, offset)`` says that ``values[offset:offset +
    stop - start]`` are entries ``start:stop`` of ``group``.
    """

    def __init__(self, values: tuple):
        self.values = values
        self._find()

    def _find(self):
        runs = []
        for offset, v in enumerate(self.values):
            if type(v) is not Parameter:
                runs = None  # a plain Value among them: no runs, they are read one by one
                break
            group, i = v._at
            if runs and runs[-1][0] is group and runs[-1][2] == i:
                runs[-1][2] = i + 1
            else:
                runs.append([group, i, i + 1, offset])
        # Runs pay off when they are long; a list scattered over its groups is read one by one.
        if runs is not None and len(runs) * 16 > len(self.values):
            runs = None
        self._runs = None if runs is None else [tuple(run) for run in runs]
        groups = {} if runs is None else {run[0]: run[0].version for run in runs}
        self._versions = list(groups.items())  # (group, its version then), each group once
        self._views = {}  # which -> each run's entries as numpy views (made on first use)

    def get(self):
        """The runs, found again if a group has lost Parameters since; None when some of the
        Values are not Parameters, or the runs are short, or a gradient is an object."""
        for group, version in self._versions:  # (usually one: a model's)
            if group.version != version:
                self._find()
                return self.get()
            if group.grad_objects:
                return None
        return self._runs

    def views(self, which: int) -> tuple:
        """Each run's entries (call ``get`` first), as numpy views of its group's numbers
        (``which`` 0) or gradients (1); made once for as long as the runs hold (a group's
        arrays are never replaced, so views of them stay good)."""
        views = self._views.get(which)
        if views is None:
            views = self._views[which] = tuple(group.numpy()[which][a:b] for group, a, b, _ in self._runs)
        return views


def _pieces(runs, flat) -> list:
    """The pieces of ``flat`` (one number per Value of the tuple, in its order) for each run."""
    return [flat[offset : offset + stop - start] for _, start, stop, offset in runs]


if _graph is not None:
    # .data and .grad in C (see _graph.c): one step each, so that no Ctrl-C lands half-way
    # through storing a gradient; anything but a float still goes to the setters above.
    _graph.setup_parameters(Parameter, Parameters, _set_parameter_data, _set_parameter_grad)
    Parameter.data, Parameter.grad = _graph.number(False), _graph.number(True)
