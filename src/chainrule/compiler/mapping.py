"""``map_rows`` while tracing: trace the function on one row, and copy its tape for every row.

``chainrule.map_rows(fn, rows)`` is ``[fn(row) for row in rows]``, and eagerly that is all it
does. While ``chainrule.compile`` traces, running ``fn`` on each of 10,000 rows would build
10,000 copies of one graph in Python, a Value at a time, and lay each copy out again. Instead:

1. ``fn`` runs once, on new leaves holding the first row's numbers (a *row trace*), and its
   graph is laid out as a small tape of its own (``rewriting.layout``);
2. that tape is copied for every row (``replicate``): a group of c nodes becomes one group of
   R*c, whose inputs are row r's Values in copy r, and the same parameters and constants in
   all. So a layer's c dot products, copied, are one matrix product for the C kernels;
3. one replay of the copied tape gives each row's results, which come back to the traced
   function as new leaves holding those numbers (*placeholders*), so the rest of the function
   (the loss over the rows, say) is traced as usual.

``compose`` then lays the outer tape out in pieces, each after the ones it reads: the nodes made
before the first ``map_rows`` call, that call's copies, the nodes made after it, and so on.

Copying is only right if ``fn`` does on every row what it does on the first. So ``fn`` runs on
every row as a plain loop (the trace then sees each row as it is) when the rows are not all
lists of Values of one shape, when ``fn`` returns something other than Values, when it
reads the number of a Value that comes from the row (an ``if x.data > 0`` would take the first
row's branch for every row), when it changes the lists of its row (which the loop would
change in place), or when it raises on the new leaves (it may need the row's own Values: a
dict keyed by them, say; or it raises the same error again in the loop). A call inside a row
trace, or under ``no_grad``, is a plain loop too. A Value of the row trace that leaks out
other than through fn's results (kept in a list) would stand for the first row alone: using
it is refused (see ``compose``).
"""

from __future__ import annotations

import itertools
from typing import Any

from .. import engine
from ..engine import Value, _make
from .arguments import _flatten_result, _unflatten_result
from .ir import Mapped, Program
from .rewriting import layout, program, raising_nodes

_LEAF = "Value"


def _column_shape(column, leaves):
    """The shape shared by every row's item in ``column`` (an argument's items, a row each), and
    its Values, added to ``leaves`` as columns (a tuple of R Values each); None when the items
    are not all Values, or lists or tuples of them of one shape. It works column by column, so
    that a batch of R rows costs a few passes in C rather than R calls in Python."""
    types = set(map(type, column))
    if all(issubclass(t, Value) for t in types):
        leaves.append(column)
        return _LEAF
    if len(types) != 1 or not types <= {list, tuple} or len(set(map(len, column))) != 1:
        return None
    shapes = tuple(_column_shape(items, leaves) for items in zip(*column))
    return None if any(shape is None for shape in shapes) else (types.pop(), shapes)


def _rebuilt(shape, leaves):
    """The object of this shape, with the next items of the iterator ``leaves`` as its Values."""
    if shape is _LEAF:
        return next(leaves)
    kind, shapes = shape
    return kind(_rebuilt(item, leaves) for item in shapes)


class _Block:
    """One ``map_rows`` call, traced on one row: what ``compose`` needs to place its copies."""

    def __init__(
        self, at: int, rows: list[tuple[Value, ...]], row_program: Program, made: set[Value]
    ) -> None:
        self.at = at  # how many nodes the outer trace had made before the call
        self.rows = rows  # each row's Values, in the order of the row trace's inputs
        self.constants, self.externals = row_program.constants, row_program.externals
        self.placed, self.output_positions = row_program.layout, row_program.outputs
        self.checked = row_program.checked  # the row trace's nodes that can raise (see program)
        self.n_inputs = len(rows[0])  # Values per row
        self.made = made  # the row trace's leaves and nodes (to tell if any leaks out: see compose)
        # per output of the row trace: its R placeholders, or None for a leaf
        self.results: list[list[Value] | None] = []
        self.needed = True

    @property
    def n_leaves(self):
        return self.n_inputs + len(self.constants) + len(self.externals)

    @property
    def placeholders(self):
        return [v for values in self.results if values is not None for v in values]


