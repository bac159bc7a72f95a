"""The engine: a scalar Value, the one function that applies ops, and backpropagation.

Read it top to bottom:

1. ``Value`` holds a float, its gradient, and (for a computed value) the op that made it and
   the Values it was made from (``children``).
2. ``apply`` is the single place where an op runs: it computes the forward value from the
   table in ``ops.py``, checks the domain, and records the graph unless ``no_grad`` is on.
3. ``backward`` sorts the graph so that every node comes after all the nodes that use it,
   then walks it once, asking each op's rule for the gradients of its inputs and **adding**
   them up. A value used twice receives the sum of both contributions.

At the very end, the hottest of these loops are swapped for the same loops in C when
``chainrule/_graph.c`` was built; what you read here is what they do. A model's weights are
Parameters (``parameters.py``): Values listed in their model's group.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import itertools
import math
import numbers
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar

from . import _settings, ops

# An operand of arithmetic: a Value or a real number (else the op returns NotImplemented). Any,
# since the fast paths tell the two apart by type(), which a type checker does not follow.
_Operand = Any
_Row = TypeVar("_Row")  # what take picks: a Value, or a row of them
_Result = TypeVar("_Result")  # what map_rows' function returns for a row

# ---------------------------------------------------------------------------------------------
# Modes: whether ops record a graph, and whether nan/inf should stop the program.
# They live in a context variable, so each thread (and each asyncio task) has its own.


@dataclass(frozen=True, slots=True)
class _Mode:
    recording: bool = True
    anomaly: bool = False
    hook: _Hook | None = None  # shown the ops as they run (see _Hook)


_mode = contextvars.ContextVar("chainrule_mode", default=_Mode())

# The mode switches open right now, in any thread, one entry each. While it is empty every
# thread is in the default mode, so the common ops may skip looking the mode up (see
# ``Value.__add__``). Appending and popping are single steps in C, so no lock is needed, and
# none can be left held: a Ctrl-C that lands inside a switch's exit can leave an entry too
# many, never too few, and later ops then take the general path (slower, the same numbers).
_modes_open: list[bool] = []


class _ModeSwitch(contextlib.ContextDecorator):
    """Change fields of the mode inside a ``with`` block or a decorated function."""

    def __init__(self, **changes: Any) -> None:
        self._changes = changes
        self._tokens: list[contextvars.Token[_Mode]] = []

    def _recreate_cm(self) -> _ModeSwitch:
        # A decorated function gets a fresh switch per call, so threads never share tokens.
        return _ModeSwitch(**self._changes)

    def __enter__(self) -> _ModeSwitch:
        _modes_open.append(True)
        self._tokens.append(_mode.set(replace(_mode.get(), **self._changes)))
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        _mode.reset(self._tokens.pop())
        _modes_open.pop()
        return False


class _Hook(Protocol):
    """One way in for code that must see the ops as they run: ``_hooked(hook)`` installs it for
    its thread (chainrule.compile's tracer is the one chainrule has). The ops whose meaning is
    more than their number ask it instead of running. The engine's own code reads numbers by
    the slots' own names, never as ``.data`` or ``.grad`` (see below the class), so a hook that
    watches those sees only the reads of the code it runs."""

    nodes: list  # what the fast ops make, added by _graph.node itself (with the C loops)
    constants: set  # (their constants, leaves made from numbers)

    def record(self, node: Value) -> None:
        """``apply`` made ``node``."""

    def unrecorded(self, node: Value) -> Value:
        """``apply`` made ``node`` under ``no_grad``: what to return for it."""

    def constant(self, value: Value) -> None:
        """A number in an op became the leaf ``value``."""

    def detached(self, value: Value) -> Value:
        """``value.detach()``."""

    def take(self, rows: Sequence[Any], index: Value) -> Any:
        """``take(rows, index)`` with a Value index."""

    def map_rows(self, fn: Callable[..., Any], rows: tuple[Iterable[Any], ...]) -> list[Any]:
        """``map_rows(fn, *rows)``."""

    def hand_made(self, children: tuple) -> None:
        """A node is being built by hand, ``Value(data, children, ...)``: may refuse."""

    def backward_pass(self, create_graph: bool) -> contextlib.AbstractContextManager:
        """A backward pass (``propagate``) runs inside the context it returns: may refuse."""

    def reading_numbers(self, what: str) -> None:
        """Library code that reads or writes numbers (``what``) is about to: may refuse."""


@contextlib.contextmanager
def _hooked(hook: _Hook) -> Iterator[None]:
    if _graph is None:  # a mode switch, so that every op goes through apply
        with _ModeSwitch(recording=True, hook=hook):
            yield
        return
    # With the C loops (see the end of this file) the fast ops stay on, and _graph.node shows
    # the hook every node it makes in this thread, adding it to ``hook.nodes`` (a constant,
    # with no children, to ``hook.constants``).
    token = _mode.set(replace(_mode.get(), recording=True, hook=hook))
    before = _graph.record(hook.nodes, hook.constants)
    try:
        yield
    finally:
        _graph.record(*before)
        _mode.reset(token)


# While a hook is installed in some thread, the ids of the Values made in threads without one
# (a set; else None). A hook is shown what its own thread makes only, so it can tell which
# Values it was never shown (see compiler/tracing.py).
_made_in_other_threads = None


def _note_unhooked(value: Value) -> None:
    if _made_in_other_threads is not None and _mode.get().hook is None:
        _made_in_other_threads.add(id(value))


def _reading_numbers(what: str) -> None:
    """Library code that reads or writes the numbers of Values (an optimizer's step, state_dict)
    calls this first: an installed hook may refuse (chainrule.compile's does)."""
    hook = _mode.get().hook
    if hook is not None:
        hook.reading_numbers(what)


def no_grad() -> _ModeSwitch:
    """Ops inside record no graph: their results are leaves with no children.

    Works as a context manager and as a decorator, like ``torch.no_grad``.

    >>> from chainrule import Value, no_grad
    >>> with no_grad():
    ...     y = Value(2.0) * 3
    >>> y.children
    ()
    """
    return _ModeSwitch(recording=False)


def enable_grad() -> _ModeSwitch:
    """Turn graph recording back on inside a ``no_grad`` block."""
    return _ModeSwitch(recording=True)


def is_grad_enabled() -> bool:
    """True when ops record the graph (outside any ``no_grad`` block)."""
    return _mode.get().recording


def detect_anomaly() -> _ModeSwitch:
    """Inside this block, the first nan or inf made by an op, forward or backward, raises.

    >>> from chainrule import Value, detect_anomaly, AnomalyError
    >>> with detect_anomaly():
    ...     try:
    ...         Value(1000.0, label="x").exp()
    ...     except AnomalyError as error:
    ...         print(error)
    detect_anomaly: exp produced inf from Value(data=1000.0, label='x')
    """
    return _ModeSwitch(anomaly=True)


class AnomalyError(FloatingPointError):
    """Raised inside ``detect_anomaly()`` when an op produces nan or inf."""


# ---------------------------------------------------------------------------------------------
# Value


def _as_float(data: object) -> float:
    """Check that ``data`` is a real number and return it as a float."""
    if type(data) is float:
        return data
    if isinstance(data, numbers.Real):  # int, bool, fractions, numpy scalars
        try:
            return float(data)
        except OverflowError:
            raise OverflowError(f"Value data {data!r} is too large for a float") from None
    raise TypeError(f"Value data must be a real number, not {type(data).__name__}: {data!r}")


class Value:
    """A scalar in a computation graph, with the gradient of some result with respect to it.

    >>> from chainrule import Value
    >>> a = Value(3.0, label="a")
    >>> b = a + a          # a is used twice ...
    >>> b.backward()
    >>> a.grad             # ... so both paths add up
    2.0

    The constructor also takes the two forms that hand-written engines use, so their code runs
    unchanged: micrograd's ``Value(data, _children, _op)``, whose gradient comes from a closure
    assigned to ``_backward``, and ``Value(data, children, local_grads)``, a node whose
    backward multiplies the incoming gradient by each local gradient.

    >>> x = Value(3.0)
    >>> y = Value(x.data**2, (x,), (2 * x.data,))   # y = x^2, with dy/dx = 2x stored
    >>> y.backward()
    >>> x.grad
    6.0
    """

    # A node keeps only what backward needs in slots. Anything else a user sets (v.m = 0, a
    # label) goes to the instance dict, made only when the first such attribute is set.
    __slots__ = ("_data", "_grad", "children", "_rule", "__dict__", "__weakref__")
    _data: float
    _grad: Any  # (see grad)
    children: tuple[Value, ...]
    _rule: Any  # the ops.Op that made it; None for a leaf
    data: float  # the public names of _data and _grad (given below the class)
    grad: Any  # a float, a Value after backward(create_graph=True), or None as in PyTorch
    label = ""  # the default; Value(..., label="x") or v.label = "x" stores one in the dict
    # A node built by hand keeps its local gradients (a tuple) or its micrograd-style closure
    # here; every other node's backward comes from its op's rule, which reads the data.
    _local: Any = None

    def __init__(
        self,
        data: float,
        _children: Iterable[Value] = (),
        _op: str | Sequence[float] = "",
        label: str = "",
        *,
        children: Iterable[Value] | None = None,
        local_grads: Sequence[float] | None = None,
    ) -> None:
        self._data = _as_float(data)
        self._grad = 0.0
        if label:
            self.label = label
        if children is not None:
            _children = children
        if not isinstance(_op, str):  # the GPT scripts' Value(data, children, local_grads)
            _op, local_grads = "", _op  # type: ignore[assignment]
        if not _children and not _op and local_grads is None:
            self.children, self._rule = (), None
        else:
            self.children, self._rule, local = _hand_made_node(_children, _op, local_grads)
            if local is not None:
                self._local = local
        if _made_in_other_threads is not None:
            _note_unhooked(self)

    @property
    def op(self) -> str:
        """The name of the op that made this value; '' for a leaf."""
        return "" if self._rule is None else self._rule.name

    @property
    def _op(self) -> str:
        """The op's name as micrograd and the lecture write it ('ReLU', '**2'), read-only."""
        if self._rule is ops.RELU:
            return "ReLU"
        if self._rule is ops.POW_CONSTANT:
            c = self.children[1]._data
            return f"**{int(c) if c.is_integer() else c}"
        return self.op

    @property
    def _prev(self) -> set[Value]:
        """micrograd's name for the children, as a set (micrograd's ``x**2`` leaves out the 2)."""
        if self._rule is ops.POW_CONSTANT:
            return {self.children[0]}
        return set(self.children)

    @property
    def _children(self) -> tuple[Value, ...]:
        """The GPT scripts' name for the children, in order (their ``x**c`` leaves out the c)."""
        if self._rule is ops.POW_CONSTANT:
            return self.children[:1]
        return self.children

    @property
    def _local_grads(self) -> tuple[float, ...]:
        """The GPT scripts' d(self)/d(child) for each of ``_children``, as numbers.

        >>> x, y = Value(3.0), Value(4.0)
        >>> (x * y)._local_grads, (x**2)._local_grads
        ((4.0, 3.0), (6.0,))
        """
        if not self.children:
            return ()
        if callable(self._local):
            raise AttributeError(
                "_local_grads: this node's backward is a _backward closure, which adds into its "
                "children's grads directly; it keeps no local gradients"
            )
        local = [0.0 if g is None else float(g) for _, g in _child_gradients(self, 1.0, False)]
        return tuple(local[: len(self._children)])  # x ** c: the constant c has none

    @property
    def _backward(self) -> Callable[[], None]:
        """The lecture's one-node backward step: add this node's share into its children's ``grad``.

        Every computed Value has one; ``out._backward = closure`` sets it for a node made with
        ``Value(data, _children, _op)``, the lecture's way to add an op.
        """
        if callable(self._local):
            return self._local
        if not self.children:
            return _nothing  # a leaf passes its gradient nowhere
        return functools.partial(_backward_step, self)

    @_backward.setter
    def _backward(self, closure: Callable[[], None]) -> None:
        if not callable(closure):
            raise TypeError(f"_backward must be a function of no arguments, got {closure!r}")
        if not self.children:
            return  # a leaf has nothing to pass its gradient to (the lecture sets a no-op)
        if self._rule.backward is not None or type(self._local) is tuple:
            raise AttributeError(
                f"_backward of a {self.op!r} node is fixed by its op; only a node made with "
                "Value(data, _children, _op) takes a closure"
            )
        self._local = closure

    def __init_subclass__(cls, numbers_elsewhere: bool = False, **kwargs: Any) -> None:
        # The fast ops, apply, the C loops and chainrule.compile all read the number in the
        # slot; a property in its place would be read by some of them and not others. Except
        # in a class made for that, with numbers_elsewhere=True (the parameters inside
        # chainrule.on_device): the C loops then leave its objects to the Python, and the fast
        # paths (which take only the exact types in _PLAIN) send them through apply; both read
        # its numbers by name, through its properties.
        super().__init_subclass__(**kwargs)
        if numbers_elsewhere:
            if _graph is not None:
                _graph.numbers_elsewhere(cls)
            return
        for name in ("data", "grad", "_data", "_grad"):
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} redefines {name!r}: a Value keeps its number and gradient in "
                    f"its own slots, which every op reads directly; keep yours in another attribute"
                )

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self._data!r}, grad={self._grad!r}{label})"

    # Arithmetic. A plain number on either side becomes a constant leaf. The common ops take a
    # fast path when both sides are plain (a Value, a float or an int) and no mode is on: they
    # build the node directly. Everything else goes through ``apply``, which does the same
    # more generally. Either way backward runs the op's rule on the data (see ops.py).
    def __add__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.ADD, self, other)
        if type(other) in _PLAIN_NUMBERS:
            other = _constant(other)
        return _node(self._data + other._data, ops.ADD, (self, other))

    def __radd__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.ADD, other, self)
        other = _constant(other)
        return _node(other._data + self._data, ops.ADD, (other, self))

    def __sub__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.SUB, self, other)
        if type(other) in _PLAIN_NUMBERS:
            other = _constant(other)
        return _node(self._data - other._data, ops.SUB, (self, other))

    def __rsub__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.SUB, other, self)
        other = _constant(other)
        return _node(other._data - self._data, ops.SUB, (other, self))

    def __mul__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.MUL, self, other)
        if type(other) in _PLAIN_NUMBERS:
            other = _constant(other)
        return _node(self._data * other._data, ops.MUL, (self, other))

    def __rmul__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.MUL, other, self)
        other = _constant(other)
        return _node(other._data * self._data, ops.MUL, (other, self))

    def __truediv__(self, other: _Operand) -> Value:
        if _modes_open or type(other) not in _PLAIN:
            return _binary(ops.DIV, self, other)
        if type(other) in _PLAIN_NUMBERS:
            other = _constant(other)
        if other._data == 0.0:  # apply raises ZeroDivisionError, naming the operands
            return apply(ops.DIV, self, other)
        return _node(self._data / other._data, ops.DIV, (self, other))

    def __rtruediv__(self, other: _Operand) -> Value:
        return _binary(ops.DIV, other, self)

    def __pow__(self, other: _Operand) -> Value:
        if isinstance(other, Value):
            return apply(ops.POW, self, other)
        if _modes_open or type(other) not in _PLAIN or not self._data > 0.0:  # a positive base only
            return _binary(ops.POW_CONSTANT, self, other)
        c = float(other)
        return _node(ops._pow(self._data, c), ops.POW_CONSTANT, (self, _constant(c)))

    def __rpow__(self, other: _Operand) -> Value:
        return _binary(ops.RPOW, other, self)

    def __float__(self) -> float:
        """``float(v)`` is ``v.data``, as ``float(tensor)`` is in PyTorch (inside
        chainrule.compile it reads the number, and warns like a ``.data`` read)."""
        return self._data

    def __index__(self) -> int:
        # rows[v] would pick by the number v holds now, which chainrule.compile cannot replay
        # (it would keep picking the first call's row); take() can.
        raise TypeError(
            "a Value cannot be used as an integer (a list index, a repeat count); outside "
            "chainrule.compile use int(v.data); to pick a row by it, use chainrule.take(rows, index), "
            "which a compiled function replays with each new index"
        )

    def __neg__(self) -> Value:
        if _modes_open:
            return apply(ops.NEG, self)
        return _node(-self._data, ops.NEG, (self,))

    def __pos__(self) -> Value:
        return self

    # Functions
    def exp(self) -> Value:
        if _modes_open:
            return apply(ops.EXP, self)
        return _node(ops._exp(self._data), ops.EXP, (self,))

    def log(self) -> Value:
        if _modes_open or not self._data > 0.0:  # apply raises for x <= 0 and passes a nan on
            return apply(ops.LOG, self)
        return _node(math.log(self._data), ops.LOG, (self,))

    def tanh(self) -> Value:
        if _modes_open:
            return apply(ops.TANH, self)
        return _node(math.tanh(self._data), ops.TANH, (self,))

    def sigmoid(self) -> Value:
        if _modes_open:
            return apply(ops.SIGMOID, self)
        return _node(ops._sigmoid(self._data), ops.SIGMOID, (self,))

    def relu(self) -> Value:
        if _modes_open:
            return apply(ops.RELU, self)
        x = self._data  # not `x > 0.0`: a nan and -0.0 pass through, as in ops.RELU
        return _node(0.0 if x < 0.0 else x, ops.RELU, (self,))

    def softplus(self) -> Value:
        """log(1 + exp(self)), finite for any input; its derivative is the sigmoid."""
        return apply(ops.SOFTPLUS, self)

    def detach(self) -> Value:
        """A new leaf with the same data, cut off from this value's graph."""
        hook = _mode.get().hook
        if hook is not None:
            return hook.detached(self)
        return Value(self._data, label=self.label)

    def backward(self, gradient: float | Value = 1.0, create_graph: bool = False) -> None:
        """Add d(self)/d(node) * gradient to the ``grad`` of every node in self's graph.

        With ``create_graph=True`` the gradients are Values that can be differentiated again.
        """
        backward(self, gradient, create_graph)

    def __reduce__(self) -> tuple[Any, ...]:
        """How ``copy.copy``, ``copy.deepcopy`` and ``pickle`` copy a Value.

        As in PyTorch, only a leaf (a parameter, an input, a constant) can be copied: its data,
        grad and label; a gradient that is a Value (after ``backward(create_graph=True)``) is
        copied as its number. A computed Value raises TypeError instead of copying its graph,
        which can be as deep as the program that made it (copy and pickle would recurse).
        So ``copy.deepcopy(model)`` is an independent snapshot of a model's parameters.

        >>> import copy
        >>> x = Value(2.0, label="x")
        >>> copy.deepcopy(x)
        Value(data=2.0, grad=0.0, label='x')
        >>> copy.deepcopy(x * x)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: cannot copy or pickle Value(data=4.0, grad=0.0), made by '*': only leaf Values ...
        """
        if self.children:
            raise TypeError(
                f"cannot copy or pickle {self!r}, made by {self.op!r}: only leaf Values can be, "
                "as in PyTorch; copy a leaf with its number, Value(v.data), or v.detach()"
            )
        grad = self._grad._data if isinstance(self._grad, Value) else self._grad
        # Attributes a user set (p.m, p.v of an optimizer) come along, as a tensor's __dict__
        # does in PyTorch's deepcopy; copy.deepcopy copies them deeply, copy.copy shares them.
        attributes = {name: x for name, x in vars(self).items() if name != "label"}
        return _restore_leaf, (self._data, grad, self.label), attributes or None


