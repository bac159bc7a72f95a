"""Tracing: run the function once on leaf Values, record every node, and watch what reads numbers."""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .. import engine, ops
from ..engine import Value, _make, _mode
from . import mapping
from .arguments import _flatten_result, _unflatten_arguments, bool_leaves
from .rewriting import program
from .tape import Tape


class TraceWarning(UserWarning):
    """``fn`` read a number while being traced, so what it did with it is frozen into the trace."""


# ---------------------------------------------------------------------------------------------
# Tracing


class _Tracer:
    """The engine's hook (see ``engine._hooked``) while ``fn`` is traced: shown every node,
    number-made constant, ``detach()``, ``no_grad`` op, ``take`` and ``map_rows``, asked before
    a backward pass or library code that reads numbers, and (through the watching attributes
    below) shown every read and write of a Value's ``.data`` and ``.grad`` by the traced code."""

    def __init__(self, inputs, backend="numpy"):
        self.inputs = set(inputs)  # the leaves standing for the arguments (and map_rows' results)
        self.constants = set()
        self.nodes: list[Value] = []  # every node computed while tracing, in the order made
        self.record = self.nodes.append
        self._traced, self._traced_up_to = set(), 0  # the nodes as a set, made when first asked
        self.backend = backend
        self.blocks = []  # the map_rows calls traced on one row (mapping.py)
        self.read_row_number = False  # whether fn read .data of something it traced
        self.bool_inputs = set()  # the ids of the inputs given as bools (see arguments.bool_leaves)
        self._gradient_passes = 0  # create_graph passes running now (see backward_pass)

    def map_rows(self, fn, rows):
        """``chainrule.map_rows(fn, *rows)``: ``fn`` traced on one row, its tape copied for every
        row (see mapping.py)."""
        return mapping.trace_rows(self, fn, rows, _RowTracer)

    def constant(self, value):
        self.constants.add(value)

    def detached(self, value):
        """``value.detach()``: a stop_gradient node, so that replay recomputes it from new numbers."""
        stopped = _make(engine._read_data(value), ops.STOP_GRADIENT, (value,))
        stopped.label = value.label
        self.record(stopped)
        return stopped

    def unrecorded(self, node):
        """An op under ``no_grad``: recorded all the same, behind a stop_gradient, so that replay
        recomputes it from new numbers instead of freezing it."""
        self.record(node)
        return self.detached(node)

    @staticmethod
    def hand_made(children):
        raise NotImplementedError(
            "chainrule.compile cannot replay a node built by hand (Value(data, children, ...)): its "
            "number was computed outside chainrule's ops; use the ops (tanh(), exp(), ...) inside "
            "a compiled function"
        )

    @contextlib.contextmanager
    def backward_pass(self, create_graph):
        """A backward pass started while tracing. A first-order one would give numbers frozen
        into the trace: refused. One with create_graph builds the gradients' graph from ops, which
        replay recomputes; but a rule that reads a number in it (relu's chooses its formula by
        the sign of its input) would freeze that choice, so a read inside it is refused."""
        if not create_graph:
            raise NotImplementedError(f"chainrule.compile: {_BACKWARD_FROZEN}")
        self._gradient_passes += 1
        try:
            yield
        finally:
            self._gradient_passes -= 1

    @staticmethod
    def reading_numbers(what):
        """Library code that reads or writes numbers (``backward()``, an optimizer's step,
        ``state_dict``) was called by the traced function: refused."""
        if what == "backward()":
            raise NotImplementedError(f"chainrule.compile: {_BACKWARD_FROZEN}")
        raise NotImplementedError(
            f"chainrule.compile: {what} reads or writes the numbers of Values; inside the traced "
            "function that happens once, while tracing, and is frozen into the trace, not repeated "
            "on replay. Call it outside the compiled function"
        )

    def made(self, value):
        """Whether ``value`` is an input or a node of this trace (for messages only)."""
        if value in self.inputs:
            return True
        self._traced.update(self.nodes[self._traced_up_to :])
        self._traced_up_to = len(self.nodes)
        return value in self._traced

    def take(self, rows, index):
        """``chainrule.take(rows, index)`` with a Value index: one ``take`` node per picked Value,
        whose inputs are the index and the candidates, so that replay picks by the new index."""
        if id(index) in self.bool_inputs:  # given as a bool: refused as eager take refuses it
            ops.take_index(bool(engine._read_data(index)), len(rows))
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

    def touched(self, value, slot, writing):
        """The traced code read or wrote ``value.data`` or ``value.grad`` (``slot``), or called
        ``float(value)``. The engine's own code never does (it reads the slots directly), so this
        is the code being traced: what it does with the number happens once, while tracing."""
        if value in self.constants:
            return  # a number written in fn: a constant anyway
        if self._gradient_passes:
            raise NotImplementedError(
                "chainrule.compile: with create_graph=True, the gradient of relu (or of x ** y with "
                "respect to y, or of a division by zero) chooses its formula by the sign or value "
                "of its input: the choice made while tracing would be frozen into the trace"
            )
        traced = self.made(value)
        self.read_row_number = self.read_row_number or traced
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
            stacklevel=3,  # the traced code's line: touched <- the attribute <- that line
        )


class _RowTracer(_Tracer):
    """The tracer of one row of a ``map_rows`` call (mapping.py), inside the trace ``outer``."""

    def __init__(self, inputs, outer):
        super().__init__(inputs, outer.backend)
        self.constants = set(outer.constants)  # read freely, as in the outer trace

    def map_rows(self, fn, rows):
        return [fn(*row) for row in zip(*rows)]  # a map_rows inside fn: a plain loop


