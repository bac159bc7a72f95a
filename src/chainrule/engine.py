"""The engine: a scalar Value, the one function that applies ops, and backpropagation.

Read it top to bottom:

1. ``Value`` holds a float, its gradient, and (for a computed value) the op that made it and
   the Values it was made from (``children``).
2. ``apply`` is the single place where an op runs: it computes the forward value from the
   table in ``ops.py``, checks the domain, and records the graph unless ``no_grad`` is on.
3. ``backward`` sorts the graph so that every node comes after all the nodes that use it,
   then walks it once, asking each op's rule for the gradients of its inputs and **adding**
   them up. A value used twice receives the sum of both contributions.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from dataclasses import dataclass, replace

from . import ops

# ---------------------------------------------------------------------------------------------
# Modes: whether ops record a graph, and whether nan/inf should stop the program.
# They live in a context variable, so each thread (and each asyncio task) has its own.


@dataclass(frozen=True, slots=True)
class _Mode:
    recording: bool = True
    anomaly: bool = False
    tracer: object = None  # chainrule.compile's tracer: shown every node and constant made while tracing


_mode = contextvars.ContextVar("chainrule_mode", default=_Mode())


class _ModeSwitch(contextlib.ContextDecorator):
    """Change fields of the mode inside a ``with`` block or a decorated function."""

    def __init__(self, **changes):
        self._changes = changes
        self._tokens = []

    def _recreate_cm(self):
        # A decorated function gets a fresh switch per call, so threads never share tokens.
        return _ModeSwitch(**self._changes)

    def __enter__(self):
        self._tokens.append(_mode.set(replace(_mode.get(), **self._changes)))
        return self

    def __exit__(self, *exc_info):
        _mode.reset(self._tokens.pop())
        return False


def no_grad():
    """Ops inside record no graph: their results are leaves with no children.

    Works as a context manager and as a decorator, like ``torch.no_grad``.

    >>> from chainrule import Value, no_grad
    >>> with no_grad():
    ...     y = Value(2.0) * 3
    >>> y.children
    ()
    """
    return _ModeSwitch(recording=False)


def enable_grad():
    """Turn graph recording back on inside a ``no_grad`` block."""
    return _ModeSwitch(recording=True)


def is_grad_enabled() -> bool:
    """True when ops record the graph (outside any ``no_grad`` block)."""
    return _mode.get().recording


def detect_anomaly():
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


def _as_float(data):
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
    """

    __slots__ = ("data", "grad", "label", "children", "_rule", "_pending", "__weakref__")

    def __init__(self, data, label: str = ""):
        self.data = _as_float(data)
        self.grad = 0.0
        self.label = label
        self.children = ()
        self._rule = None  # the ops.Op that made this value; None for a leaf
        self._pending = 0.0  # gradient gathered during the current backward pass

    @property
    def op(self) -> str:
        """The name of the op that made this value; '' for a leaf."""
        return "" if self._rule is None else self._rule.name

    # micrograd's names for the same things, read-only
    _op = op

    @property
    def _prev(self) -> tuple:
        return self.children

    def __repr__(self):
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data!r}, grad={self.grad!r}{label})"

    # Arithmetic. A plain number on either side becomes a constant leaf.
    def __add__(self, other):
        return _binary(ops.ADD, self, other)

    def __radd__(self, other):
        return _binary(ops.ADD, other, self)

    def __sub__(self, other):
        return _binary(ops.SUB, self, other)

    def __rsub__(self, other):
        return _binary(ops.SUB, other, self)

    def __mul__(self, other):
        return _binary(ops.MUL, self, other)

    def __rmul__(self, other):
        return _binary(ops.MUL, other, self)

    def __truediv__(self, other):
        return _binary(ops.DIV, self, other)

    def __rtruediv__(self, other):
        return _binary(ops.DIV, other, self)

    def __pow__(self, other):
        if isinstance(other, Value):
            return apply(ops.POW, self, other)
        return _binary(ops.POW_CONSTANT, self, other)

    def __rpow__(self, other):
        return _binary(ops.RPOW, other, self)

    def __neg__(self):
        return apply(ops.NEG, self)

    def __pos__(self):
        return self

    # Functions
    def exp(self):
        return apply(ops.EXP, self)

    def log(self):
        return apply(ops.LOG, self)

    def tanh(self):
        return apply(ops.TANH, self)

    def sigmoid(self):
        return apply(ops.SIGMOID, self)

    def relu(self):
        return apply(ops.RELU, self)

    def softplus(self):
        """log(1 + exp(self)), finite for any input; its derivative is the sigmoid."""
        return apply(ops.SOFTPLUS, self)

    def detach(self):
        """A new leaf with the same data, cut off from this value's graph."""
        return Value(self.data, self.label)

    def backward(self, gradient=1.0, create_graph: bool = False):
        """Add d(self)/d(node) * gradient to the ``grad`` of every node in self's graph.

        With ``create_graph=True`` the gradients are Values that can be differentiated again.
        """
        backward(self, gradient, create_graph)

    def __reduce__(self):
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
        grad = self.grad.data if isinstance(self.grad, Value) else self.grad
        return _restore_leaf, (self.data, grad, self.label)