def _restore_leaf(data: float, grad: Any, label: str) -> Value:
    """A leaf Value with this data, grad and label: how a copied or pickled Value comes back."""
    value = Value(data, label=label)
    value.grad = grad
    return value


# ``data`` and ``grad`` are the public names of the slots ``_data`` and ``_grad``: the same
# descriptors, so ``v.data`` costs what a slot costs. The engine itself always uses the slots'
# own names; so a hook that watches the public names (with properties, as chainrule.compile
# does) sees the reads of the code it runs, never the engine's.
Value.data, Value.grad = Value.__dict__["_data"], Value.__dict__["_grad"]
_read_data, _read_grad = operator.attrgetter("_data"), operator.attrgetter("_grad")


# The fast path's pieces: which operand types it takes.
_PLAIN = frozenset({Value, float, int})  # (and Parameter: see _fast_paths_take)
_PLAIN_NUMBERS = frozenset({float, int})
_new = object.__new__


def _node(data: float, rule: ops.Op | None, children: tuple[Value, ...]) -> Value:
    """A computed Value, built without re-checking data that an op just produced."""
    value = _new(Value)
    value._data = data
    value._grad = 0.0
    value.children = children
    value._rule = rule
    return value


# apply's node maker: _node in Python even where _node is _graph.node, which shows the nodes it
# makes to a hook itself (see the end of this file), while apply shows its own.
_make = _node


