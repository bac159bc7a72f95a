"""The tape: a Program (ir.py) with the backend that runs it, and the results of a call.

``Tape.run`` reads the parameters' numbers, has the backend compute every node, and returns
the results as Values whose op runs the tape backward. Whatever the backend, a call it leaves
to the reference (its forward or backward returned False), or one under ``detect_anomaly``,
is redone by the numpy backend (backends/numpy.py), which raises eager's errors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .. import engine, ops
from ..engine import Value, _make, _mode
from . import backends, devices
from .arguments import _unflatten_result
from .backends.numpy import _DOMAIN_ERRORS, NumpyProgram
from .ir import Program


class Tape:
    """A traced graph, flattened for replay: its Program, and the backend that runs it."""

    def __init__(self, program: Program, result_structure: Any, backend: Any = "numpy") -> None:
        import numpy as np

        self.np = np
        self.result_structure = result_structure
        self.externals = list(program.externals)
        self.n_inputs = program.n_inputs
        self.n_fixed = program.n_fixed  # externals live in data[n_fixed:n_leaves]
        self.n_leaves = program.n_leaves
        self.constant_data = np.array([v.data for v in program.constants], dtype=np.float64)
        self.size = program.size

        placed, output_positions = program.layout, program.outputs
        self.external_tuple = tuple(self.externals)
        self.externals_are_leaves = not any(v.children for v in self.externals)
        self.stops_gradients = any(rule is ops.STOP_GRADIENT for rule, *_ in placed)
        # Eager take is plain indexing: its backward visits the picked row only, not the index
        # nor the other rows. Where those are computed nodes, a gradient does not reach them
        # all; where rows are, which ones it reaches depends on each call (see _needed_by).
        index_is_node, self.takes_pick_nodes = _takes_of_nodes(np, placed, self.n_leaves)
        self.every_node_needed = (
            len(set(output_positions)) == 1
            and not self.stops_gradients
            and not (index_is_node or self.takes_pick_nodes)
            and (not len(program.checked) or _every_node_used(np, placed, self.n_leaves, output_positions))
        )
        self.cones: dict[int, Any] = {}  # output position -> which nodes its gradient reaches
        # The backend may put nodes in another order (a layer's): from here on, its positions.
        self.backend = backends.select(backend, program)
        self.output_positions = list(self.backend.outputs)
        self.checked = self.backend.checked  # nodes that can raise, in eager's order
        # Whether a call can run as one C call (see _replay_into).
        self.in_one_call = getattr(self.backend, "in_one_call", False)
        # Whether the backend can read the parameters where chainrule.on_device keeps them.
        self.reads_devices = getattr(self.backend, "reads_devices", False)
        if self.reads_devices:  # (in the order of its function's pieces)
            self.device_externals = self.backend.device_order(self.external_tuple)  # type: ignore[attr-defined]
        self.placed_cache: dict = {}  # (see devices.placed)

    @property
    def program(self) -> Program:
        """The Program this tape runs, as its backend placed it (``print`` shows it). Its
        constants are their numbers: the tape keeps no Value that only the trace made."""
        leaves = self.n_inputs, tuple(self.constant_data.tolist()), self.external_tuple
        outputs = tuple(self.output_positions)
        return Program(*leaves, self.backend.layout(), outputs, self.checked)

    @property
    def fast(self):
        """The backend that runs the tape, or None when it is the numpy backend itself."""
        return None if isinstance(self.backend, NumpyProgram) else self.backend

    @property
    def reference(self) -> NumpyProgram:
        """The numpy backend over the tape's positions: what redoes the calls left to it."""
        return self.backend.reference

    @property
    def groups(self):
        """The numpy backend's groups (made when first needed for a tape on the table program)."""
        return self.reference.groups

    def run(self, flat):
        """Replay forward on new input numbers and return the results as Values."""
        replay = _Replay(self, *self.replay(flat))
        if self.result_structure is None:  # one number out
            return replay.result(0, self.output_positions[0])
        results = iter([replay.result(i, p) for i, p in enumerate(self.output_positions)])
        return _unflatten_result(self.result_structure, results)

    def replay(self, flat):
        """Every node's number, for these input numbers; what backward needs (see backward);
        and where the parameters were, when on a device (see devices.py), else None."""
        data = self.np.empty(self.size)
        try:
            if self.reads_devices and not _mode.get().anomaly:
                placed = (
                    devices.placed(self.device_externals, self.placed_cache, self.backend.bounds)  # type: ignore[attr-defined]
                    if self.externals
                    else None
                )
                if placed is not None:
                    return (*self._replay_on_device(data, flat, placed), placed)
            return (*self._replay_into(data, flat), None)
        except _DOMAIN_ERRORS:
            # Replay runs the nodes by depth, eager in the order made: of the nodes that fail,
            # report the one eager meets first (the leaves are in data by now).
            first = self.reference.first_error(data, self.size)
            if first is None:
                raise
            raise first from None

    def _replay_into(self, data, flat):
        anomaly = _mode.get().anomaly
        # The parameters' numbers, read afresh (in one C loop), into an array of this call's own:
        # two threads may call the same compiled function at once.
        external_data = self.np.empty(len(self.externals))
        if not (engine._graph and engine._graph.read_data(self.external_tuple, external_data)):
            external_data[:] = list(map(engine._read_data, self.externals))  # (the same, in Python)
        if self.in_one_call and not anomaly:
            # On the table program pip built: the inputs, the constants and the parameters'
            # numbers copied into data, and every node computed, in one call.
            if self.backend.replay(data, (flat, self.constant_data, external_data)):  # type: ignore[attr-defined]
                return data, None
            return data, self.reference.run_forward(data, anomaly)  # (the leaves are in place)
        data[: self.n_inputs] = flat
        data[self.n_inputs : self.n_fixed] = self.constant_data
        data[self.n_fixed : self.n_leaves] = external_data
        fast = self.fast
        if fast is not None and not anomaly and fast.forward(data):
            saved = None  # the fast replay computed it all; nothing unusual happened
        else:
            saved = self.reference.run_forward(data, anomaly)
        return data, saved

    def _replay_on_device(self, data, flat, placed):
        """_replay_into, with the parameters read where they are, on a device."""
        data[: self.n_inputs] = flat
        data[self.n_inputs : self.n_fixed] = self.constant_data
        if self.backend.forward(data, placed, (flat, self.constant_data)):  # type: ignore[call-arg]  # (the jax backend's)
            return data, None  # (data lacks the parameters' numbers: see _complete)
        data[self.n_fixed : self.n_leaves] = self.backend.joined([placed.on_the_host()])  # type: ignore[attr-defined]
        return data, self.reference.run_forward(data, False)

    def _complete(self, data):
        """The parameters' numbers into ``data``, if its call read them on a device."""
        if self.reads_devices:
            numbers = self.backend.externals_of(data)  # type: ignore[attr-defined]
            if numbers is not None:
                data[self.n_fixed : self.n_leaves] = numbers

    def backward(self, data, saved, position, g):
        """The gradient of node ``position`` (seeded with g) with respect to every external,
        as an array (a view into this pass's gradients)."""
        np = self.np
        if saved is None:
            self._complete(data)
        grad = np.zeros(self.size)
        grad[position] = g
        needed = self._needed_by(position, data)
        anomaly = _mode.get().anomaly
        if saved is None:  # forward ran in the fast replay
            if not anomaly and self.backend.backward(data, grad, needed):
                return grad[self.n_fixed : self.n_leaves]
            # Something unusual: redo it with numpy, which raises eager's error or passes the
            # nan/inf on. Its forward needs its own copy, so the call's numbers stay as they were.
            data = data.copy()
            saved = self.reference.run_forward(data, anomaly)
            grad = np.zeros(self.size)
            grad[position] = g
        try:
            self.reference.run_backward(data, grad, needed, saved, anomaly)
        except _DOMAIN_ERRORS:
            # Raised again from eager's own numbers, which the message shows (numpy's may
            # differ from math's in the last bit).
            data = data.copy()
            saved = self.reference.eager_numbers(data)
            grad = np.zeros(self.size)
            grad[position] = g
            self.reference.run_backward(data, grad, needed, saved, anomaly)
            raise
        return grad[self.n_fixed : self.n_leaves]

    def _needed_by(self, position, data):
        """Which nodes the gradient of ``position`` reaches, or None when that is every node.

        It is every node for a single output without stop_gradients. Otherwise eager backward
        would not visit the others (another output's graph, what lies behind a detach, or the
        rows a take did not pick on this call), so their local gradients, possibly nan, and
        their domain errors must not leak in.
        """
        if self.every_node_needed:
            return None
        if position in self.cones:
            return self.cones[position]
        needed = self.reference.reached_from(position, data, self.size)
        if not self.takes_pick_nodes:  # the same on every call: kept
            self.cones[position] = needed
        return needed


