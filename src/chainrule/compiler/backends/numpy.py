"""The numpy backend, the reference: a Program's groups, one numpy operation each.

Every other backend falls back to this one: when a C kernel meets something unusual, or a
replay runs under ``detect_anomaly``, the call is redone here. Its groups raise eager's errors
(a domain error found by running the op's scalar rule where the vectorized one gave nan or inf)
and pass nan and inf on as eager does, so every backend gives eager's numbers and errors.

A group of dot nodes that pairs every weight vector with every input vector (a layer applied to
a batch) becomes a ``_MatmulGroup``: one matrix product, its nodes put input-vector-major, so
the positions of the nodes after it are renumbered (``NumpyProgram.outputs`` and ``checked``
say where things ended up).
"""

from __future__ import annotations

import functools
import math
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ... import ops
from ...engine import AnomalyError, Value, op_error
from ..ir import Program

if TYPE_CHECKING:
    import numpy

name = "numpy"


def prepare(program: Program, layers: bool = True) -> NumpyProgram:
    """The numpy replay of ``program``. ``layers``: run a layer applied to a batch as one matrix
    product (its nodes then put in another order); False keeps every node where it is."""
    return NumpyProgram(program, layers)


class NumpyProgram:
    """A Program's groups as numpy operations: the reference every other backend falls back to."""

    def __init__(self, program: Program, layers: bool = True) -> None:
        import numpy as np

        self.np = np
        self.first = program.n_leaves  # the position of the first computed node
        # A layer's group may put its nodes in another order (see _MatmulGroup); the positions
        # of the groups after it, and the outputs', are then renumbered to match.
        renumber, start, groups = None, program.n_leaves, []
        for rule, count, width, rows, vectors in program.layout:
            rows = np.frombuffer(rows, dtype=np.intp).reshape(count, width)
            if renumber is not None:
                rows = renumber[rows]
            group, order = _make_group(np, rule, start, rows, vectors if layers else None)
            if order is not None:
                if renumber is None:
                    renumber = np.arange(program.size)
                renumber[start + order] = np.arange(start, start + count)
            groups.append(group)
            start += count
        self.groups = groups
        self.outputs = tuple(program.outputs)
        self.checked = np.array(program.checked, dtype=np.intp)
        if renumber is not None:
            self.outputs = tuple(renumber[list(self.outputs)].tolist())
            self.checked = renumber[self.checked]

    @property
    def reference(self) -> NumpyProgram:
        return self

    def layout(self) -> list[tuple]:
        """The groups as a Program lists them (see ir.Group), each node where this replay put it."""
        np = self.np
        layout = []
        for group in self.groups:
            positions = group.positions()  # (inputs, nodes)
            rows = np.ascontiguousarray(positions.T, dtype=np.intp).ravel()
            layout.append((group.rule, group.end - group.start, len(positions), rows, None))
        return layout

    def forward(self, data: numpy.ndarray) -> bool:
        """Compute every node into ``data`` (the leaves in place); raises eager's error."""
        self.run_forward(data, anomaly=False)
        return True

    def backward(self, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray | None) -> bool:
        """Add the gradients into ``grad`` (seeded at the outputs) for the nodes in ``needed``."""
        self.run_backward(data, grad, needed, self.run_forward(data.copy(), anomaly=False), anomaly=False)
        return True

    def run_forward(self, data, anomaly):
        """Every group in order; returns what each group's backward needs."""
        with self.np.errstate(all="ignore"):
            return [group.forward(self.np, data, anomaly) for group in self.groups]

    def eager_numbers(self, data):
        """Every node of ``data`` computed again with its op's scalar rule, eager's arithmetic,
        and what each group's backward needs from those numbers: for an error's message, which
        shows them. (Forward has succeeded, so no rule raises here.)"""
        np = self.np
        for group in self.groups:
            _scalar_forward(np, group, data)
        scratch, saved = data.copy(), []
        with np.errstate(all="ignore"):
            for group in self.groups:  # each group's inputs from eager's numbers, not its own
                saved.append(group.forward(np, scratch, anomaly=False))
                scratch[group.start : group.end] = data[group.start : group.end]
        return saved

    def run_backward(
        self,
        data: numpy.ndarray,
        grad: numpy.ndarray,
        needed: numpy.ndarray | None,
        saved: list[Any],
        anomaly: bool,
    ) -> None:
        """The groups in reverse, each adding into its inputs' gradients (``saved``: what
        run_forward returned); only the nodes marked in ``needed`` (None: all)."""
        np = self.np
        with np.errstate(all="ignore"):
            for group, group_saved in zip(reversed(self.groups), reversed(saved)):
                part = None if needed is None else needed[group.start : group.end]
                if part is None or part.all():
                    group.backward(np, data, grad, group_saved, anomaly)
                elif part.any():
                    group.backward_part(np, data, grad, part, anomaly)

    def first_error(self, data, size):
        """The error eager would raise for the leaves in ``data``, or None if no node fails.

        Only called once a replay has failed. Every node is computed again with its op's scalar
        rule, eager's own arithmetic (numpy's tanh, say, may differ from math's in the last
        bit, and the message shows the numbers), and of the nodes that fail, the first in
        eager's order (``checked``) gives the error. The nodes before it in that order did not
        fail, so its inputs are eager's own.
        """
        np, checked = self.np, self.checked
        rank = np.arange(size) + len(checked)  # (a node not in checked comes after)
        rank[checked] = np.arange(len(checked))
        first = None  # (rank, rule, inputs, error) of the first failure so far
        for group in self.groups:
            for node, inputs, error in _scalar_forward(np, group, data):
                if first is None or rank[group.start + node] < first[0]:
                    first = (rank[group.start + node], group.rule, inputs, error)
        if first is None:
            return None
        _, rule, inputs, error = first
        if isinstance(error, (ValueError, ZeroDivisionError)):  # as engine.apply reports it
            return op_error(rule, [Value(x) for x in inputs], error)
        return error  # take's TypeError or IndexError, as eager take raises it

    def reached_from(self, position, data, size):
        """Which nodes a gradient seeded at ``position`` reaches, as eager backward would visit
        them: not through a stop_gradient, and through a take's picked row only (for the
        indices in ``data``; forward checked every index)."""
        np = self.np
        needed = np.zeros(size, dtype=bool)
        needed[position] = True
        for group in reversed(self.groups):
            part = needed[group.start : group.end]
            if not part.any() or group.rule is ops.STOP_GRADIENT:
                continue
            children = group.children[:, part]
            if group.rule is ops.TAKE:
                picked = data[children[0]].astype(np.intp) % (len(children) - 1)
                needed[children[1 + picked, np.arange(children.shape[1])]] = True
            else:
                needed[children] = True
        return needed