def _constant(x: float) -> Value:
    """A leaf for a plain number (float or int) on the fast path."""
    return _node(x if type(x) is float else _as_float(x), None, ())


def _hand_made_node(
    children: Iterable[Value], op_name: str, local_grads: Sequence[float] | None
) -> tuple[tuple[Value, ...], ops.Op, tuple[float, ...] | None]:
    """Check the parts of a node built with the constructor; return (children, rule, local)."""
    if isinstance(children, str):
        raise TypeError(
            f"Value: the second argument is the tuple of children, not a label: {children!r}; "
            "a label is given by keyword, Value(data, label=...)"
        )
    try:
        children = tuple(children)
    except TypeError:
        raise TypeError(f"Value: children must be a tuple of Values, got {children!r}") from None
    for child in children:
        if not isinstance(child, Value):
            raise TypeError(f"Value: children must be Values, got {type(child).__name__}: {child!r}")
    hook = _mode.get().hook
    if children and hook is not None:
        hook.hand_made(children)
    if local_grads is None:  # micrograd's form: the gradient comes from a closure set later
        return children, _hand_made_op(op_name), None
    if isinstance(local_grads, str):
        raise TypeError(f"Value: local_grads must be numbers, got {local_grads!r}")
    local = tuple(_as_float(g) for g in local_grads)
    if len(local) != len(children):
        raise ValueError(f"Value: {len(children)} children but {len(local)} local gradients")
    return children, _hand_made_op(op_name or "local"), local


