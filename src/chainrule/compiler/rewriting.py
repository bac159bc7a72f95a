"""Rewriting the traced graph: chains of + become sums, sums of products become dot products."""

from __future__ import annotations

import collections
import itertools
import operator

from .. import ops
from ..engine import Value

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
