"""The tape and its numpy backend: groups of same-depth, same-op nodes, one numpy call each."""

from __future__ import annotations

import functools
import math
import operator
import sys
import warnings

from .. import engine, ops
from ..engine import AnomalyError, Value, _make, _mode, op_error
from . import native, scalar
from .arguments import _unflatten_result
from .rewriting import can_raise, layout_keeping_checks

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


def _add_at(np, grad, access, values):
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

    def __init__(self, np, rule, start, end, children):
        self.rule, self.start, self.end = rule, start, end
        self.children = children  # positions: one row per input, one column per node
        self._rows = self._scatter = None

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

    def __init__(self, np, rule, start, end, weights, inputs, bias):
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
    def children(self):
        """Every node's input positions, one row per input, as other groups keep them. Large
        (the weights repeated for every input vector), so built only when something needs it:
        a backward for part of the nodes, an error to report, a node-by-node replay."""
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

    def backward(self, np, data, grad, saved, anomaly):
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


class Tape:
    """A traced graph, flattened for replay."""

    def __init__(
        self,
        inputs,
        constants,
        outputs,
        result_structure,
        created,
        backend="numpy",
        laid_out=None,
        checked=(),
    ):
        import numpy as np

        self.np = np
        self.result_structure = result_structure
        if laid_out is None:  # (given by mapping.py for a trace with map_rows calls)
            laid_out, checked = layout_keeping_checks(inputs, constants, outputs, created)
        constant_leaves, self.externals, placed, output_positions = laid_out
        # The nodes whose op can raise, in eager's order (see rewriting.layout_keeping_checks).
        self.checked = np.array(checked, dtype=np.intp)
        self.n_inputs = len(inputs)
        self.n_fixed = self.n_inputs + len(constant_leaves)  # externals live in data[n_fixed:n_leaves]
        self.n_leaves = self.n_fixed + len(self.externals)
        self.constant_data = np.array([v.data for v in constant_leaves], dtype=np.float64)
        self.size = self.n_leaves + sum(count for _, count, _, _, _ in placed)

        self.output_positions = output_positions
        self.external_tuple = tuple(self.externals)
        self.external_data = np.empty(len(self.externals))  # where a call reads their numbers into
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
            and (not len(self.checked) or _every_node_used(np, placed, self.n_leaves, output_positions))
        )
        self.cones = {}  # output position -> which nodes its gradient reaches
        self._placed, self._groups = placed, None
        self.fast = self._thin_from_layout(backend)
        if self.fast is None:
            self.fast = self._fast(backend)
        # Whether a call can run as one C call (see _replay_into).
        self.in_one_call = isinstance(self.fast, native.NativeTape) and self.fast.in_one_call

    @property
    def groups(self):
        """The tape's groups, made from the layout when first needed (see _thin_from_layout)."""
        if self._groups is None:
            self._make_groups()
        return self._groups

    def _make_groups(self):
        np = self.np
        if self._placed is None:  # a thin tape set up by _thin_from_layout: read its table back
            idx, groups = self.fast.idx.astype(np.intp), []
            for rule, (_, start, count, n, at, _, _) in zip(self._rules, self.fast.table.tolist()):
                children = idx[at : at + count * n].reshape(count, n).T.copy()
                groups.append(_Group(np, rule, start, start + count, children))
            self._groups, self._rules = groups, None
            return
        # A layer's group may put its nodes in another order (see _MatmulGroup); the positions
        # of the groups after it, and the outputs', are then renumbered to match.
        renumber, start, groups = None, self.n_leaves, []
        for rule, count, width, rows, vectors in self._placed:
            rows = np.frombuffer(rows, dtype=np.intp).reshape(count, width)
            if renumber is not None:
                rows = renumber[rows]
            group, order = self._make_group(np, rule, start, rows, vectors)
            if order is not None:
                if renumber is None:
                    renumber = np.arange(self.size)
                renumber[start + order] = np.arange(start, start + count)
            groups.append(group)
            start += count
        if renumber is not None:
            self.output_positions = renumber[self.output_positions].tolist()
            self.checked = renumber[self.checked]
        self._groups, self._placed = groups, None

    def _thin_from_layout(self, backend):
        """For a thin tape on the numpy or auto backend: the C table program pip built, set up straight
        from the layout, so that no group object is made (for a chain, one per node: more time
        than tracing it); they are read back from its table if something needs them (an error to
        report, detect_anomaly, the gradient of part of the nodes), as plain groups: a layer's
        dot nodes stay in the layout's order (the table program runs them one by one anyway),
        so the layout's positions are the tape's. None otherwise."""
        placed = self._placed
        if backend == "c" or not scalar.is_thin(self.size - self.n_leaves, len(placed)):
            return None
        try:
            fast = native.NativeTape.from_layout(self.np, placed, self.size, self.n_leaves)
        except native.Unavailable:
            return None
        self._rules, self._placed = [rule for rule, *_ in placed], None  # the rest is in its table
        return fast

    def _fast(self, backend):
        """What replays the tape instead of the numpy groups, or None for the groups themselves.

        ``"c"``: the tape as its own C program (native.py). ``"auto"``: the C table program, the
        same for every tape (pip builds it with chainrule, so no C compiler runs per tape).
        ``"numpy"``, or when neither can run: a thin tape (where a numpy call per group would
        cost more than eager) still runs on the table program pip built, else node by node in
        Python (scalar.py); any other on the numpy groups."""
        if backend == "c":
            try:
                return native.NativeTape(self.np, self.groups, self.size, self.n_leaves)
            except native.Unavailable as reason:
                warnings.warn(
                    f"chainrule.compile: {reason}; using the numpy backend", RuntimeWarning, stacklevel=5
                )
        elif backend == "auto":
            try:
                return native.NativeTape(self.np, self.groups, self.size, self.n_leaves, table=True)
            except native.Unavailable:
                pass
        if scalar.is_thin(self.size - self.n_leaves, len(self.groups)):
            try:  # the C table program pip built with chainrule, if it did: no compiler needed
                return native.NativeTape(
                    self.np, self.groups, self.size, self.n_leaves, table=True, compiler=False
                )
            except native.Unavailable:
                return scalar.ScalarReplay(self.groups, self.n_leaves)
        return None

    @staticmethod
    def _make_group(np, rule, start, rows, vectors):
        """The group for nodes at positions start, start + 1, ... whose inputs are ``rows`` (a row
        a node); and the order it put them in (None: as given)."""
        if vectors is not None:
            made = _MatmulGroup.try_make(np, rule, start, rows, vectors)
            if made is not None:
                return made
        return _Group(np, rule, start, start + len(rows), rows.T.copy()), None  # a copy: no view keeps a base

    def run(self, flat):
        """Replay forward on new input numbers and return the results as Values."""
        replay = _Replay(self, *self.replay(flat))
        if self.result_structure is None:  # one number out
            return replay.result(0, self.output_positions[0])
        results = iter([replay.result(i, p) for i, p in enumerate(self.output_positions)])
        return _unflatten_result(self.result_structure, results)

    def replay(self, flat):
        """Every node's number, for these input numbers; and what backward needs (see backward)."""
        data = self.np.empty(self.size)
        try:
            return self._replay_into(data, flat)
        except _DOMAIN_ERRORS:
            # Replay runs the nodes by depth, eager in the order made: of the nodes that fail,
            # report the one eager meets first (the leaves are in data by now).
            first = self._first_error(data)
            if first is None:
                raise
            raise first from None

    def _replay_into(self, data, flat):
        anomaly = _mode.get().anomaly
        external_data = self.external_data  # the parameters' numbers, read afresh (in one C loop)
        if not (engine._graph and engine._graph.read_data(self.external_tuple, external_data)):
            external_data[:] = list(map(engine._read_data, self.externals))  # (the same, in Python)
        if self.in_one_call and not anomaly:
            # On the table program pip built: the inputs, the constants and the parameters'
            # numbers copied into data, and every node computed, in one call.
            if self.fast.replay(data, (flat, self.constant_data, external_data)):
                return data, None
            return data, self._forward(data, anomaly)  # (the leaves are in place)
        data[: self.n_inputs] = flat
        data[self.n_inputs : self.n_fixed] = self.constant_data
        data[self.n_fixed : self.n_leaves] = external_data
        if self.fast is not None and not anomaly and self.fast.forward(data):
            saved = None  # the fast replay computed it all; nothing unusual happened
        else:
            saved = self._forward(data, anomaly)
        return data, saved

    def _forward(self, data, anomaly):
        """The numpy replay: every group in order; returns what each group's backward needs."""
        with self.np.errstate(all="ignore"):
            return [group.forward(self.np, data, anomaly) for group in self.groups]

    def _first_error(self, data):
        """The error eager would raise for the leaves in ``data``, or None if no node fails.

        Only called once a replay has failed. Every node is computed again, group by group; a
        node whose op can raise is run with its scalar rule where the vectorized one gave nan
        or inf (a domain error comes out so), and of the nodes that fail, the first in eager's
        order (``checked``) gives the error. The nodes before it in that order did not fail, so
        its inputs are eager's own.
        """
        np = self.np
        rank = np.arange(self.size) + len(self.checked)  # (a node not in checked comes after)
        rank[self.checked] = np.arange(len(self.checked))
        first = None  # (rank, rule, inputs, error) of the first failure so far
        with np.errstate(all="ignore"):
            for group in self.groups:
                if not can_raise(group.rule):
                    group.forward(np, data, anomaly=False)
                    continue
                for node, inputs, error in _failures(np, group, data):
                    if first is None or rank[group.start + node] < first[0]:
                        first = (rank[group.start + node], group.rule, inputs, error)
        if first is None:
            return None
        _, rule, inputs, error = first
        if isinstance(error, (ValueError, ZeroDivisionError)):  # as engine.apply reports it
            return op_error(rule, [Value(x) for x in inputs], error)
        return error  # take's TypeError or IndexError, as eager take raises it

    def backward(self, data, saved, position, g):
        """The gradient of node ``position`` (seeded with g) with respect to every external,
        as an array (a view into this pass's gradients)."""
        np = self.np
        grad = np.zeros(self.size)
        grad[position] = g
        needed = self._needed_by(position, data)
        anomaly = _mode.get().anomaly
        if saved is None:  # forward ran in the fast replay
            if not anomaly and self.fast.backward(data, grad, needed):
                return grad[self.n_fixed : self.n_leaves]
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
        np = self.np
        needed = np.zeros(self.size, dtype=bool)
        needed[position] = True
        for group in reversed(self.groups):
            part = needed[group.start : group.end]
            if not part.any() or group.rule is ops.STOP_GRADIENT:
                continue
            children = group.children[:, part]
            if group.rule is ops.TAKE:  # the picked row only (forward checked every index)
                picked = data[children[0]].astype(np.intp) % (len(children) - 1)
                needed[children[1 + picked, np.arange(children.shape[1])]] = True
            else:
                needed[children] = True
        if not self.takes_pick_nodes:  # the same on every call: kept
            self.cones[position] = needed
        return needed


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
    return replay.tape.backward(replay.data, replay.saved, position, g).tolist()