_HAND_MADE_OPS: dict[str, ops.Op] = {}


def _hand_made_op(name: str) -> ops.Op:
    """An op with only a name: its nodes take their backward from local gradients or a closure."""
    if name not in _HAND_MADE_OPS:
        _HAND_MADE_OPS[name] = ops.Op(name, None, None)
    return _HAND_MADE_OPS[name]


def _nothing() -> None:
    pass


def _backward_step(node: Value) -> None:
    """What ``node._backward()`` does for a built-in op: child.grad += d(node)/d(child) * node.grad."""
    for child, child_grad in _child_gradients(node, node.grad, False):
        child.grad = child_grad if child.grad is None else child.grad + child_grad


def _as_value(x: object) -> Value | None:
    """``x`` if it is a Value, a constant leaf if it is a real number, else None."""
    if isinstance(x, Value):
        return x
    if isinstance(x, numbers.Real):
        constant = Value(x)  # type: ignore[arg-type]  # (a numbers.Real: _as_float takes it)
        hook = _mode.get().hook
        if hook is not None:
            hook.constant(constant)
        return constant
    return None


def _binary(rule: ops.Op, x: object, y: object) -> Value:
    if not isinstance(x, Value):
        x = _as_value(x)
    if not isinstance(y, Value):
        y = _as_value(y)
    if x is None or y is None:
        return NotImplemented  # Python then raises a TypeError naming both types
    return apply(rule, x, y)


