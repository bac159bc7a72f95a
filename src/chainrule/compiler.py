"""chainrule.compile: trace a scalar computation once, replay it over flat numpy arrays.

A training step builds the same graph every time; only the numbers change. ``compile(fn)``
runs ``fn`` once on leaf Values (the *trace*), flattens the graph into a *tape* and, on every
later call with arguments of the same structure, replays the tape over float64 arrays:

- every node gets a slot in one ``data`` array: the inputs first, then the constants made
  inside ``fn``, then the Values that existed before the call (parameters, read afresh at
  every call), then the computed nodes;
- computed nodes are grouped by (depth in the graph, op), so each group is one numpy
  operation: gather the inputs, apply the op's vectorized rule from ``ops.py``, store the
  outputs in the group's contiguous slice;
- backward walks the groups in reverse and scatter-adds each group's input gradients
  (``np.bincount`` over precomputed indices, not ``np.add.at``).

Before grouping, chains of ``+`` (what the builtin ``sum()`` makes) are folded into one n-ary
sum, and a sum of products ``b + w1*x1 + ... + wn*xn`` becomes one ``dot`` node, so the tape
stays shallow.

The result of a compiled call is an ordinary Value whose single op, ``compiled``, has the
parameters as children; its backward rule runs the tape backward. So ``loss.backward()``
accumulates into the parameters' ``.grad`` exactly as eager backward does, and a compiled
result can be used in further eager arithmetic.

``detach()`` and ops under ``no_grad`` are recorded too, each behind a ``stop_gradient`` node
(identity forward, no gradient backward): replay recomputes them from the new numbers, and
backward skips the nodes reached only through them, which eager backward never visits.

What tracing cannot see: Python control flow that depends on numbers (``if v.data > 0:``).
The branch taken while tracing is frozen into the tape. So while a trace runs, ``Value.data``
and ``Value.grad`` are properties that check who reads and writes them (the plain slots are put
back when the trace ends, so eager code pays nothing): ``fn`` touching them on any Value, traced
or made outside it (a parameter), warns with ``TraceWarning``; a chainrule function that would
freeze a number or act only once (``backward()``, ``zero_grad()``, an optimizer step, ...)
raises ``NotImplementedError``; ops, new Values, ``repr`` and drawings pass freely.

Arguments are checked like eager arithmetic checks numbers: only real numbers (numpy's too),
in lists, tuples and numpy arrays, get in; anything else is a TypeError naming its position.

That is the numpy backend. ``compile(fn, backend="c")`` runs the same tape as a C program
instead (native.py): the same groups, one C loop each, built once by the system's C compiler.

numpy is needed here and only here (``pip install "chainrule[fast]"``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import numbers
import operator
import os
import reprlib
import sys
import threading
import time
import types
import warnings

from . import engine, native, ops
from .engine import AnomalyError, Value, _make, _mode, _ModeSwitch, op_error


class TraceWarning(UserWarning):
    """``fn`` read a number while being traced, so what it did with it is frozen into the trace."""


BACKENDS = ("numpy", "c", "auto")


def compile(fn, backend=None):
    """Compile ``fn``, a function that builds a scalar graph, into a fast replay.

    ``backend`` is how the tape is replayed: ``"numpy"`` (one numpy call per group of nodes),
    ``"c"`` (the tape as a C program, built by the system's C compiler; see native.py) or
    ``"auto"`` (C when a compiler is found, else numpy, quietly). The default is
    ``$CHAINRULE_BACKEND``, else ``"numpy"``. Both give the same numbers and the same errors;
    ``"c"`` without a compiler falls back to numpy with a one-line warning.

    >>> from chainrule import Value, compile
    >>> w = Value(2.0)
    >>> f = compile(lambda xs: sum(w * x for x in xs))
    >>> y = f([1.0, 2.0, 3.0])      # traces
    >>> y.data
    12.0
    >>> y.backward(); w.grad
    6.0
    >>> f([1.0, 1.0, 1.0]).data     # replays
    6.0
    """
    return CompiledFunction(fn, backend)


class CompiledFunction:
    """A function with its traces, one per argument structure."""

    def __init__(self, fn, backend=None):
        try:
            import numpy
        except ImportError:
            raise ImportError('chainrule.compile needs numpy: pip install "chainrule[fast]"') from None
        self.np = numpy
        if backend is None:
            backend = os.environ.get("CHAINRULE_BACKEND") or "numpy"
        if backend not in BACKENDS:
            raise ValueError(
                f"chainrule.compile: backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        self.backend = backend

        self.fn = fn
        self.tapes = {}
        self.trace_seconds = 0.0  # the time spent tracing, over all traces so far
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if _mode.get().tracer is not None:  # called inside another trace: let it see the ops
            return self.fn(*args)
        flat = []
        structure = tuple(_flatten_arguments(arg, flat, (i,)) for i, arg in enumerate(args))
        numbers_in = self.np.concatenate(flat) if flat else self.np.empty(0)
        tape = self.tapes.get(structure)
        if tape is None:
            start = time.perf_counter()
            tape = self.tapes[structure] = trace(self.fn, structure, numbers_in.tolist(), self.backend)
            self.trace_seconds += time.perf_counter() - start
            self.last_tape = tape
        return tape.run(numbers_in)

    def source(self) -> str:
        """The C program of the latest trace (the C backend's): your function as C."""
        tape = getattr(self, "last_tape", None)
        if tape is None:
            raise ValueError("source(): call the compiled function once first, so that it is traced")
        if tape.native is None:
            raise ValueError(
                f"source(): this trace runs on numpy (backend={self.backend!r}); use backend='c'"
            )
        return tape.native.source

    def __repr__(self):
        return f"<compiled {getattr(self.fn, '__qualname__', self.fn)!r}, {len(self.tapes)} trace(s)>"


# ---------------------------------------------------------------------------------------------
# Arguments: numbers and nested lists/tuples of numbers, flattened into float64 arrays plus a
# hashable structure that says how to rebuild them.


def _flatten_arguments(obj, flat, position):
    """Append ``obj``'s numbers to ``flat`` (a list of 1-d arrays) and return its structure.

    ``position`` says where ``obj`` is, for error messages: (argument index, item index, ...).
    Only real numbers get in, as in eager arithmetic; anything else is a TypeError naming it.
    """
    np = sys.modules["numpy"]
    kind = type(obj)
    if kind is list or kind is tuple or isinstance(obj, np.ndarray):
        array = _real_block(np, obj, position)
        # A block's inner rows are rebuilt as lists, so rows given as tuples take the slower path.
        if array is not None and (array.ndim <= 1 or _rows_are_lists(obj, array.ndim, np)):
            flat.append(array.ravel())
            return ("block", kind is tuple, array.shape)
        if getattr(obj, "ndim", 1) > 0:  # ragged, or items of several types: one by one
            items = tuple(_flatten_arguments(x, flat, (*position, i)) for i, x in enumerate(obj))
            return ("nest", kind is tuple, items)
        obj = obj.item()  # a 0-d array of objects holds one item
    flat.append(np.array([_real_number(np, obj, position)]))
    return None


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


def _real_number(np, obj, position) -> float:
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


def _argument(position) -> str:
    """``(0, 2, 1)`` as 'argument 0[2][1] of the compiled function'."""
    index, *items = position
    return f"argument {index}{''.join(f'[{i}]' for i in items)} of the compiled function"


def _rows_are_lists(obj, ndim, np) -> bool:
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
    if structure is None:
        return next(leaves)
    kind, is_tuple, shape = structure
    if kind == "block":
        size = 1
        for n in shape:
            size *= n
        built = _reshape([next(leaves) for _ in range(size)], shape)
    else:
        built = [_unflatten_arguments(item, leaves) for item in shape]
    return tuple(built) if is_tuple and isinstance(built, list) else built


def _reshape(items, shape):
    """A flat list as nested lists of the given shape (a block's rows are lists)."""
    if len(shape) <= 1:
        return items if shape else items[0]
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


# ---------------------------------------------------------------------------------------------
# Tracing


class _TracedValue(Value):
    """A Value made while tracing: a node of the tape (or an input leaf)."""

    __slots__ = ()

    def __index__(self):
        # Indexing a list with a traced number would freeze the row picked while tracing.
        raise TypeError(
            "chainrule.compile: a traced number cannot index a list (the row picked while tracing "
            "would be frozen into the trace); pick with chainrule.take(rows, index) instead"
        )


class _Tracer:
    """Shown, by the engine, every node, number-made constant, ``detach()`` and ``no_grad`` op
    while tracing, and (through ``_watched``) every read and write of a Value's data and grad."""

    def __init__(self):
        self.constants = set()
        self.nodes = []  # every node computed while tracing, in the order made

    def node(self, value):
        value.__class__ = _TracedValue
        self.nodes.append(value)

    def constant(self, value):
        self.constants.add(value)

    def detached(self, value):
        """``value.detach()``: a stop_gradient node, so that replay recomputes it from new numbers."""
        stopped = _make(value.data, ops.STOP_GRADIENT, (value,))
        stopped.label = value.label
        self.node(stopped)
        return stopped

    def unrecorded(self, node):
        """An op under ``no_grad``: recorded all the same, behind a stop_gradient."""
        self.node(node)
        return self.detached(node)

    def take(self, rows, index):
        """``chainrule.take(rows, index)`` with a Value index: one ``take`` node per picked Value,
        whose inputs are the index and the candidates, so that replay picks by the new index."""
        rows = list(rows)
        if rows and all(isinstance(row, (list, tuple)) for row in rows):
            width = len(rows[0])
            if any(len(row) != width for row in rows):
                raise ValueError(
                    f"take: the rows have different lengths ({sorted({len(row) for row in rows})}), "
                    "so a traced index cannot pick among them"
                )
            return [self._take_one(column, index) for column in zip(*rows)]
        if any(isinstance(row, (list, tuple)) for row in rows):
            raise TypeError("take: rows must all be Values (or numbers), or all be lists of them")
        return self._take_one(rows, index)

    @staticmethod
    def _take_one(candidates, index):
        return engine.apply(ops.TAKE, index, *engine._as_values(candidates, "take"))

    def touched(self, value, frame, slot, writing):
        """Code running in ``frame`` read or wrote ``value.data`` or ``value.grad`` (``slot``):
        warn, or refuse, since what it does happens once, while tracing, and not on replay."""
        if value in self.constants:
            return  # a number written in fn: a constant anyway
        module = frame.f_globals.get("__name__", "")
        traced = type(value) is _TracedValue
        if module.partition(".")[0] != "chainrule":
            what = "a traced value" if traced else "a Value made outside the function (a parameter, say)"
            effect = (
                "that write happens once, while tracing, not on every call"
                if writing
                else "anything computed from that number (an `if`, a constant) is frozen into the "
                "trace and will not change on replay. Compute with the Value itself instead"
            )
            warnings.warn(
                f"chainrule.compile: the traced function {'wrote' if writing else 'read'} .{slot} "
                f"of {what}; {effect}.",
                TraceWarning,
                stacklevel=3,  # the user's line: touched <- the property <- the user
            )
        elif module not in _QUIET_MODULES:
            code = frame.f_code
            function = getattr(code, "co_qualname", code.co_name).partition(".<locals>")[0]
            generic = (
                f"{function} ({module}) {'wrote' if writing else 'read'} .{slot} of "
                f"{'a traced value' if traced else 'a Value'} while tracing; that happens once, "
                "while tracing, and is frozen into the trace, not repeated on replay. Call it "
                "outside the compiled function"
            )
            explanation = next((text for ids, text in _FREEZING_CODE if id(code) in ids), generic)
            raise NotImplementedError(f"chainrule.compile: {explanation}")


def _watched(slot, name):
    """A property over one of Value's slots, used while a trace runs in some thread.

    In a thread that is tracing, every read and write is shown to the tracer, except those by
    ``_QUIET_CODE``: a new Value being filled in, an op reading its inputs, or code that only
    shows the number (``repr``, error messages). See ``_Tracer.touched`` for the rest.
    """

    # Every op reads its inputs through here while tracing, so the names it needs are bound
    # once, as default arguments, instead of being looked up at every call.
    # The caller is checked first: most reads and writes come from quiet code (an op), which
    # then needs no look-up of the mode.
    def get(value, get_slot=slot.__get__, mode=_mode.get, caller=sys._getframe, quiet=_QUIET_CODE):
        frame = caller(1)
        if id(frame.f_code) not in quiet:
            tracer = mode().tracer
            if tracer is not None:
                tracer.touched(value, frame, name, writing=False)
        return get_slot(value)

    def set(value, x, set_slot=slot.__set__, mode=_mode.get, caller=sys._getframe, quiet=_QUIET_CODE):
        frame = caller(1)
        if id(frame.f_code) not in quiet:
            tracer = mode().tracer
            if tracer is not None:
                tracer.touched(value, frame, name, writing=True)
        set_slot(value, x)

    return property(get, set)


_SLOTS = {name: Value.__dict__[name] for name in ("data", "grad")}  # where the numbers really live


def _code_ids(*functions):
    """The ids of these functions' code objects and of the comprehensions inside them."""
    ids, codes = set(), [f.__code__ for f in functions]
    while codes:
        code = codes.pop()
        ids.add(id(code))
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return ids


_QUIET_CODE = _code_ids(  # by id: a set of code objects would hash each one on every read
    Value.__init__,  # a new Value
    engine._node,  # a new computed Value
    engine.apply,  # an op: the trace records it
    _Tracer.detached,  # a stop_gradient node: the trace records it
    engine._describe,  # error messages
    engine._check_finite,  # detect_anomaly's check; replay checks again
    Value.__repr__,
)
_WATCHED = {
    name: _watched(slot, name) for name, slot in _SLOTS.items()
}  # made after _QUIET_CODE, which they bind
_QUIET_MODULES = ("chainrule.draw",)  # drawings only show the numbers
_FREEZING_CODE = [  # code with a more helpful explanation than the generic one
    (
        _code_ids(
            engine.propagate,
            engine.backward,
            engine._child_gradients,
            engine._accumulate,
            engine._run_closure,
            engine._backward_step,
        ),
        "backward() (or autograd.grad without create_graph=True) inside a compiled function would "
        "run only while tracing: its gradients would be frozen into the trace and never computed "
        "on replay. Return the loss and call backward() on the compiled function's result",
    ),
    (
        _code_ids(ops._data),
        "with create_graph=True, the gradient of relu (or of x ** y with respect to y) chooses its "
        "formula by the sign of its input: the choice made while tracing would be frozen into the trace",
    ),
]
_watch_lock = threading.Lock()
_traces_running = 0  # in all threads; Value's slots are watched while this is above 0


@contextlib.contextmanager
def _watching_slots():
    """Make ``Value.data`` and ``Value.grad`` checking properties for the duration of a trace.

    Outside any trace they are the plain slots, so eager code pays nothing. The properties are
    shared by all threads while any of them traces, but they only check in a thread that is
    tracing (the tracer lives in a context variable); the last trace to end puts the slots back.
    """
    global _traces_running
    with _watch_lock:
        if _traces_running == 0:
            for name, watched in _WATCHED.items():
                setattr(Value, name, watched)
        _traces_running += 1
    try:
        yield
    finally:
        with _watch_lock:
            _traces_running -= 1
            if _traces_running == 0:
                for name, slot in _SLOTS.items():
                    setattr(Value, name, slot)


def trace(fn, structure, numbers_in, backend="numpy") -> Tape:
    """Run ``fn`` on leaf Values standing for the input numbers and record its tape."""
    inputs = [Value(x) for x in numbers_in]
    for leaf in inputs:
        leaf.__class__ = _TracedValue
    leaves = iter(inputs)
    args = [_unflatten_arguments(arg, leaves) for arg in structure]
    tracer = _Tracer()
    with _ModeSwitch(recording=True, tracer=tracer), _watching_slots():
        result = fn(*args)
    outputs = []
    result_structure = _flatten_result(result, outputs)
    return Tape(inputs, tracer.constants, outputs, result_structure, tracer.nodes, backend)


# ---------------------------------------------------------------------------------------------
# Rewriting: fold + chains into sums, and sums of products into dot products.


def _traced_order(outputs, created) -> tuple[list[Value], list[Value], set]:
    """The nodes the outputs need, each after its children, and the leaves they read.

    ``created`` lists the nodes computed while tracing in the order they were made, which is
    already an order with every node after its children; one sweep back from the outputs keeps
    those they need. Everything else they read (inputs, constants, Values made before the
    trace) is a leaf: their own graphs were built earlier, and replay reads their data afresh,
    as for a parameter. Leaves come in the order of their first use, so the tape is the same
    on every run.
    """
    needed = set(outputs)
    for node in reversed(created):
        if node in needed:
            needed.update(node.children)
    nodes = [node for node in created if node in needed]
    on_tape = set(nodes)
    reads = itertools.chain(itertools.chain.from_iterable(map(_CHILDREN, nodes)), outputs)
    leaves = [v for v in dict.fromkeys(reads) if v not in on_tape]
    return nodes, leaves, on_tape


_CHILDREN = operator.attrgetter("children")


def _rewrite(nodes, outputs, on_tape):
    """The tape's ops and children for each computed node; nodes folded into others are left out."""
    uses = collections.Counter(itertools.chain.from_iterable(map(_CHILDREN, nodes)))
    uses.update(outputs)

    def foldable(child, into):
        return uses[child] == 1 and child._rule in into and child in on_tape

    plan = {}  # node -> (op, children) for every node that stays on the tape
    folded = set()
    add, sum_, mul = ops.ADD, ops.SUM, ops.MUL
    for node in reversed(nodes):  # consumers first, so we know what they swallow
        if node in folded:
            continue
        rule, children = node._rule, node.children
        if rule is add or rule is sum_:
            children = _expand_sum(children, lambda c: foldable(c, (add, sum_)), folded)
            products, others = [], []
            for c in children:
                (products if foldable(c, (mul,)) else others).append(c)
            if len(products) >= 2 and len(others) == 1:
                folded.update(products)
                weights = [p.children[0] for p in products]
                xs = [p.children[1] for p in products]
                rule, children = ops.DOT, weights + xs + others
            elif len(children) != 2 or rule is sum_:
                rule = sum_
        plan[node] = (rule, children)
    return [(node, *plan[node]) for node in nodes if node in plan]


def _expand_sum(children, foldable, folded):
    """Replace each foldable child by its own children, depth first, without recursion."""
    expanded, stack = [], list(reversed(children))
    while stack:
        child = stack.pop()
        if foldable(child):
            folded.add(child)
            stack.extend(reversed(child.children))
        else:
            expanded.append(child)
    return expanded


# ---------------------------------------------------------------------------------------------
# The tape


class _Scatter:
    """Adds gradients into ``grad`` at fixed positions, summing the ones that share a position."""

    __slots__ = ("unique", "inverse")

    def __init__(self, np, positions):
        self.unique, self.inverse = np.unique(positions.ravel(), return_inverse=True)

    def add(self, np, grad, values):
        grad[self.unique] += np.bincount(self.inverse, values.ravel(), len(self.unique))


def _row_access(np, positions):
    """The cheapest way to read and add into these positions: a slice when they run in order."""
    first = int(positions[0])
    if np.array_equal(positions, np.arange(first, first + len(positions))):
        return slice(first, first + len(positions))
    if len(np.unique(positions)) == len(positions):
        return positions  # fancy indexing is safe for += when no position repeats
    return _Scatter(np, positions)


_FEW_INPUTS = 4  # groups with at most this many inputs read and write row by row


class _Group:
    """Nodes at the same depth with the same op and number of inputs: one numpy operation."""

    def __init__(self, np, rule, start, end, children):
        self.rule, self.start, self.end = rule, start, end
        self.children = children  # positions: one row per input, one column per node
        if len(children) <= _FEW_INPUTS:
            self.rows = [_row_access(np, row) for row in children]
        else:
            self.rows = None
            self.scatter = _Scatter(np, children)

    def forward(self, np, data, anomaly):
        """Compute the group's outputs into ``data``; return what backward needs."""
        if self.rows is None:
            X = data[self.children]
        else:
            X = np.empty(self.children.shape)
            for i, access in enumerate(self.rows):
                X[i] = data[access.unique[access.inverse] if isinstance(access, _Scatter) else access]
        out = self.rule.vforward(np, X)
        if not math.isfinite(out.sum()):  # a nan or inf somewhere: find it, then raise or accept
            _recheck_forward(self.rule, X, out, anomaly)
        data[self.start : self.end] = out
        return X

    def backward(self, np, data, grad, X, anomaly):
        """Add the gradients of the group's inputs into ``grad``."""
        g_out, out = grad[self.start : self.end], data[self.start : self.end]
        input_grads = self.rule.vbackward(np, g_out, out, X)
        if self.rows is None:
            input_grads = _as_matrix(np, input_grads, X.shape)
            if not math.isfinite(input_grads.sum()):
                _recheck_backward(self.rule, g_out, out, X, input_grads, anomaly)
            self.scatter.add(np, grad, input_grads)
            return
        total = 0.0
        for access, g in zip(self.rows, input_grads):
            total += g.sum() if type(g) is np.ndarray else g
            if isinstance(access, _Scatter):
                access.add(np, grad, np.broadcast_to(g, out.shape))
            else:
                grad[access] += g
        if not math.isfinite(total):
            _recheck_backward(self.rule, g_out, out, X, _as_matrix(np, input_grads, X.shape), anomaly)

    def backward_part(self, np, data, grad, needed, anomaly):
        """Backward for the nodes marked in ``needed`` only.

        The others lie on the way to another output of the same call, or behind a stop_gradient:
        eager backward would never visit them, so their (possibly nan) local gradients must not
        leak in.
        """
        X = data[self.children]
        g_out, out = grad[self.start : self.end], data[self.start : self.end]
        input_grads = np.where(needed, _as_matrix(np, self.rule.vbackward(np, g_out, out, X), X.shape), 0.0)
        if not math.isfinite(input_grads.sum()):
            _recheck_backward(
                self.rule, g_out[needed], out[needed], X[:, needed], input_grads[:, needed], anomaly
            )
        if getattr(self, "full_scatter", None) is None:
            self.full_scatter = _Scatter(np, self.children)
        self.full_scatter.add(np, grad, input_grads)


def _as_matrix(np, rows, shape):
    """Input gradients given as rows (arrays or numbers) as one (inputs, nodes) matrix."""
    if isinstance(rows, np.ndarray) and rows.shape == shape:
        return rows
    matrix = np.empty(shape)
    for row, g in zip(matrix, rows):
        row[...] = g
    return matrix


def _unique_rows(np, rows):
    """The distinct rows of ``rows`` in the order they first appear, and each row's index among them."""
    unique, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # sorted -> first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], rank[inverse.ravel()]


class _MatmulGroup(_Group):
    """Dot nodes that pair every one of U weight vectors with every one of V input vectors.

    That is a layer applied to a batch: one matrix product instead of a gather of all the
    n*U*V products. The nodes are ordered input-vector-major, so output j is pair (j // U, j % U).
    """

    def __init__(self, np, rule, start, end, children, weights, inputs):
        super().__init__(np, rule, start, end, children)
        n = len(children) // 2
        self.weights, self.inputs, self.bias = weights, inputs, children[2 * n]  # (n, U), (n, V), (k,)
        self.scatter = _Scatter(np, np.concatenate([weights.ravel(), inputs.ravel(), self.bias]))

    @staticmethod
    def try_make(np, rule, start, members, position):
        """A _MatmulGroup for these dot nodes if they form a full weights x inputs product, else None."""
        n = len(members[0][2]) // 2
        at = position.__getitem__
        children = np.array([list(map(at, ch)) for _, _, ch in members], dtype=np.intp)  # a row a node
        w_unique, w_of = _unique_rows(np, children[:, :n])
        x_unique, x_of = _unique_rows(np, children[:, n : 2 * n])
        U, V = len(w_unique), len(x_unique)
        if U * V != len(members):
            return None
        slot = x_of * U + w_of  # where each node goes: input vector major
        if len(np.unique(slot)) != len(members):  # some (weights, inputs) pair twice
            return None
        ordered = np.argsort(slot)
        for i, k in enumerate(ordered.tolist()):
            position[members[k][0]] = start + i
        group = _MatmulGroup(
            np, rule, start, start + len(members), children[ordered].T, w_unique.T, x_unique.T
        )
        return group, [members[k] for k in ordered.tolist()]

    def forward(self, np, data, anomaly):
        W, X = data[self.weights], data[self.inputs]
        out = (X.T @ W).ravel() + data[self.bias]
        if not math.isfinite(out.sum()):
            _recheck_forward(self.rule, data[self.children], out, anomaly)
        data[self.start : self.end] = out
        return W, X

    def backward(self, np, data, grad, saved, anomaly):
        W, X = saved
        g = grad[self.start : self.end]
        G = g.reshape(X.shape[1], W.shape[1])  # (V, U)
        input_grads = np.concatenate([(X @ G).ravel(), (W @ G.T).ravel(), g])
        if not math.isfinite(input_grads.sum()):
            X_all = data[self.children]
            _recheck_backward(
                self.rule,
                g,
                data[self.start : self.end],
                X_all,
                self.rule.vbackward(np, g, data[self.start : self.end], X_all),
                anomaly,
            )
        self.scatter.add(np, grad, input_grads)


class Tape:
    """A traced graph, flattened for replay."""

    def __init__(self, inputs, constants, outputs, result_structure, created, backend="numpy"):
        import numpy as np

        self.np = np
        self.result_structure = result_structure
        nodes, leaves, on_tape = _traced_order(outputs, created)
        position = {leaf: i for i, leaf in enumerate(inputs)}
        leaves = [v for v in leaves if v not in position]
        constant_data = [v.data for v in leaves if v in constants]
        self.externals = [v for v in leaves if v not in constants]
        for v in [v for v in leaves if v in constants] + self.externals:
            position[v] = len(position)
        self.n_inputs, self.n_leaves = len(inputs), len(position)
        self.n_fixed = self.n_inputs + len(constant_data)  # externals live in data[n_fixed:n_leaves]
        self.constant_data = np.array(constant_data, dtype=np.float64)

        depth = dict.fromkeys(position, 0)
        groups = {}
        for node, rule, children in _rewrite(nodes, outputs, on_tape):
            d = depth[node] = 1 + max(map(depth.__getitem__, children))
            key = (d, rule.name, len(children))
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append((node, rule, children))
        self.groups = []
        for key in sorted(groups, key=lambda key: key[0]):  # stable: ties keep first-seen order
            self.groups.append(self._make_group(np, groups[key], position))
        self.size = len(position)
        self.output_positions = [position[v] for v in outputs]
        self.external_tuple = tuple(self.externals)
        self.externals_are_leaves = not any(v.children for v in self.externals)
        self.stops_gradients = any(group.rule is ops.STOP_GRADIENT for group in self.groups)
        self.cones = {}  # output position -> which nodes its gradient reaches
        self.native = self._native(backend)

    def _native(self, backend):
        """The tape as a C program (native.py), or None to replay with numpy."""
        if backend == "numpy":
            return None
        try:
            return native.NativeTape(self.np, self.groups, self.size, self.n_leaves)
        except native.Unavailable as reason:
            if backend == "c":
                warnings.warn(
                    f"chainrule.compile: {reason}; using the numpy backend", RuntimeWarning, stacklevel=5
                )
            return None

    @staticmethod
    def _make_group(np, members, position):
        start, rule = len(position), members[0][1]
        if rule is ops.DOT:
            made = _MatmulGroup.try_make(np, rule, start, members, position)
            if made is not None:
                return made[0]
        for node, _, _ in members:
            position[node] = len(position)
        at = position.__getitem__
        children = np.array([list(map(at, ch)) for _, _, ch in members], dtype=np.intp).T
        return _Group(np, rule, start, len(position), children)

    def run(self, flat):
        """Replay forward on new input numbers and return the results as Values."""
        np = self.np
        data = np.empty(self.size)
        data[: self.n_inputs] = flat
        data[self.n_inputs : self.n_fixed] = self.constant_data
        data[self.n_fixed : self.n_leaves] = list(map(engine._read_data, self.externals))
        anomaly = _mode.get().anomaly
        if self.native is not None and not anomaly and self.native.forward(data):
            saved = None  # the C program computed it all; nothing unusual happened
        else:
            saved = self._forward(data, anomaly)
        replay = _Replay(self, data, saved)
        results = iter([replay.result(i, p) for i, p in enumerate(self.output_positions)])
        return _unflatten_result(self.result_structure, results)

    def _forward(self, data, anomaly):
        """The numpy replay: every group in order; returns what each group's backward needs."""
        with self.np.errstate(all="ignore"):
            return [group.forward(self.np, data, anomaly) for group in self.groups]

    def backward(self, data, saved, position, g):
        """The gradient of node ``position`` (seeded with g) with respect to every external."""
        np = self.np
        grad = np.zeros(self.size)
        grad[position] = g
        needed = self._needed_by(position)
        anomaly = _mode.get().anomaly
        if saved is None:  # forward ran in C
            if not anomaly and self.native.backward(data, grad, needed):
                return grad[self.n_fixed : self.n_leaves].tolist()
            # Something unusual: redo it with numpy, which raises eager's error or passes the
            # nan/inf on. Its forward needs its own copy, so the call's numbers stay as they were.
            data = data.copy()
            saved = self._forward(data, anomaly)
            grad = np.zeros(self.size)
            grad[position] = g
        with np.errstate(all="ignore"):
            for group, group_saved in zip(reversed(self.groups), reversed(saved)):
                part = None if needed is None else needed[group.start : group.end]
                if part is None or part.all():
                    group.backward(np, data, grad, group_saved, anomaly)
                elif part.any():
                    group.backward_part(np, data, grad, part, anomaly)
        return grad[self.n_fixed : self.n_leaves].tolist()

    def _needed_by(self, position):
        """Which nodes the gradient of ``position`` reaches, or None when that is every node.

        It is every node for a single output without stop_gradients. Otherwise eager backward
        would not visit the others (another output's graph, or what lies behind a detach), so
        their local gradients, possibly nan, must not leak in.
        """
        if len(set(self.output_positions)) == 1 and not self.stops_gradients:
            return None
        if position not in self.cones:
            needed = self.np.zeros(self.size, dtype=bool)
            needed[position] = True
            for group in reversed(self.groups):
                part = needed[group.start : group.end]
                if part.any() and group.rule is not ops.STOP_GRADIENT:
                    needed[group.children[:, part]] = True
            self.cones[position] = needed
        return self.cones[position]


class _Replay:
    """The numbers of one compiled call, kept for its backward pass."""

    __slots__ = ("tape", "data", "saved")

    def __init__(self, tape, data, saved):
        self.tape, self.data, self.saved = tape, data, saved

    def result(self, index, position):
        value = float(self.data[position])
        if not _mode.get().recording:
            return _make(value, None, ())
        rule = ops.Op("compiled", None, functools.partial(_compiled_backward, self, position))
        result = _make(value, rule, self.tape.external_tuple)
        result.__class__ = _CompiledValue
        return result


def _compiled_backward(replay, position, g, out, *externals):
    """The backward rule of a compiled result: one pass of the tape, seeded at its output."""
    if isinstance(g, Value):
        raise NotImplementedError("backward(create_graph=True) through a compiled function")
    return replay.tape.backward(replay.data, replay.saved, position, g)


class _CompiledValue(Value):
    """The result of a compiled call: a Value whose op runs the tape backward."""

    __slots__ = ()

    def backward(self, gradient=1.0, create_graph: bool = False):
        if create_graph:
            raise NotImplementedError("backward(create_graph=True) through a compiled function")
        replay, _ = self._rule.backward.args
        mode = _mode.get()
        if isinstance(gradient, Value) or mode.anomaly or mode.tracer or not replay.tape.externals_are_leaves:
            return super().backward(gradient)  # while tracing, the engine's backward refuses
        # The graph above the tape is just this node and the parameters (leaves), so do what
        # the engine's backward would do without its general walk: one tape pass, then add,
        # all or nothing as there (the totals first, then one store).
        seed = engine._check_gradient(gradient, False)
        grads = self._rule.backward(seed, self.data)
        nodes = (self, *self.children)
        with engine._one_pass_at_a_time:  # reading the grads and storing the totals is one step
            now = list(map(engine._GRAD, nodes))
            if set(map(type, now)) <= engine._NUMBER_TYPES:  # the usual case: add them in one go
                totals = list(map(operator.add, now, (seed, *grads)))
            else:
                totals = [engine._accumulate(node, g, False) for node, g in zip(nodes, (seed, *grads))]
            engine._store_grads(nodes, totals)


def _recheck_forward(rule, X, out, anomaly):
    """Nodes that came out nan/inf: run the scalar rule there, which raises eager's domain error."""
    np = sys.modules["numpy"]
    for node in np.flatnonzero(~np.isfinite(out)):
        args = X[:, node].tolist()
        try:
            rule.forward(*args)
        except (ValueError, ZeroDivisionError) as error:
            raise op_error(rule, [Value(x) for x in args], error) from None
        if anomaly and rule is not ops.STOP_GRADIENT:  # a detach passes nan on, as eager's does
            raise AnomalyError(
                f"detect_anomaly: {rule.name} produced {out[node]!r} from "
                f"{', '.join(map(repr, args))} (compiled)"
            )


def _recheck_backward(rule, g_out, out, X, input_grads, anomaly):
    np = sys.modules["numpy"]
    for node in np.flatnonzero(~np.isfinite(input_grads).all(axis=0)):
        args = X[:, node].tolist()
        try:
            rule.backward(float(g_out[node]), float(out[node]), *args)
        except (ValueError, ZeroDivisionError) as error:
            raise op_error(rule, [Value(x) for x in args], error, stage="backward of ") from None
        if anomaly:
            raise AnomalyError(
                f"detect_anomaly: backward of {rule.name} produced a non-finite gradient for "
                f"inputs {', '.join(map(repr, args))} (compiled)"
            )
