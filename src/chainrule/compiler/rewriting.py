"""From the traced graph to the tape's layout: which nodes it needs, which fold into others
(chains of + into sums, sums of products into dot products), how they group, and where each
one sits.

``layout`` is the whole step. compiler/_layout.c does the same in C, index for index, when it
was built; this file is the reference, and the fallback.

The C is kept because a benchmark says it pays (benchmarks/bench_trace.py's workloads, tracing
with ``_in_c`` and with it set to None): with this Python alone a trace took 2.0 eager steps on
moons and 2.3 on the GPT step, against 0.6 and 1.2 with the C (the MLP and the ``map_rows``
workloads: 0.1-0.6 either way). Tracing should cost about one eager step, so the C stays.
"""

from __future__ import annotations

import array
import collections
import itertools
import operator
import struct

from .. import engine, ops
from ..engine import Value
from .ir import Program


def layout(inputs, constants, outputs, created):
    """Where everything a trace made goes on the tape.

    ``inputs`` are the leaves standing for the arguments, ``constants`` the set of leaves made
    from numbers inside the function, ``outputs`` the results, ``created`` the nodes computed
    while tracing, in the order made. Returns ``(constant_leaves, externals, groups,
    output_positions)``: the constants and the other leaves the tape reads (Values made before
    the trace: parameters), in the order of their first use; then the groups, each
    ``(rule, count, width, rows, vectors)`` with ``rows`` the positions of each node's
    ``width`` inputs, a row a node, as a flat buffer of C ``ssize_t``, and for dot nodes
    ``vectors``, the numbers of their weight vectors and of their input vectors in the order
    first seen (else None); and the outputs' positions.

    Positions: the inputs first, then the constants, the externals, and each group's nodes
    in turn. A group is the nodes with the same depth in the graph (1 + their deepest
    input's; a leaf's is 0), the same op and the same number of inputs; groups come in order
    of depth, and in the order first met within one depth.
    """
    if _in_c is not None:
        done = _in_c.layout(inputs, constants, outputs, created, _FOLDED_RULES)
        if done is not None:
            return done
    nodes, leaves, uses = _traced_order(outputs, created)
    position = {leaf: i for i, leaf in enumerate(inputs)}
    leaves = [v for v in leaves if v not in position]
    constant_leaves = [v for v in leaves if v in constants]
    externals = [v for v in leaves if v not in constants]
    for v in constant_leaves + externals:
        position[v] = len(position)

    depth = dict.fromkeys(position, 0)
    depth_of = depth.__getitem__
    groups = collections.defaultdict(list)
    for node, rule, children in _rewrite(nodes, uses):
        d = depth[node] = 1 + max(map(depth_of, children), default=0)
        groups[d, rule, len(children)].append((node, children))  # by the op itself: names can repeat
    placed = []
    for key in sorted(groups, key=lambda key: key[0]):  # stable: ties keep first-seen order
        (_, rule, width), members = key, groups[key]
        for node, _ in members:
            position[node] = len(position)
        flat = itertools.chain.from_iterable(children for _, children in members)
        rows = array.array(_SSIZE_T, map(position.__getitem__, flat))
        vectors = None
        if rule is ops.DOT and width % 2 == 1:
            n = width // 2
            vectors = tuple(_vector_ids(rows, len(members), width, offset, n) for offset in (0, n))
        placed.append((rule, len(members), width, rows, vectors))
    return constant_leaves, externals, placed, [position[v] for v in outputs]


def program(
    inputs: list[Value], constants: set[Value], outputs: list[Value], created: list[Value]
) -> Program:
    """The trace as a Program (see ir.py): ``layout``, with every node whose op can raise (see
    ``can_raise``) kept on the tape.

    Eagerly, ``x.log()`` raises on a bad x the moment it is computed, even if nothing uses the
    log. ``layout`` leaves out what the outputs do not need, so such a node goes on the tape as
    an extra output that nobody sees: replay computes it, and raises where eager raises. The
    Program's outputs are the real outputs' positions only, and ``checked`` the positions of
    those *checked* nodes in the order made, which is the order eager meets them in: a replay
    that fails reports the first of them that fails, as eager would.
    """
    checked = raising_nodes(created)
    constant_leaves, externals, placed, positions = layout(inputs, constants, [*outputs, *checked], created)
    n = len(outputs)
    leaves = tuple(constant_leaves), tuple(externals)
    return Program(len(inputs), *leaves, placed, outputs=tuple(positions[:n]), checked=positions[n:])


def can_raise(rule: ops.Op) -> bool:
    """Whether ``rule``'s forward can raise for some numbers (/, log, the powers, take, an op of
    your own), rather than pass nan and inf on."""
    return rule not in _CANNOT_RAISE and rule.forward is not None