def trace_rows(tracer, fn, iterables, row_tracer_class):
    """``tracer.map_rows``: what ``map_rows(fn, *iterables)`` returns while tracing (see above)."""
    rows = list(zip(*iterables))
    if len(rows) < 2 or not engine._mode.get().recording:  # (under no_grad: stop_gradient nodes)
        return [fn(*row) for row in rows]
    columns: list[Any] = []
    shape = _column_shape(rows, columns)
    if shape is None or not columns:  # (rows of empty lists: no Values to copy for)
        return [fn(*row) for row in rows]
    items = list(zip(*columns))  # each row's Values

    leaves = [Value(x) for x in map(engine._read_data, items[0])]  # the first row's numbers
    row_tracer = row_tracer_class(leaves, tracer)
    args = _rebuilt(shape, iter(leaves))
    try:
        with engine._hooked(row_tracer):
            result = fn(*args)
    except Exception:  # on the first row's own Values it may not (or it raises the same again)
        return [fn(*row) for row in rows]
    # fn changed its row (appended to it, say): the plain loop changes each row in place.
    after: list[Any] = []
    changed = _column_shape([args], after) != shape or any(a[0] is not b for a, b in zip(after, leaves))
    outputs: list[Value] = []
    plain = row_tracer.read_row_number or changed
    try:
        result_shape = _flatten_result(result, outputs)
    except TypeError:  # not Values
        plain = True
    if plain:
        return [fn(*row) for row in rows]  # (so fn runs on the first row again, in the outer trace)

    tracer.constants.update(row_tracer.constants)
    row_program = program(leaves, row_tracer.constants, outputs, row_tracer.nodes)
    block = _Block(len(tracer.nodes), items, row_program, {*leaves, *row_tracer.nodes})
    numbers = _replay_copies(block, tracer.backend)
    per_output = []  # for each of fn's results: its Value for each row
    for output, p in zip(outputs, block.output_positions):
        if p < block.n_inputs:  # fn returned one of the row's own Values
            per_output.append([row[p] for row in block.rows])
        elif p < block.n_leaves:  # a parameter or a constant: the same for every row
            per_output.append([output] * len(rows))
        else:
            per_output.append([_make(x, None, ()) for x in numbers[p].tolist()])
        block.results.append(per_output[-1] if p >= block.n_leaves else None)
    tracer.inputs.update(block.placeholders)
    tracer.blocks.append(block)
    return [_unflatten_result(result_shape, iter(row_results)) for row_results in zip(*per_output)]


def _replay_copies(block, backend):
    """The numbers of the copies' outputs, from one replay of the copied tape on its own:
    {output position in the row trace: an array of R numbers}."""
    import numpy as np

    from .tape import Tape

    R, k = len(block.rows), block.n_inputs
    flat_rows = list(itertools.chain.from_iterable(block.rows))
    n_leaves = R * k + block.n_leaves - k  # every row's Values, then the constants and externals
    placed, first, stride = replicate(
        np, block, np.arange(R * k).reshape(R, k), np.arange(R * k, n_leaves), n_leaves
    )
    checked = _checked_copies(np, block, first, stride)
    copies = Program(len(flat_rows), block.constants, block.externals, placed, outputs=(), checked=checked)
    # (a one-off replay while tracing: the table program serves it best whatever the backend)
    tape = Tape(copies, None, "numpy" if backend == "numpy" else "auto")
    data = tape.replay(np.array(list(map(engine._read_data, flat_rows)), dtype=np.float64))[0]
    rows = np.arange(R)
    return {
        p: data[first[p - block.n_leaves] + rows * stride[p - block.n_leaves]]
        for p in block.output_positions
        if p >= block.n_leaves
    }


def _checked_copies(np, block, first, stride):
    """Where the copies of the row trace's checked nodes sit, in eager's order: row by row (eager
    map_rows runs fn on one row after another), each row's in the order made."""
    at = np.asarray(block.checked, dtype=np.intp) - block.n_leaves
    rows = np.arange(len(block.rows), dtype=np.intp)[:, None]
    return (first[at] + rows * stride[at]).ravel()