class _Replay:
    """The numbers of one compiled call, kept for its backward pass."""

    __slots__ = ("tape", "data", "saved", "placed")

    def __init__(self, tape, data, saved, placed):
        self.tape, self.data, self.saved, self.placed = tape, data, saved, placed

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
    return replay.tape.backward(replay.data, replay.saved, position, g).tolist()


class _CompiledValue(Value):
    """The result of a compiled call: a Value whose op runs the tape backward."""

    __slots__ = ()

    def backward(self, gradient: float | Value = 1.0, create_graph: bool = False) -> None:
        if create_graph:
            raise NotImplementedError("backward(create_graph=True) through a compiled function")
        replay, position = self._rule.backward.args
        mode = _mode.get()
        if isinstance(gradient, Value) or mode.anomaly or mode.hook or not replay.tape.externals_are_leaves:
            return super().backward(gradient)  # while tracing, the engine's backward refuses
        seed = engine._check_gradient(gradient, False)
        if replay.placed is not None and replay.saved is None:
            # The parameters live on a device (chainrule.on_device): their gradients are added
            # there, this result's own here.
            backend = replay.tape.backend
            seeds = replay.tape.np.zeros(len(backend.unique_outputs))
            seeds[backend.unique_outputs.index(position)] = seed
            if backend.add_on_device(replay.data, seeds, replay.placed):
                engine._add_to_grads((self,), replay.tape.np.array([seed]))
                return
        shares = replay.tape.backward(replay.data, replay.saved, position, seed)
        # The graph above the tape is just this node and the parameters (leaves): what the
        # engine's backward would add, without its general walk, in one all-or-nothing step.
        engine._add_to_grads((self, *self.children), replay.tape.np.append(seed, shares))