def raising_nodes(nodes: list[Value]) -> list[Value]:
    """The nodes whose op can raise, in the order given."""
    rules = list(map(_RULE, nodes))
    raising = {rule for rule in set(rules) if can_raise(rule)}  # a trace uses a few ops only
    if not raising:
        return []
    return list(itertools.compress(nodes, map(raising.__contains__, rules)))  # (a loop in C)


def _vector_ids(rows, count, width, offset, n):
    """Each row's n positions from ``offset`` on (a dot node's weights, or its inputs), numbered
    in the order first seen: how tape.py recognizes a layer applied to a batch."""
    ids: dict[tuple[int, ...], int] = {}
    vectors = (tuple(rows[r * width + offset : r * width + offset + n]) for r in range(count))
    return array.array(_SSIZE_T, [ids.setdefault(vector, len(ids)) for vector in vectors])


# ---------------------------------------------------------------------------------------------
# Rewriting: fold + chains into sums, and sums of products into dot products.


def _traced_order(
    outputs: list[Value], created: list[Value]
) -> tuple[list[Value], list[Value], collections.Counter]:
    """The nodes the outputs need, each after its children; the leaves they read; and how many
    times each node and leaf is used (by a needed node, or as an output).

    ``created`` lists the nodes computed while tracing in the order they were made, which is
    already an order with every node after its children. A node nothing uses is not needed,
    and then neither are its uses of its children: one sweep back from the last node made
    finds them all. Everything else the needed nodes read (inputs, constants, Values made
    before the trace) is a leaf: their own graphs were built earlier, and replay reads their
    data afresh, as for a parameter. Leaves come in the order of their first use, so the tape
    is the same on every run.
    """
    uses = collections.Counter(itertools.chain.from_iterable(map(_CHILDREN, created)))
    uses.update(outputs)
    unused = set()
    for node in reversed(created):  # every user of a node comes after it
        if not uses[node]:
            unused.add(node)
            uses.subtract(node.children)
    nodes = [node for node in created if node not in unused] if unused else created
    on_tape = set(nodes)
    leaves = [v for v, n in uses.items() if n and v not in on_tape]
    return nodes, leaves, uses


_CHILDREN = operator.attrgetter("children")
_RULE = operator.attrgetter("_rule")


def _rewrite(nodes, uses):
    """The tape's ops and children for each computed node; nodes folded into others are left out."""
    # A node that is used once, by another node of the tape, can be folded into its user: a sum
    # or + into the sum that adds it, a product into the sum that becomes a dot product.
    add, sum_, mul = ops.ADD, ops.SUM, ops.MUL
    used_once = [node for node in nodes if uses[node] == 1]
    sums = {node for node in used_once if node._rule is add or node._rule is sum_}
    products = {node for node in used_once if node._rule is mul}

    kept: list[tuple[Value, ops.Op, list[Value]]] = []
    folded: set[Value] = set()
    for node in reversed(nodes):  # users first, so a node is folded before the sweep reaches it
        if node in folded:
            continue
        rule, children = node._rule, node.children
        if rule is add or rule is sum_:
            children = _expand_sum(children, sums, folded)
            terms = [c for c in children if c in products]
            if len(terms) >= 2 and len(children) - len(terms) == 1:
                folded.update(terms)
                weights = [p.children[0] for p in terms]
                xs = [p.children[1] for p in terms]
                others = [c for c in children if c not in products]
                rule, children = ops.DOT, weights + xs + others
            elif len(children) != 2 or rule is sum_:
                rule = sum_
        kept.append((node, rule, children))
    kept.reverse()
    return kept


def _expand_sum(children, sums, folded):
    """Replace each child in ``sums`` by its own children, depth first, without recursion."""
    expanded, stack = [], list(reversed(children))
    while stack:
        child = stack.pop()
        if child in sums:
            folded.add(child)
            stack.extend(reversed(child.children))
        else:
            expanded.append(child)
    return expanded


_FOLDED_RULES = (ops.ADD, ops.SUM, ops.MUL, ops.DOT)
# The ops whose forward never raises: any number in, a number out (nan and inf pass through).
_CANNOT_RAISE = frozenset(
    {
        *_FOLDED_RULES,
        *(ops.SUB, ops.NEG, ops.EXP, ops.TANH, ops.SIGMOID, ops.RELU),
        *(ops.SOFTPLUS, ops.LOGSUMEXP, ops.STOP_GRADIENT),
    }
)
_SSIZE_T = next(code for code in "qli" if array.array(code).itemsize == struct.calcsize("n"))  # numpy's intp


def _load_layout_module():
    if engine._graph is None:  # CHAINRULE_PURE_PYTHON=1, or no C compiler: Python alone
        return None
    try:
        from . import _layout
    except ImportError:
        return None
    if not _layout.setup(Value):
        return None  # it serves the Value of another copy of engine.py (see _slots.h)
    return _layout


_in_c = _load_layout_module()