# ---------------------------------------------------------------------------------------------
# The watch over .data and .grad. While any thread traces, Value's two number slots are
# replaced by these properties (and float(v) by a reading twin); outside traces they are the
# plain slots, so eager code pays nothing. In a thread that is not tracing they only read and
# write. The engine never reads or writes numbers through them (it uses the slots' own names,
# _data and _grad), so in the tracing thread every read they see is the traced code's.


def _watched(slot, name):
    """A property over one of Value's slots that shows each read and write to the thread's tracer."""

    def get(value, get_slot=slot.__get__, mode=_mode.get):
        hook = mode().hook
        if hook is not None:
            hook.touched(value, name, writing=False)
        return get_slot(value)

    def set(value, x, set_slot=slot.__set__, mode=_mode.get):
        hook = mode().hook
        if hook is not None:
            hook.touched(value, name, writing=True)
        set_slot(value, x)

    return property(get, set, doc=f"The Value's {name} (watched while chainrule.compile traces).")


def _watched_float(value_float):
    def __float__(value, mode=_mode.get):
        hook = mode().hook
        if hook is not None:
            hook.touched(value, "data", writing=False)
        return value_float(value)

    return __float__


# What Value has outside traces, and what it has during them.
_PLAIN = {name: Value.__dict__[name] for name in ("data", "grad", "__float__")}
_WATCHED = {
    "data": _watched(_PLAIN["data"], "data"),
    "grad": _watched(_PLAIN["grad"], "grad"),
    "__float__": _watched_float(engine._read_data),
}
_BACKWARD_FROZEN = (
    "backward() (or autograd.grad without create_graph=True) inside a compiled function would "
    "run only while tracing: its gradients would be frozen into the trace and never computed "
    "on replay. Return the loss and call backward() on the compiled function's result"
)
_watch_lock = threading.Lock()
_traces_running = 0  # in all threads; Value's slots are watched while this is above 0


@contextlib.contextmanager
def _watching_slots():
    """Make ``.data`` and ``.grad`` of every Value checking properties during a trace.

    Outside any trace they are the plain slots, so eager code pays nothing. The properties are
    shared by all threads while any of them traces, but they only check in a thread that is
    tracing (the tracer lives in a context variable); the last trace to end puts the slots back.
    """
    global _traces_running
    with _watch_lock:
        if _traces_running == 0:
            for name, watched in _WATCHED.items():
                setattr(Value, name, watched)
            _watch_other_threads(set())
        _traces_running += 1
        made_in_other_threads = engine._made_in_other_threads
    try:
        yield made_in_other_threads
    finally:
        with _watch_lock:
            _traces_running -= 1
            if _traces_running == 0:
                for name, plain in _PLAIN.items():
                    setattr(Value, name, plain)
                _watch_other_threads(None)


def _watch_other_threads(ids):
    """Have the engine note, in the set ``ids``, the id of every Value made in a thread that is
    not tracing (None: stop). A trace records only what its own thread makes."""
    engine._made_in_other_threads = ids
    if engine._graph is not None:
        engine._graph.watch_other_threads(ids)


def _refuse_other_threads(tape, made_in_other_threads):
    """Raise if the tape reads a Value that another thread made while ``fn`` was traced.

    Such a Value (``pool.map(lambda x: (x * w).tanh(), xs)`` inside fn, say) was computed
    outside the trace, so the tape could only read it as a fixed number: every call would
    return the first call's answer. A Value made before the trace (a parameter, or a number
    computed from one) was alive all along, so its id cannot be one of those noted.
    """
    if any(id(v) in made_in_other_threads for v in tape.externals):
        raise NotImplementedError(
            "chainrule.compile: the traced function used a Value made in another thread while it "
            "was traced (a thread pool inside the function, say). A trace records only the ops of "
            "its own thread, so that value would be frozen at the first call's number; build the "
            "graph in the thread that calls the compiled function"
        )


def trace(
    fn: Callable[..., Any], structure: tuple[Any, ...], numbers_in: list[float], backend: Any = "numpy"
) -> Tape:
    """Run ``fn`` on leaf Values standing for the input numbers and record its tape."""
    # New leaves, as Value(x) makes them, but in one C loop where the engine's C part is built.
    none, empty = itertools.repeat(None), itertools.repeat(())
    inputs = list(map(engine._node, numbers_in, none, empty))
    leaves = iter(inputs)
    args = [_unflatten_arguments(arg, leaves) for arg in structure]
    tracer = _Tracer(inputs, backend)
    tracer.bool_inputs = {id(v) for v, is_bool in zip(inputs, bool_leaves(structure)) if is_bool}
    with engine._hooked(tracer), _watching_slots() as made_in_other_threads:
        result = fn(*args)
    outputs: list[Value] = []
    result_structure = _flatten_result(result, outputs)
    if not tracer.blocks:
        tape = Tape(program(inputs, tracer.constants, outputs, tracer.nodes), result_structure, backend)
    else:
        import numpy

        traced, every_node_used = mapping.compose(
            numpy, inputs, tracer.constants, outputs, tracer.nodes, tracer.blocks
        )
        tape = Tape(traced, result_structure, backend)
        tape.every_node_needed = tape.every_node_needed and every_node_used
    _refuse_other_threads(tape, made_in_other_threads)
    return tape