def _make_group(np, rule, start, rows, vectors):
    """The group for nodes at positions start, start + 1, ... whose inputs are ``rows`` (a row
    a node); and the order it put them in (None: as given)."""
    if vectors is not None:
        made = _MatmulGroup.try_make(np, rule, start, rows, vectors)
        if made is not None:
            return made
    return _Group(np, rule, start, start + len(rows), rows.T.copy()), None  # a copy: no view keeps a base


# ---------------------------------------------------------------------------------------------
# The groups


class _Scatter:
    """Adds gradients into ``grad`` at fixed positions, summing the ones that share a position."""

    __slots__ = ("unique", "inverse")

    def __init__(self, np: ModuleType, positions: numpy.ndarray) -> None:
        self.unique, self.inverse = np.unique(positions.ravel(), return_inverse=True)

    def add(self, np: ModuleType, grad: numpy.ndarray, values: numpy.ndarray) -> None:
        grad[self.unique] += np.bincount(self.inverse, values.ravel(), len(self.unique))


def _row_access(np, positions):
    """The cheapest way to read and add into these positions: a slice when they run in order."""
    first = int(positions[0])
    if np.array_equal(positions, np.arange(first, first + len(positions))):
        return slice(first, first + len(positions))
    if len(np.unique(positions)) == len(positions):
        return positions  # fancy indexing is safe for += when no position repeats
    return _Scatter(np, positions)


def _add_at(np: ModuleType, grad: numpy.ndarray, access: Any, values: numpy.ndarray) -> None:
    """``grad[positions] += values`` through a _row_access: summing where positions repeat."""
    if isinstance(access, _Scatter):
        access.add(np, grad, values)
    else:
        grad[access] += values