def _takes_of_nodes(np: ModuleType, placed: Sequence[tuple[Any, ...]], n_leaves: int) -> tuple[bool, bool]:
    """Whether a take of the layout ``placed`` has a computed node as its index, and whether
    one has a computed node among its rows. (Leaves, a model's embedding table or an index
    given as an argument, pass nothing on whether they are reached or not.)"""
    index_is_node = rows_are_nodes = False
    for rule, count, width, rows, _ in placed:
        if rule is ops.TAKE:
            computed = np.frombuffer(rows, dtype=np.intp).reshape(count, width) >= n_leaves
            index_is_node = index_is_node or bool(computed[:, 0].any())
            rows_are_nodes = rows_are_nodes or bool(computed[:, 1:].any())
    return index_is_node, rows_are_nodes


def _every_node_used(np, placed, n_leaves, outputs):
    """Whether every node of the layout ``placed`` is an input of another or an output. (Nodes
    kept only for their errors are neither: a gradient must then not pass through them.)"""
    used = np.zeros(n_leaves + sum(count for _, count, _, _, _ in placed), dtype=bool)
    used[np.frombuffer(b"".join(rows for _, _, _, rows, _ in placed), dtype=np.intp)] = True
    used[list(outputs)] = True
    return bool(used[n_leaves:].all())