def _describe(values: Iterable[Value]) -> str:
    return ", ".join(
        f"Value(data={v._data!r}, label={v.label!r})" if v.label else f"Value(data={v._data!r})"
        for v in values
    )


# ---------------------------------------------------------------------------------------------
# The choke point: every op on Values runs through here.


def apply(rule: ops.Op, *inputs: Value) -> Value:
    """Run ``rule`` on the input Values and return the result, recording the graph."""
    try:
        data = rule.forward(*map(_read_data, inputs))
    except (ValueError, ZeroDivisionError) as error:
        # Nothing has been recorded yet, so the graph is left as it was.
        raise op_error(rule, inputs, error) from None
    mode = _mode.get()
    if mode.anomaly and not math.isfinite(data):
        raise AnomalyError(f"detect_anomaly: {rule.name} produced {data!r} from {_describe(inputs)}")
    if mode.hook is None:
        node = _make(data, rule, inputs) if mode.recording else _make(data, None, ())
        if _made_in_other_threads is not None:
            _note_unhooked(node)
        return node
    node = _make(data, rule, inputs)
    if not mode.recording:
        return mode.hook.unrecorded(node)
    mode.hook.record(node)
    return node


def op_error(rule: ops.Op, inputs: Iterable[Value], error: Exception, stage: str = "") -> Exception:
    """The error to raise when ``rule`` fails on ``inputs``: same type, naming the op and operands."""
    return type(error)(f"{stage}{rule.name} of {_describe(inputs)}: {error}")


def dot(weights: Iterable[_Operand], inputs: Iterable[_Operand], bias: _Operand) -> Value:
    """``sum(w * x for w, x in zip(weights, inputs)) + bias`` as one graph node.

    >>> from chainrule import Value
    >>> dot([Value(2.0), Value(3.0)], [1.0, 10.0], Value(0.5)).data
    32.5
    """
    weights, inputs = list(weights), list(inputs)
    n = len(weights)
    if n != len(inputs):
        raise ValueError(f"dot: {n} weights but {len(inputs)} inputs")
    values = [*weights, *inputs, bias]
    if _modes_open or not set(map(type, values)) <= _PLAIN:
        return apply(ops.DOT, *_as_values(values, "dot"))
    # The fast path, as for Value.__add__.
    if not set(map(type, values)) <= _JUST_VALUES:
        values = [_constant(v) if type(v) in _PLAIN_NUMBERS else v for v in values]
    data = list(map(_read_data, values))
    w, x = data[:n], data[n : 2 * n]
    return _node(ops.add_up(map(operator.mul, w, x)) + data[-1], ops.DOT, tuple(values))


_JUST_VALUES = frozenset({Value})  # (and Parameter: see _fast_paths_take)


def _fast_paths_take(value_type: type[Value]) -> None:
    """Let the fast paths take this subclass of Value as they take Value: parameters.py calls
    it for Parameter, a Value in every way (so this module need not import that one)."""
    global _PLAIN, _JUST_VALUES
    _PLAIN, _JUST_VALUES = _PLAIN | {value_type}, _JUST_VALUES | {value_type}