class _CompiledValue(Value):
    """The result of a compiled call: a Value whose op runs the tape backward."""

    __slots__ = ()

    def backward(self, gradient=1.0, create_graph: bool = False):
        if create_graph:
            raise NotImplementedError("backward(create_graph=True) through a compiled function")
        replay, position = self._rule.backward.args
        mode = _mode.get()
        if isinstance(gradient, Value) or mode.anomaly or mode.tracer or not replay.tape.externals_are_leaves:
            return super().backward(gradient)  # while tracing, the engine's backward refuses
        # The graph above the tape is just this node and the parameters (leaves), so do what
        # the engine's backward would do without its general walk: one tape pass, then add,
        # all or nothing as there (the totals first, then one store).
        seed = engine._check_gradient(gradient, False)
        tape = replay.tape
        shares = tape.backward(replay.data, replay.saved, position, seed)
        with engine._one_pass_at_a_time:  # reading the grads and storing the totals is one step
            # This node's gradient goes in the same C call as the parameters': a store of its own
            # after that call could be interrupted (a KeyboardInterrupt) between the two.
            nodes = (self, *self.children)
            if engine._graph and engine._graph.add_to_grads(nodes, tape.np.append(seed, shares)):
                return  # the loop below, in C (see engine.py's end)
            grads = shares.tolist()
            now = list(map(engine._GRAD, nodes))
            if set(map(type, now)) <= engine._NUMBER_TYPES:  # the usual case: add them in one go
                totals = list(map(operator.add, now, (seed, *grads)))
            else:
                totals = [engine._accumulate(node, g, False) for node, g in zip(nodes, (seed, *grads))]
            engine._store_grads(nodes, totals)


# What an op's forward raises for inputs outside its domain (take: IndexError and TypeError).
_DOMAIN_ERRORS = (ValueError, ZeroDivisionError, IndexError, TypeError)


def _failures(np, group, data):
    """Compute ``group``'s nodes into ``data`` without raising; return (node, inputs, error) for
    each node whose scalar rule raises (its number is then nan)."""
    X = data[group.children]
    try:
        out = group.rule.vforward(np, X)
        suspects = np.flatnonzero(~np.isfinite(out))
    except _DOMAIN_ERRORS:  # take checks every index at once: check each one
        out, suspects = np.full(X.shape[1], np.nan), range(X.shape[1])
    failures = []
    for node in suspects:
        inputs = X[:, node].tolist()
        try:
            out[node] = group.rule.forward(*inputs)
        except _DOMAIN_ERRORS as error:
            out[node] = np.nan
            failures.append((node, inputs, error))
    data[group.start : group.end] = out
    return failures


def _takes_of_nodes(np, placed, n_leaves) -> tuple[bool, bool]:
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
    used[outputs] = True
    return bool(used[n_leaves:].all())


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