_FEW_INPUTS = 4  # groups with at most this many inputs read and write row by row


class _Group:
    """Nodes at the same depth with the same op and number of inputs: one numpy operation."""

    # Slots: a thin tape has a group per node (100,000 for a long chain), so a group is small.
    __slots__ = ("rule", "start", "end", "children", "_rows", "_scatter")

    def __init__(self, np: ModuleType, rule: ops.Op, start: int, end: int, children: numpy.ndarray) -> None:
        self.rule, self.start, self.end = rule, start, end
        self.children = children  # positions: one row per input, one column per node
        self._rows: list[Any] | None = None
        self._scatter: _Scatter | None = None

    # How the numpy replay reads and adds into the inputs is worked out on its first use: a
    # thin tape, replayed node by node or in C, may never need it.
    @property
    def rows(self):
        """One way to read and add into each input row (see _row_access), or None when the
        inputs are many: then ``scatter`` adds them all at once."""
        if len(self.children) > _FEW_INPUTS:
            return None
        if self._rows is None:
            self._rows = [_row_access(sys.modules["numpy"], row) for row in self.children]
        return self._rows

    @property
    def scatter(self):
        if self._scatter is None:
            self._scatter = _Scatter(sys.modules["numpy"], self.children)
        return self._scatter

    def positions(self):
        """Every node's input positions, one row per input."""
        return self.children

    @property
    def children_scatter(self):
        """Adds a gradient for every input of every node (a row per input), as ``children``
        lists them: what a backward for part of the nodes needs."""
        return self.scatter

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

    def backward(
        self, np: ModuleType, data: numpy.ndarray, grad: numpy.ndarray, X: Any, anomaly: bool
    ) -> None:
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

    def backward_part(
        self, np: ModuleType, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray, anomaly: bool
    ) -> None:
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
        self.children_scatter.add(np, grad, input_grads)


def _as_matrix(np, rows, shape):
    """Input gradients given as rows (arrays or numbers) as one (inputs, nodes) matrix."""
    if isinstance(rows, np.ndarray) and rows.shape == shape:
        return rows
    matrix = np.empty(shape)
    for row, g in zip(matrix, rows):
        row[...] = g
    return matrix


def _first_rows(np, ids):
    """Where each id first appears, for ids numbered in the order first seen (0, 1, 2, ...): the
    rows where their running maximum goes up."""
    return np.flatnonzero(np.diff(np.maximum.accumulate(ids), prepend=-1))