def replicate(np, block, row_positions, leaf_positions, node_base):
    """The row trace's groups, copied for every row, as ``rewriting.layout`` gives groups.

    ``row_positions[r, i]`` is where row r's i-th Value sits, ``leaf_positions`` where the row
    trace's constants and externals do, and the copies' nodes start at ``node_base``: each group
    of c nodes becomes R*c nodes, row after row. Returns the groups, and for each node of the
    row trace (numbered from 0) where its copy for row r sits: ``first + r * stride``.
    """
    R, k, n_leaves = len(row_positions), block.n_inputs, block.n_leaves
    counts = [count for _, count, _, _, _ in block.placed]
    first, stride = np.empty(sum(counts), dtype=np.intp), np.empty(sum(counts), dtype=np.intp)
    at = 0
    for count in counts:
        first[at : at + count] = node_base + np.arange(count)
        stride[at : at + count] = count
        at, node_base = at + count, node_base + R * count
    # Where copy r of an entry sits: base + r * step, for a constant or an external (step 0) and
    # for a node; for a row's Value too, when the rows lie evenly (the arguments do), else by hand.
    step_by_row = row_positions[1] - row_positions[0] if R > 1 else np.zeros(k, dtype=np.intp)
    even = bool((row_positions == row_positions[0] + np.arange(R)[:, None] * step_by_row).all())
    base = np.concatenate([row_positions[0], leaf_positions, first])
    step = np.concatenate([step_by_row, np.zeros(len(leaf_positions), dtype=np.intp), stride])
    each_row = np.arange(R, dtype=np.intp)[:, None, None]
    placed = []
    for rule, count, width, rows, vectors in block.placed:
        local = np.frombuffer(rows, dtype=np.intp).reshape(count, width)
        copied = each_row * step[local]
        copied += base[local]  # (in place: a second array of this size costs more than the sum)
        if not even:
            from_row = local < k
            copied[:, from_row] = row_positions[:, local[from_row]]
        if vectors is not None:
            n = width // 2
            per_row = (local < k) | (local >= n_leaves)
            halves = (per_row[:, :n].any(axis=1), per_row[:, n : 2 * n].any(axis=1))
            vectors = tuple(_copied_ids(np, ids, half, R) for ids, half in zip(vectors, halves))
        placed.append((rule, R * count, width, copied.reshape(-1), vectors))
    return placed, first, stride


def _copied_ids(np, ids, per_row, R):
    """A dot group's vector numbers (see rewriting.layout) for its copies: a vector that reads
    the row is a new vector in every copy, one that does not (a neuron's weights) is shared.
    Numbered in the order first seen, as layout numbers them: the first copy's as the row
    trace's, then each later copy's own vectors after all those seen before."""
    ids = np.frombuffer(ids, dtype=np.intp)
    n = int(ids.max()) + 1 if len(ids) else 0
    own = np.zeros(n, dtype=bool)
    own[ids[per_row]] = True
    rank = np.cumsum(own) - 1  # a row's own vectors, among themselves
    later = n + np.arange(R - 1, dtype=np.intp)[:, None] * int(own.sum()) + rank[ids]
    copies = np.where(own[ids], later, ids)
    return np.concatenate([ids, copies.ravel()])