def _as_values(values: Iterable[_Operand], where: str) -> list[Value]:
    values = list(values)
    if all(map(isinstance, values, itertools.repeat(Value))):  # the usual case, checked in C
        return values
    converted = [x if isinstance(x, Value) else _as_value(x) for x in values]
    for x, v in zip(values, converted):
        if v is None:
            raise TypeError(f"{where}: inputs must be Values or real numbers, not {type(x).__name__}")
    return converted  # type: ignore[return-value]  # (no None: refused above)


def sum_values(values: Iterable[Value | float]) -> Value:
    """The sum of many Values (or numbers) as one graph node, instead of a chain of ``+``.

    >>> sum_values([Value(1.0), 2, Value(3.0)]).data
    6.0
    """
    inputs = _as_values(values, "sum")
    if not inputs:
        return Value(0.0)
    if _modes_open:
        return apply(ops.SUM, *inputs)
    return _node(ops.add_up(map(_read_data, inputs)), ops.SUM, tuple(inputs))


def take(rows: Sequence[_Row], index: float | Value) -> _Row:
    """``rows[index]``: the row (or the one Value) that ``index`` picks.

    Eagerly this is plain indexing. It exists for ``chainrule.compile``: an index that picks
    what to compute (a token id choosing its embedding row) must go through ``take``, so that
    a compiled function called with a new index picks the new row, not the first call's. There
    a Value index makes one ``take`` node per picked Value (a row of them comes back as a new
    list); the gradient reaches only the picked row.

    >>> table = [[Value(1.0), Value(2.0)], [Value(3.0), Value(4.0)]]
    >>> [v.data for v in take(table, 1)]
    [3.0, 4.0]
    """
    if isinstance(index, Value):
        hook = _mode.get().hook
        if hook is not None:
            return hook.take(rows, index)
        index = index._data
    return rows[ops.take_index(index, len(rows))]


def map_rows(fn: Callable[..., _Result], *rows: Iterable[Any]) -> list[_Result]:
    """``[fn(*row) for row in zip(*rows)]``: ``fn`` applied to every row of a batch.

    Eagerly this is the plain loop. It exists for ``chainrule.compile``, which runs ``fn`` on
    the first row only and copies its tape for the others, so 10,000 rows compile in little
    more time than 100, and a layer over the rows becomes one matrix
    product. ``fn`` must do the same for every row: it runs plainly on each row if it reads a
    number that comes from the row (see compiler/mapping.py).

    >>> xs = [[Value(1.0), Value(2.0)], [Value(3.0), Value(4.0)]]
    >>> [v.data for v in map_rows(lambda x: x[0] * x[1], xs)]
    [2.0, 12.0]
    """
    if not callable(fn):
        raise TypeError(f"map_rows(fn, rows): fn must be callable, got {type(fn).__name__}")
    if not rows:
        raise TypeError("map_rows(fn, rows): no rows given")
    hook = _mode.get().hook
    if hook is not None:
        return hook.map_rows(fn, rows)
    return list(map(fn, *rows))


def logsumexp(values: Iterable[Value | float]) -> Value:
    """``log(sum(exp(v) for v in values))`` as one node, finite even for logits of +-1000.

    >>> round(logsumexp([Value(1000.0), Value(1000.0)]).data - 1000.0, 6)   # log 2
    0.693147
    """
    inputs = _as_values(values, "logsumexp")
    if not inputs:
        raise ValueError("logsumexp: needs at least one value")
    return apply(ops.LOGSUMEXP, *inputs)


# ---------------------------------------------------------------------------------------------
# Backpropagation, in two named steps.


def topological_order(*roots: Value) -> list[Value]:
    """Every node reachable from the roots, each after all of its children.

    A depth-first walk that places a node once all its children are placed. The order depends
    only on the order of ``children``, so it is the same on every run. Recursion is the
    simplest and the fastest way to write it; a graph too deep for Python's recursion limit
    is walked again with an explicit stack, so any depth works.
    """
    if _graph is not None:  # the same walk in C (see the end of this file), if built
        order = _graph.depth_first(roots)
        if order is not None:
            return order
    try:
        return _depth_first(roots)
    except RecursionError:
        return _depth_first_with_a_stack(roots)


def _depth_first(roots: Iterable[Value]) -> list[Value]:
    order: list[Value] = []
    visited: set[Value] = set()
    for root in roots:
        if root not in visited:
            _visit(root, visited, order)
    return order


def _visit(node: Value, visited: set[Value], order: list[Value]) -> None:
    visited.add(node)
    for child in node.children:
        if child not in visited:
            _visit(child, visited, order)
    order.append(node)


def _depth_first_with_a_stack(roots: Sequence[Value]) -> list[Value]:
    # The same walk, with the call stack made explicit: a node is pushed back under a ``None``
    # marker before its children, and placed when the marker comes off the stack.
    order: list[Value] = []
    visited: set[Value] = set()
    stack: list[Any] = list(reversed(roots))  # Values, and None markers
    while stack:
        node = stack.pop()
        if node is None:
            order.append(stack.pop())
        elif node not in visited:
            visited.add(node)
            stack.append(node)
            stack.append(None)
            stack.extend(reversed(node.children))  # so the first child is walked first
    return order