class _MatmulGroup(_Group):
    """Dot nodes that pair every one of U weight vectors with every one of V input vectors.

    That is a layer applied to a batch: one matrix product instead of a gather of all the
    n*U*V products. The nodes are ordered input-vector-major, so output j is pair (j // U, j % U).
    """

    def __init__(
        self,
        np: ModuleType,
        rule: ops.Op,
        start: int,
        end: int,
        weights: numpy.ndarray,
        inputs: numpy.ndarray,
        bias: numpy.ndarray,
    ) -> None:
        self.rule, self.start, self.end = rule, start, end
        self.weights, self.inputs, self.bias = weights, inputs, bias  # (n, U), (n, V), (U * V,)
        self._rows = None

    @functools.cached_property
    def _blocks(self):
        """How backward adds into the layer's inputs, block by block (worked out on first use,
        as a plain group's scatter): the weights', the inputs' and the biases' positions, each
        read as _row_access says (usually a slice or distinct positions: no bincount needed).
        In a layer each neuron has one bias, the same for every input vector (``shared``):
        then its gradient is the sum over the input vectors, added once."""
        np = sys.modules["numpy"]
        U, V = self.weights.shape[1], self.inputs.shape[1]
        per_node = self.bias.reshape(V, U)
        shared = bool((per_node == per_node[0]).all())
        bias = per_node[0].copy() if shared else self.bias
        return (
            _row_access(np, self.weights.ravel()),
            _row_access(np, self.inputs.ravel()),
            shared,
            bias,
            _row_access(np, bias),
        )

    @functools.cached_property
    def children(self):  # type: ignore[override]  # (a slot of _Group, made on first use here)
        """Every node's input positions, one row per input, as other groups keep them. Large
        (the weights repeated for every input vector), so built only when something needs it:
        a backward for part of the nodes, an error to report, a node-by-node replay."""
        return self.positions()

    def positions(self):
        """``children``, made afresh (not kept)."""
        np = sys.modules["numpy"]
        U, V = self.weights.shape[1], self.inputs.shape[1]
        return np.concatenate(
            [np.tile(self.weights, V), np.repeat(self.inputs, U, axis=1), self.bias[None, :]]
        )

    @functools.cached_property
    def children_scatter(self):
        # (``scatter`` adds in the layer's own layout: weight block, input block, biases)
        return _Scatter(sys.modules["numpy"], self.children)

    @staticmethod
    def try_make(np, rule, start, children, vectors):
        """A _MatmulGroup for these dot nodes, and the order it puts them in (None: as they are),
        if they form a full weights x inputs product; else None. ``children`` are their inputs'
        positions, a row a node; ``vectors`` number each node's weight vector and input vector
        (see layout)."""
        n = children.shape[1] // 2
        if n == 0:  # dot([], [], b): nothing to multiply
            return None
        w_of, x_of = (np.frombuffer(ids, dtype=np.intp) for ids in vectors)
        U, V = int(w_of.max()) + 1, int(x_of.max()) + 1
        if U * V != len(children):
            return None
        slot = x_of * U + w_of  # where each node goes: input vector major
        filled = np.zeros(U * V, dtype=bool)
        filled[slot] = True
        if not filled.all():  # some (weights, inputs) pair twice
            return None
        ordered = np.argsort(slot)
        weights, inputs = children[_first_rows(np, w_of), :n].T, children[_first_rows(np, x_of), n : 2 * n].T
        bias = children[ordered, 2 * n]
        if (ordered == np.arange(len(ordered))).all():  # already in that order (an MLP's usually are):
            ordered = None  # nothing after it needs renumbering
        return _MatmulGroup(np, rule, start, start + len(children), weights, inputs, bias), ordered

    def forward(self, np, data, anomaly):
        W, X = data[self.weights], data[self.inputs]
        _, _, shared, bias, _ = self._blocks
        out = (X.T @ W + data[bias]).ravel() if shared else (X.T @ W).ravel() + data[bias]
        if not math.isfinite(out.sum()):
            _recheck_forward(self.rule, data[self.children], out, anomaly)
        data[self.start : self.end] = out
        return W, X

    def backward(
        self, np: ModuleType, data: numpy.ndarray, grad: numpy.ndarray, saved: Any, anomaly: bool
    ) -> None:
        W, X = saved
        g = grad[self.start : self.end]
        G = g.reshape(X.shape[1], W.shape[1])  # (V, U)
        g_weights, g_inputs = X @ G, W @ G.T  # (n, U), (n, V)
        if not math.isfinite(g_weights.sum() + g_inputs.sum() + g.sum()):
            X_all = data[self.children]
            _recheck_backward(
                self.rule,
                g,
                data[self.start : self.end],
                X_all,
                self.rule.vbackward(np, g, data[self.start : self.end], X_all),
                anomaly,
            )
        weights, inputs, shared, _, bias = self._blocks
        _add_at(np, grad, weights, g_weights.ravel())
        _add_at(np, grad, inputs, g_inputs.ravel())
        _add_at(np, grad, bias, G.sum(axis=0) if shared else g)


# What an op's forward raises for inputs outside its domain (take: IndexError and TypeError).
_DOMAIN_ERRORS = (ValueError, ZeroDivisionError, IndexError, TypeError)


def _scalar_forward(np, group, data):
    """Compute ``group``'s nodes into ``data`` with the op's scalar rule, node by node, without
    raising; return (node, inputs, error) for each node whose rule raises (its number is then
    nan)."""
    rule, out, failures = group.rule, np.empty(group.end - group.start), []
    for node, inputs in enumerate(data[group.children].T.tolist()):
        try:
            out[node] = rule.forward(*inputs)
        except _DOMAIN_ERRORS as error:
            out[node] = np.nan
            failures.append((node, inputs, error))
    data[group.start : group.end] = out
    return failures


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