def _restore_leaf(data, grad, label):
    """A leaf Value with this data, grad and label: how a copied or pickled Value comes back."""
    value = Value(data, label)
    value.grad = grad
    return value


def _make(data, rule, children):
    """A computed Value, built without re-checking data that an op just produced."""
    value = Value.__new__(Value)
    value.data = data
    value.grad = 0.0
    value.label = ""
    value.children = children
    value._rule = rule
    value._pending = 0.0
    return value


def _as_value(x):
    """``x`` if it is a Value, a constant leaf if it is a real number, else None."""
    if isinstance(x, Value):
        return x
    if isinstance(x, numbers.Real):
        constant = Value(x)
        tracer = _mode.get().tracer
        if tracer is not None:
            tracer.constant(constant)
        return constant
    return None


def _binary(rule, x, y):
    x, y = _as_value(x), _as_value(y)
    if x is None or y is None:
        return NotImplemented  # Python then raises a TypeError naming both types
    return apply(rule, x, y)


def _describe(values):
    return ", ".join(
        f"Value(data={v.data!r}, label={v.label!r})" if v.label else f"Value(data={v.data!r})" for v in values
    )


# ---------------------------------------------------------------------------------------------
# The choke point: every op on Values runs through here.


def apply(rule: ops.Op, *inputs: Value) -> Value:
    """Run ``rule`` on the input Values and return the result, recording the graph."""
    try:
        data = rule.forward(*[x.data for x in inputs])
    except (ValueError, ZeroDivisionError) as error:
        # Nothing has been recorded yet, so the graph is left as it was.
        raise op_error(rule, inputs, error) from None
    mode = _mode.get()
    if mode.anomaly and not math.isfinite(data):
        raise AnomalyError(f"detect_anomaly: {rule.name} produced {data!r} from {_describe(inputs)}")
    if not mode.recording:
        return _make(data, None, ())
    node = _make(data, rule, inputs)
    if mode.tracer is not None:
        mode.tracer.node(node)
    return node


def op_error(rule: ops.Op, inputs, error: Exception, stage: str = "") -> Exception:
    """The error to raise when ``rule`` fails on ``inputs``: same type, naming the op and operands."""
    return type(error)(f"{stage}{rule.name} of {_describe(inputs)}: {error}")


def dot(weights, inputs, bias) -> Value:
    """``sum(w * x for w, x in zip(weights, inputs)) + bias`` as one graph node.

    >>> from chainrule import Value
    >>> dot([Value(2.0), Value(3.0)], [1.0, 10.0], Value(0.5)).data
    32.5
    """
    weights, inputs = list(weights), list(inputs)
    if len(weights) != len(inputs):
        raise ValueError(f"dot: {len(weights)} weights but {len(inputs)} inputs")
    return apply(ops.DOT, *_as_values([*weights, *inputs, bias], "dot"))