def backward(root: Value, gradient: float | Value = 1.0, create_graph: bool = False) -> None:
    """Backpropagate from ``root``: add d(root)/d(node) * gradient to every node's ``grad``.

    All or nothing: the new totals are worked out first and then stored in one step, so if
    anything raises on the way (a domain error, a bad ``.grad``, Ctrl-C), no node changes.
    A ``grad`` set to ``None`` counts as zero, as in PyTorch. With ``create_graph=True`` the
    gradients are Values with a graph of their own, so they can be differentiated again
    (see ``chainrule.autograd.grad``).
    """
    seed = _check_gradient(gradient, create_graph)
    _reading_numbers("backward()")  # it stores gradients into .grad
    with _one_pass_at_a_time:  # reading the grads and storing the totals is one step
        if not (create_graph or _mode.get().anomaly):
            order = topological_order(root)
            if set(map(type, map(_read_grad, order))) <= _NUMBER_TYPES:  # else the careful path below
                _store_grads(order, _propagate_numbers(order, seed, add_to_grad=True))
                return
        pending = _propagate(root, seed, create_graph)
        totals = [_accumulate(node, g, create_graph) for node, g in pending.items()]
        _store_grads(pending, totals)


# Backward passes in different threads take turns: each gathers its shares apart (in a list
# of its own), but reading a grad and storing grad + share must be one step, or two threads
# that share parameters would each store their own total and lose the other's. Reentrant, so
# that a lecture-style _backward closure may itself call backward (its pass adds to the grads).
_one_pass_at_a_time = threading.RLock()


def _add_to_grads(nodes: Sequence[Value], shares: Any) -> None:
    """``node.grad += share`` for each node and its share (a float64 array), all or nothing, as
    ``backward`` adds: for chainrule.compile's results, whose shares come from their tape."""
    with _one_pass_at_a_time:
        if _graph is not None and _graph.add_to_grads(nodes, shares):
            return  # the loop below, in C (see the end of this file)
        _store_grads(nodes, [_accumulate(node, g, False) for node, g in zip(nodes, shares.tolist())])


def _store_grads(nodes: Iterable[Value], totals: Iterable[Any]) -> None:
    # One loop in C: a KeyboardInterrupt cannot arrive between two of these assignments.
    collections.deque(map(setattr, nodes, itertools.repeat("grad"), totals), maxlen=0)


_NUMBER_TYPES = frozenset({float, int})


def _accumulate(node: Value, g: Any, create_graph: bool) -> Any:
    """What ``node.grad`` becomes once ``g`` is added to it.

    With ``create_graph`` only a leaf keeps a gradient with a graph, as in PyTorch; a computed
    node keeps its number, since its gradient's graph would often refer back to the node itself
    (d/dh h*h = 2h) and so make a reference cycle that only the garbage collector could free.
    """
    total = node.grad
    if create_graph and node.children:
        g, create_graph = (g._data if isinstance(g, Value) else g), False
        if isinstance(total, Value):
            total = total._data
    if total is None:
        return g
    if create_graph:
        return _add(total, g)
    if isinstance(total, (float, Value)):
        return total + g
    if isinstance(total, numbers.Real) and not isinstance(total, bool):
        return float(total) + g
    raise TypeError(f"the grad of {_describe([node])} must be a number, a Value or None; got {total!r}")


def _check_gradient(gradient: object, create_graph: bool) -> Any:  # a float; a Value with create_graph
    """The seed of a backward pass as a float, or as a Value when building a graph."""
    if type(gradient) is float and not create_graph:  # the usual case, at once
        return gradient
    if isinstance(gradient, Value):
        return gradient if create_graph else gradient._data
    if isinstance(gradient, numbers.Real) and not isinstance(gradient, bool):
        number = float(gradient)
        return Value(number) if create_graph else number
    raise TypeError(f"backward: gradient must be a real number or a Value, got {gradient!r}")


def propagate(root: Value, gradient: float | Value = 1.0, create_graph: bool = False) -> dict[Value, Any]:
    """This pass's d(root)/d(node) * gradient for every node reached, in a new dict.

    Each node's gradient is gathered in the dict, starting from zero, and only passed on
    once every node that uses it has added its share; the nodes' ``grad`` is not read or
    written, so a second backward adds the same amount again instead of feeding the old total
    back in, and an exception leaves nothing behind.
    """
    seed = _check_gradient(gradient, create_graph)
    hook = _mode.get().hook
    if hook is None:
        return _propagate(root, seed, create_graph)
    with hook.backward_pass(create_graph):  # it may refuse, or watch the pass
        return _propagate(root, seed, create_graph)


def _propagate(root: Value, seed: Any, create_graph: bool) -> dict[Value, Any]:
    order = topological_order(root)
    if create_graph and _graph is not None:
        _graph.watch(order)  # a gradient's graph may point back at these nodes: a cycle
    anomaly = _mode.get().anomaly
    if not (create_graph or anomaly):
        return dict(zip(order, _propagate_numbers(order, seed, add_to_grad=False)))
    pending = {root: seed}
    with enable_grad() if create_graph else contextlib.nullcontext():
        for node in reversed(order):  # every node is reached after all the nodes that use it
            g = pending.get(node)
            if g is None or node._rule is None:
                continue
            for child, child_grad in _child_gradients(node, g, create_graph):
                if child_grad is None:  # an input that is a constant by construction
                    continue
                if anomaly:
                    _check_finite(node, child, child_grad)
                total = pending.get(child)
                pending[child] = child_grad if total is None else total + child_grad
    return pending


