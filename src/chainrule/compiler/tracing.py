"""Tracing: run the function once on leaf Values, record every node, and watch what reads numbers."""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import types
import warnings

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
    """Shown, by the engine, every node, number-made constant, ``detach()`` and ``no_grad`` op
    while tracing, and (through ``_watched``) every read and write of a Value's data and grad."""

    def __init__(self, inputs, backend="numpy"):
        self.inputs = set(inputs)  # the leaves standing for the arguments (and map_rows' results)
        self.constants = set()
        self.nodes = []  # every node computed while tracing, in the order made
        self.record = self.nodes.append
        self._traced, self._traced_up_to = set(), 0  # the nodes as a set, made when first asked
        self.backend = backend
        self.blocks = []  # the map_rows calls traced on one row (mapping.py)
        self.read_row_number = False  # whether fn read .data of something it traced
        self.bool_inputs = set()  # the ids of the inputs given as bools (see arguments.bool_leaves)

    def map_rows(self, fn, rows):
        """``chainrule.map_rows(fn, *rows)``: ``fn`` traced on one row, its tape copied for every
        row (see mapping.py)."""
        return mapping.trace_rows(self, fn, rows, _RowTracer)

    def constant(self, value):
        self.constants.add(value)

    def detached(self, value):
        """``value.detach()``: a stop_gradient node, so that replay recomputes it from new numbers."""
        stopped = _make(value.data, ops.STOP_GRADIENT, (value,))
        stopped.label = value.label
        self.record(stopped)
        return stopped

    def unrecorded(self, node):
        """An op under ``no_grad``: recorded all the same, behind a stop_gradient."""
        self.record(node)
        return self.detached(node)

    @staticmethod
    def backward_pass():
        """A first-order backward pass started while tracing (the engine asks before it walks:
        its loops in C read the numbers without going through the watch)."""
        raise NotImplementedError(f"chainrule.compile: {_BACKWARD_FROZEN}")

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

    def touched(self, value, frame, slot, writing):
        """Code running in ``frame`` read or wrote ``value.data`` or ``value.grad`` (``slot``):
        warn, or refuse, since what it does happens once, while tracing, and not on replay."""
        if value in self.constants:
            return  # a number written in fn: a constant anyway
        stacklevel = 3  # the user's line: touched <- the property <- the user
        if frame.f_code is _FLOAT_CODE:  # float(v) is the caller's read of v.data
            frame, stacklevel = frame.f_back, 4
        module = frame.f_globals.get("__name__", "")
        traced = self.made(value)
        self.read_row_number = self.read_row_number or traced
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
                stacklevel=stacklevel,
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


class _RowTracer(_Tracer):
    """The tracer of one row of a ``map_rows`` call (mapping.py), inside the trace ``outer``."""

    def __init__(self, inputs, outer):
        super().__init__(inputs, outer.backend)
        self.constants = set(outer.constants)  # read freely, as in the outer trace

    def map_rows(self, fn, rows):
        return [fn(*row) for row in zip(*rows)]  # a map_rows inside fn: a plain loop


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


def _touched(value, frame, name, writing):
    """What chainrule/_graph.c's watched slots call (for code not on the quiet list): the same
    check as ``_watched``'s, in the same place on the stack (touched <- here <- the reader)."""
    tracer = _mode.get().tracer
    if tracer is not None:
        tracer.touched(value, frame, name, writing)


# Where the numbers really live: Value's slots (a Parameter's too).
_SLOTS = {(Value, name): Value.__dict__[name] for name in ("data", "grad")}


def _code_objects(*functions):
    """These functions' code objects and those of the comprehensions inside them. (A function
    built in C, engine._node with chainrule/_graph.c, has none: it fills the slots directly.)"""
    found, codes = [], [f.__code__ for f in functions if hasattr(f, "__code__")]
    while codes:
        code = codes.pop()
        found.append(code)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return tuple(found)


def _code_ids(*functions):
    return {id(code) for code in _code_objects(*functions)}


# The fast ops: every function of engine.py that builds its node with _node (Value.__add__,
# ..., dot, sum_values). They read their inputs' data as apply does.
_FAST_OPS = [
    f
    for f in [*vars(Value).values(), *vars(engine).values()]
    if isinstance(f, types.FunctionType) and "_node" in f.__code__.co_names
]
_QUIET = _code_objects(
    Value.__init__,  # a new Value
    engine._node,  # a new computed Value
    engine.apply,  # an op: the trace records it
    *_FAST_OPS,  # the same, on the fast path
    ops._add_up_left_to_right,  # their sums (Python 3.12 and later), reading what they read
    _Tracer.detached,  # a stop_gradient node: the trace records it
    engine._describe,  # error messages
    engine._check_finite,  # detect_anomaly's check; replay checks again
    Value.__repr__,
)
_QUIET_CODE = set(map(id, _QUIET))  # by id: a set of code objects would hash each one on every read
if engine._graph is not None:  # the same check in C, several times cheaper on every read
    _WATCHED = {at: engine._graph.watched(slot, at[1], _QUIET, _touched) for at, slot in _SLOTS.items()}
else:
    _WATCHED = {at: _watched(slot, at[1]) for at, slot in _SLOTS.items()}  # made after _QUIET_CODE
_FLOAT_CODE = Value.__float__.__code__
_QUIET_MODULES = ("chainrule.draw",)  # drawings only show the numbers
_BACKWARD_FROZEN = (
    "backward() (or autograd.grad without create_graph=True) inside a compiled function would "
    "run only while tracing: its gradients would be frozen into the trace and never computed "
    "on replay. Return the loss and call backward() on the compiled function's result"
)
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
        _BACKWARD_FROZEN,
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
    """Make ``.data`` and ``.grad`` of every Value checking properties during a trace.

    Outside any trace they are the plain slots, so eager code pays nothing. The properties are
    shared by all threads while any of them traces, but they only check in a thread that is
    tracing (the tracer lives in a context variable); the last trace to end puts the slots back.
    """
    global _traces_running
    with _watch_lock:
        if _traces_running == 0:
            for (cls, name), watched in _WATCHED.items():
                setattr(cls, name, watched)
            _watch_other_threads(set())
        _traces_running += 1
        made_in_other_threads = engine._made_in_other_threads
    try:
        yield made_in_other_threads
    finally:
        with _watch_lock:
            _traces_running -= 1
            if _traces_running == 0:
                for (cls, name), slot in _SLOTS.items():
                    setattr(cls, name, slot)
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


def trace(fn, structure, numbers_in, backend="numpy") -> Tape:
    """Run ``fn`` on leaf Values standing for the input numbers and record its tape."""
    # New leaves, as Value(x) makes them, but in one C loop where the engine's C part is built.
    none, empty = itertools.repeat(None), itertools.repeat(())
    inputs = list(map(engine._node, numbers_in, none, empty))
    leaves = iter(inputs)
    args = [_unflatten_arguments(arg, leaves) for arg in structure]
    tracer = _Tracer(inputs, backend)
    tracer.bool_inputs = {id(v) for v, is_bool in zip(inputs, bool_leaves(structure)) if is_bool}
    with engine._tracing(tracer), _watching_slots() as made_in_other_threads:
        result = fn(*args)
    outputs = []
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
