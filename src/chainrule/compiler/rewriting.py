"""Rewriting the traced graph: chains of + become sums, sums of products become dot products."""

from __future__ import annotations

import collections
import itertools
import operator

from .. import ops
from ..engine import Value

# ---------------------------------------------------------------------------------------------
# Rewriting: fold + chains into sums, and sums of products into dot products.


def _traced_order(outputs, created) -> tuple[list[Value], list[Value], collections.Counter]:
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


def _rewrite(nodes, uses):
    """The tape's ops and children for each computed node; nodes folded into others are left out."""
    # A node that is used once, by another node of the tape, can be folded into its user: a sum
    # or + into the sum that adds it, a product into the sum that becomes a dot product.
    add, sum_, mul = ops.ADD, ops.SUM, ops.MUL
    used_once = [node for node in nodes if uses[node] == 1]
    sums = {node for node in used_once if node._rule is add or node._rule is sum_}
    products = {node for node in used_once if node._rule is mul}

    kept, folded = [], set()
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