def _propagate_numbers(order: list[Value], seed: float, add_to_grad: bool) -> list[float]:
    """``propagate`` for the common case, first order with no checks: each node's share, in order.

    The shares are gathered in a list, one place per node of ``order``, found by the node's
    identity (no ``__hash__`` of a subclass runs). Every place starts at 0.0, the root's at the
    seed. With ``add_to_grad``, once every share is in, each becomes the node's new total,
    ``share + grad``, ready to be stored (the caller has checked that every grad is a number):
    read then, a grad includes what a backward run by a closure during the walk added to it.
    """
    if _graph is not None:
        shares = _graph.propagate_numbers(order, seed, add_to_grad)
        if shares is not None:
            return shares  # the same loop in C (see the end of this file) has done it
    place = {id(node): i for i, node in enumerate(order)}
    shares = [0.0] * len(order)
    shares[-1] = seed
    for i in range(len(order) - 1, -1, -1):  # every node after all the nodes that use it
        node = order[i]
        if node._rule is None:
            continue
        for child, child_grad in _child_gradients(node, shares[i], False):
            if child_grad is not None:
                shares[_place_of(place, child, node)] += child_grad
    if add_to_grad:
        return [share + node.grad for share, node in zip(shares, order)]
    return shares


def _place_of(place: dict[int, int], child: Value, node: Value) -> int:
    i = place.get(id(child))
    if i is None:  # only a closure that replaced some node's children could have done this
        raise RuntimeError(
            f"backward: a child of {_describe([node])} is not in the graph being walked: "
            "the graph changed during backward"
        )
    return i


def _child_gradients(node: Value, g: Any, create_graph: bool) -> Iterable[tuple[Value, Any]]:
    """(child, g * d(node)/d(child)) for each child of ``node``: the chain rule at one node."""
    rule, children = node._rule, node.children
    if rule.backward is None:  # a node built by hand: its stored local gradients or closure
        local = node._local
        if type(local) is tuple:  # Value(data, children, local_grads)
            return zip(children, map(operator.mul, local, itertools.repeat(g)))
        if callable(local):  # Value(data, _children, _op) with a _backward closure
            return _run_closure(node, local, g)
        return ()  # no _backward set: the node passes nothing back
    try:
        if create_graph:  # the same rule on Values builds the gradient's graph
            grads = rule.backward(g, node, *children)
        else:
            grads = rule.backward(g, node._data, *[c._data for c in children])
    except (ValueError, ZeroDivisionError) as error:
        raise op_error(rule, children, error, stage="backward of ") from None
    return zip(children, grads)


def _run_closure(node: Value, closure: Callable[[], None], g: Any) -> list[tuple[Value, Any]]:
    """Run a lecture-style ``_backward`` closure and return what it added to each child.

    The closure reads ``node.grad`` and adds into its children's ``grad``; so for the length
    of the call ``node.grad`` holds this pass's gradient and each child's ``grad`` starts at 0,
    and afterwards everything is put back. The closure's shares then add up like any other.
    """
    children = list(dict.fromkeys(node.children))  # a child used twice is one grad to read
    saved_node_grad, saved = node.grad, [child.grad for child in children]
    try:
        for child in children:
            child.grad = 0.0
        node.grad = g
        closure()
        return [(child, child.grad) for child in children]
    finally:
        node.grad = saved_node_grad
        for child, child_grad in zip(children, saved):
            child.grad = child_grad


def _add(total: Any, g: Any) -> Any:
    """total + g, without a needless ``0.0 + g`` node when nothing has been gathered yet."""
    return g if type(total) is float and total == 0.0 else total + g


def _check_finite(node: Value, child: Value, child_grad: Any) -> None:
    number = child_grad._data if isinstance(child_grad, Value) else child_grad
    if not math.isfinite(number):
        raise AnomalyError(
            f"detect_anomaly: backward of {node.op} produced gradient {number!r} "
            f"for {_describe([child])} (inputs: {_describe(node.children)})"
        )


def zero_grads(values: Iterable[Value]) -> None:
    """``v.grad = 0.0`` for every Value in the list: what ``zero_grad()`` does."""
    _reading_numbers("zero_grad()")
    in_c = _loops_in_c()
    if in_c and in_c.fill_grads(values, 0.0):
        return  # the same loop in C
    for v in values:
        v.grad = 0.0


def _loops_in_c() -> Any:  # _graph (a C extension), or None
    """The C loops over many Values (see below), or None: when they are not built, and under a
    hook, whose watch over ``.data`` and ``.grad`` they would go around."""
    return _graph if _graph is not None and _mode.get().hook is None else None


# ---------------------------------------------------------------------------------------------
# The same loops in C. chainrule/_graph.c, built when pip finds a C compiler, does what _node,
# _depth_first and _propagate_numbers above do, number for number, several times faster. It
# also leaves the fast ops' nodes out of the walks of Python's cyclic garbage collector, which
# were most of the time of building a large graph; the top of _graph.c says why that is safe.
# CHAINRULE_PURE_PYTHON=1 runs on the Python above alone.


def _load_graph_module() -> Any:
    if _settings.pure_python():
        return None
    try:
        from . import _graph
    except ImportError:
        return None
    # _graph.c's backward loop finds the ops it computes itself in the registry, by name.
    if not _graph.setup(Value, _child_gradients, ops.OPS):
        return None  # they serve the Value of another copy of this module (see _slots.h)
    return _graph


_graph = _load_graph_module()
if _graph is not None:
    _node = _graph.node


__all__ = [
    "AnomalyError",
    "Value",
    "apply",
    "backward",
    "detect_anomaly",
    "dot",
    "enable_grad",
    "is_grad_enabled",
    "logsumexp",
    "map_rows",
    "no_grad",
    "propagate",
    "sum_values",
    "take",
    "topological_order",
]