def _as_values(values, where: str) -> list[Value]:
    values = list(values)
    converted = [_as_value(x) for x in values]
    for x, v in zip(values, converted):
        if v is None:
            raise TypeError(f"{where}: inputs must be Values or real numbers, not {type(x).__name__}")
    return converted


def sum_values(values) -> Value:
    """The sum of many Values (or numbers) as one graph node, instead of a chain of ``+``.

    >>> sum_values([Value(1.0), 2, Value(3.0)]).data
    6.0
    """
    inputs = _as_values(values, "sum")
    if not inputs:
        return Value(0.0)
    return apply(ops.SUM, *inputs)


def logsumexp(values) -> Value:
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

    An explicit stack instead of recursion, so a graph of any depth works; the order depends
    only on the order of ``children``, so it is the same on every run.
    """
    order = []
    visited = set()
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root.children))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in visited:
                    visited.add(child)
                    if child.children:
                        stack.append((child, iter(child.children)))
                        break
                    order.append(child)  # a leaf is finished as soon as it is seen
            else:
                stack.pop()
                order.append(node)
    return order


def backward(root: Value, gradient=1.0, create_graph: bool = False) -> None:
    """Backpropagate from ``root``: add d(root)/d(node) * gradient to every node's ``grad``.

    With ``create_graph=True`` the gradients are Values with a graph of their own, so they
    can be differentiated again (see ``chainrule.autograd.grad``).
    """
    order = propagate(root, gradient, create_graph)
    for node in order:
        node.grad = _add(node.grad, node._pending) if create_graph else node.grad + node._pending
        node._pending = 0.0


def propagate(root: Value, gradient=1.0, create_graph: bool = False) -> list[Value]:
    """Compute this pass's d(root)/d(node) * gradient into every node's ``_pending``.

    Each node's gradient is gathered in ``_pending``, starting from zero, and only passed on
    once every node that uses it has added its share; the nodes' ``grad`` is not read, so a
    second backward adds the same amount again instead of feeding the old total back in.
    Returns the nodes in topological order; the caller reads ``_pending`` and resets it to 0.
    """
    order = topological_order(root)
    root._pending = Value(gradient) if create_graph and not isinstance(gradient, Value) else gradient
    anomaly = _mode.get().anomaly
    try:
        with enable_grad() if create_graph else contextlib.nullcontext():
            for node in reversed(order):  # every node is reached after all the nodes that use it
                rule = node._rule
                if rule is None:
                    continue
                g, children = node._pending, node.children
                try:
                    if create_graph:  # the same rule on Values builds the gradient's graph
                        grads = rule.backward(g, node, *children)
                    else:
                        grads = rule.backward(g, node.data, *[c.data for c in children])
                except (ValueError, ZeroDivisionError) as error:
                    raise op_error(rule, children, error, stage="backward of ") from None
                for child, child_grad in zip(children, grads):
                    if child_grad is None:
                        continue
                    if create_graph:
                        child._pending = _add(child._pending, child_grad)
                    else:
                        child._pending += child_grad
                if anomaly:
                    _check_gradients(rule, children, grads)
    except BaseException:
        for node in order:
            node._pending = 0.0
        raise
    return order


def _add(total, g):
    """total + g, without a needless ``0.0 + g`` node when nothing has been gathered yet."""
    return g if type(total) is float and total == 0.0 else total + g


def _check_gradients(rule, children, grads):
    for child, child_grad in zip(children, grads):
        number = child_grad.data if isinstance(child_grad, Value) else child_grad
        if child_grad is not None and not math.isfinite(number):
            raise AnomalyError(
                f"detect_anomaly: backward of {rule.name} produced gradient {number!r} "
                f"for {_describe([child])} (inputs: {_describe(children)})"
            )


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
    "no_grad",
    "propagate",
    "sum_values",
    "topological_order",
]