def compose(np, inputs, constants, outputs, nodes, blocks):
    """The outer trace's Program, as ``rewriting.program`` gives it, when it holds ``map_rows``
    calls (with the positions of the nodes that can raise, in eager's order, each kept on the
    tape, used or not); and whether every node placed is needed by the outputs (else backward
    must not send gradients through the rest: see Tape._needed_by).

    The trace is laid out in pieces, in the order made: the nodes before the first call, its
    copies, the nodes after it, and so on. Each piece of nodes is laid out by
    ``rewriting.layout`` with everything placed before it as its inputs, in its own numbering,
    then all pieces are renumbered into one: the inputs, every constant, every external, then
    the pieces' nodes in order.
    """
    bounds = [0, *(block.at for block in blocks), len(nodes)]
    pieces = [nodes[a:b] for a, b in zip(bounds, bounds[1:])]
    checked = [raising_nodes(piece) for piece in pieces]  # kept as if outputs, to raise as eager

    # What each piece of nodes hands on (to later pieces, copies, or the outputs), sweeping back.
    wanted, every_node_used = {*outputs, *itertools.chain.from_iterable(checked)}, True
    handed_on: list[list[Value] | None] = [None] * len(pieces)
    for i in reversed(range(len(pieces))):
        handed_on[i] = [node for node in pieces[i] if node in wanted]
        for node in reversed(pieces[i]):
            if node in wanted:
                wanted.update(node.children)
        if i > 0:
            block = blocks[i - 1]
            used = [v in wanted for v in block.placeholders]
            block.needed = any(used) or len(block.checked) > 0  # eager runs fn on every row
            every_node_used = every_node_used and all(used)
            if block.needed:
                wanted.update(itertools.chain.from_iterable(block.rows))
                wanted.update(block.externals)

    # Each piece in its own numbering.
    known = list(inputs)
    laid: list[tuple[Any, Any]] = []  # a piece's layout and (how many Values it knows, its ends), or a block
    for i, piece in enumerate(pieces):
        if i > 0 and blocks[i - 1].needed:
            laid.append((blocks[i - 1], None))
            known += blocks[i - 1].placeholders
        ends = [*outputs, *checked[i]] if i == len(pieces) - 1 else handed_on[i]
        laid.append((layout(known, constants, ends, piece), (len(known), ends)))

    # One numbering: every leaf first, then the pieces' nodes in order.
    where = {v: i for i, v in enumerate(inputs)}
    knowable = set(known)
    leaves: dict[Value, bool] = {}  # the constants and externals, each once: is it a constant?
    for piece, _ in laid:
        if isinstance(piece, _Block):  # (its rows may be leaves too: parameters, say)
            for v in itertools.chain(*piece.rows, piece.constants, piece.externals):
                if v not in knowable:
                    leaves.setdefault(v, v in constants)
        else:
            leaves.update(dict.fromkeys(piece[0], True))
            leaves.update(dict.fromkeys(piece[1], False))
    made_in_rows = set().union(*(block.made for block in blocks))
    if not made_in_rows.isdisjoint(leaves):
        raise NotImplementedError(
            "chainrule.compile: a Value computed inside map_rows' function was used outside it "
            "other than through what the function returned (kept in a list or on an object, "
            "say). While tracing, map_rows runs the function on one row only, so that Value "
            "stands for the first row alone. Return it from the function instead, or apply the "
            "function in a plain loop"
        )
    ordered = [v for v, is_constant in leaves.items() if is_constant] + [
        v for v, is_constant in leaves.items() if not is_constant
    ]
    for v in ordered:
        where[v] = len(where)
    constant_leaves = ordered[: sum(leaves.values())]
    externals = ordered[len(constant_leaves) :]

    placed: list[tuple[Any, ...]] = []
    node_base, checked_copies, mapped = len(where), {}, []
    for piece, context in laid:
        if isinstance(piece, _Block):
            row_positions = np.array([[where[v] for v in row] for row in piece.rows], dtype=np.intp)
            row_positions = row_positions.reshape(len(piece.rows), piece.n_inputs)
            leaf_positions = np.array([where[v] for v in (*piece.constants, *piece.externals)], dtype=np.intp)
            copies, first, stride = replicate(np, piece, row_positions, leaf_positions, node_base)
            checked_copies[piece] = _checked_copies(np, piece, first, stride).tolist()
            leaves_of_row = piece.n_inputs, piece.constants, piece.externals
            row = Program(*leaves_of_row, piece.placed, piece.output_positions, piece.checked)
            mapped.append(Mapped(len(placed), row, row_positions, leaf_positions))
            placed += copies
            node_base += len(piece.rows) * len(first)
            for p, values in zip(piece.output_positions, piece.results):
                if values is not None:
                    at = first[p - piece.n_leaves] + stride[p - piece.n_leaves] * np.arange(len(values))
                    where.update(zip(values, at.tolist()))
            continue
        (piece_constants, piece_externals, piece_placed, ends_at), (n_known, ends) = piece, context
        n_nodes = sum(count for _, count, _, _, _ in piece_placed)
        table = np.array(
            [where[v] for v in itertools.chain(known[:n_known], piece_constants, piece_externals)],
            dtype=np.intp,
        )
        table = np.concatenate([table, np.arange(node_base, node_base + n_nodes, dtype=np.intp)])
        for rule, count, width, rows, vectors in piece_placed:
            placed.append((rule, count, width, table[np.frombuffer(rows, dtype=np.intp)], vectors))
        where.update(zip(ends, table[ends_at].tolist()))
        node_base += n_nodes
    # Eager's order: the nodes before the first call, that call's rows one after another, ...
    in_order = []
    for i, piece in enumerate(checked):
        in_order += [where[v] for v in piece]
        if i < len(blocks):
            in_order += checked_copies.get(blocks[i], [])
    output_positions = tuple(where[v] for v in outputs)
    leaves_of_outer = len(inputs), tuple(constant_leaves), tuple(externals)
    outer = Program(*leaves_of_outer, placed, output_positions, in_order, tuple(mapped))
    return outer, every_node_used
