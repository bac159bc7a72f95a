"""The lecture's picture of a graph: n-ary and derived ops drawn as chains of binary ops.

chainrule records a neuron's ``w . x + b`` as one ``dot`` node, ``sum_values`` as one ``sum``
node, and ``a - b``, ``-a``, ``a / b`` as one node each. micrograd and the lecture build all of
these from ``+``, ``*`` and ``**``, and their drawings show every link. ``draw_dot(root,
expand=True)`` and ``explore(root, expand=True)`` draw the graph that micrograd's engine would
build for the same computation:

- ``a - b`` as ``a + (b * -1)``, and ``-a`` as ``a * -1`` (micrograd's ``__sub__``, ``__neg__``);
- ``a / b`` as ``a * b**-1`` (micrograd's ``__truediv__``);
- ``dot(w, x, b)`` as micrograd's Neuron, ``sum((wi*xi for wi, xi in zip(w, x)), b)``, that is
  ``((b + w1*x1) + w2*x2) + ...``;
- ``sum_values(vs)`` as Python's ``sum(vs)``, which starts from 0: ``((0 + v1) + v2) + ...``;
- ``x ** c`` as one ``**c`` oval whose only input is ``x``: micrograd keeps the exponent out of
  the graph.

Ovals carry micrograd's names (``Value._op``: 'ReLU', '**2'); every other op is drawn as it is.
A number in ``a - 2`` or ``a / 4`` stays a box of its own, since chainrule keeps it as a constant
Value; micrograd folds it into one box (-2, 0.25) before building the node.

The links of a chain exist only in the drawing; the real graph is left alone. Their data is
computed as micrograd computes it. Their gradients follow from the node's own: a link feeds only
the next link of its chain, so its gradient is the node's gradient times the local derivatives
along the chain above it. In ``a / b`` drawn as ``a * b**-1``, ``b**-1`` gets ``a * grad``.

>>> from chainrule import Value, topological_order
>>> a, b = Value(6.0, label="a"), Value(3.0, label="b")
>>> c = a - b
>>> c.backward()
>>> [(node.op, node.data, node.grad) for node in expand(topological_order(c))]
[('', 6.0, 1.0), ('', 3.0, -1.0), ('', -1.0, 3.0), ('*', -3.0, 1.0), ('+', 3.0, 1.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import engine, ops
from .engine import Value

__all__ = ["Node", "as_nodes", "expand"]


@dataclass(eq=False)  # each Node is its own box: compared and hashed by identity
class Node:
    """One box of a drawing: a Value of the graph, or a drawing-only link of a chain.

    It has the attributes the drawing code reads from a Value (``label``, ``data``, ``grad``,
    ``op``, ``children``), so both can be drawn alike.
    """

    label: str
    data: float
    grad: float
    op: str = ""  # the text in its oval; '' for a leaf
    rule: str = ""  # the chainrule op whose rule explains it ('+', '*', '**', 'tanh', ...)
    children: tuple[Node, ...] = ()
    shares: tuple[tuple[Node, float], ...] | None = None  # (child, d(self)/d(child)); None: ask value
    value: Value | None = None  # the Value it stands for; None for a link of a chain

    def local_gradients(self) -> list[tuple[Node, float]]:
        """``(child, d(self)/d(child))`` for each input that gets a gradient, repeats included."""
        if self.shares is not None:
            return list(self.shares)
        node_of = {child.value: child for child in self.children}
        pairs = []
        # chainrule's own chain rule at one node, with an incoming gradient of 1 (None marks an
        # input that is a constant by construction, such as the exponent of x ** 2).
        assert self.value is not None  # only a link of a chain has no value, and links have shares
        for child, local in engine._child_gradients(self.value, 1.0, False):
            if local is None or child not in node_of:  # x ** c: micrograd does not draw c
                continue
            pairs.append((node_of[child], _number(local)))
        return pairs


def as_nodes(order: list[Value]) -> list[Node]:
    """One Node per Value of ``order`` (a topological order), drawn as chainrule records it."""
    node_of: dict[Value, Node] = {}
    for value in order:
        children = tuple(node_of[child] for child in value.children)
        node_of[value] = _stand_in(value, value.op, children)
    return list(node_of.values())


def expand(order: list[Value]) -> list[Node]:
    """The boxes micrograd would draw for the graph ``order`` (a topological order), in topological order."""
    node_of: dict[Value, Node] = {}
    made: list[Node] = []  # every box, each after its inputs
    for value in order:
        children = [node_of[child] for child in value.children]
        chain = _CHAINS.get(value._rule, _as_drawn)
        node = chain(value, children, made)
        made.append(node)
        node_of[value] = node
    # Drop the boxes nothing drawn leads to: the exponents of x ** c.
    wanted = set(map(id, _reachable(node_of[order[-1]])))
    return [node for node in made if id(node) in wanted]


# ---------------------------------------------------------------------------------------------
# One function per op that micrograd builds as a chain: given the Value, the boxes of its inputs
# and the list of boxes made so far (to add the chain's links to), return the Value's own box.


def _as_drawn(value: Value, children: list[Node], made: list[Node]) -> Node:
    return _stand_in(value, value._op, tuple(children))  # micrograd's name, e.g. 'ReLU'


def _power(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``x ** c``: one ``**c`` oval with ``x`` its only input."""
    return _stand_in(value, value._op, (children[0],))


def _negation(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``-x`` as ``x * -1``."""
    (x,) = children
    g = _number(value.grad)
    minus_one = _link(made, -1.0, g * x.data)  # its gradient: the other factor times the node's
    return _stand_in(value, "*", (x, minus_one), ((x, -1.0), (minus_one, x.data)), rule="*")


def _subtraction(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``x - y`` as ``x + (y * -1)``."""
    x, y = children
    g = _number(value.grad)
    minus_one = _link(made, -1.0, g * y.data)
    minus_y = _link(made, y.data * -1.0, g, "*", (y, minus_one), ((y, -1.0), (minus_one, y.data)))
    return _stand_in(value, "+", (x, minus_y), ((x, 1.0), (minus_y, 1.0)), rule="+")


def _division(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``x / y`` as ``x * y**-1``."""
    x, y = children
    g = _number(value.grad)
    # d(y**-1)/dy = -1 * y**-2, as micrograd's ** rule computes it.
    slope = -1.0 * _power_of(y.data, -2.0)
    reciprocal = _link(made, _power_of(y.data, -1.0), g * x.data, "**-1", (y,), ((y, slope),))
    return _stand_in(value, "*", (x, reciprocal), ((x, reciprocal.data), (reciprocal, x.data)), rule="*")


def _dot(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``dot(w, x, b)`` as micrograd's Neuron sums it: ``((b + w1*x1) + w2*x2) + ...``."""
    n = len(children) // 2
    if n == 0:  # dot([], [], b) is b: no chain to draw
        return _as_drawn(value, children, made)
    weights, inputs, bias = children[:n], children[n : 2 * n], children[-1]
    g = _number(value.grad)
    products = [
        _link(made, w.data * x.data, g, "*", (w, x), ((w, x.data), (x, w.data)))
        for w, x in zip(weights, inputs)
    ]
    return _sum_chain(value, bias, products, made)


def _sum(value: Value, children: list[Node], made: list[Node]) -> Node:
    """``sum_values(vs)`` as Python's ``sum(vs)``: ``((0 + v1) + v2) + ...``."""
    zero = _link(made, 0.0, _number(value.grad))
    return _sum_chain(value, zero, children, made)


def _sum_chain(value: Value, start: Node, terms: list[Node], made: list[Node]) -> Node:
    """``((start + t1) + t2) + ... + tn``, the last ``+`` being ``value``'s own box."""
    g = _number(value.grad)  # each partial sum feeds the next with d/d(partial) = 1
    total = start
    for term in terms[:-1]:
        total = _link(made, total.data + term.data, g, "+", (total, term), ((total, 1.0), (term, 1.0)))
    last = terms[-1]
    return _stand_in(value, "+", (total, last), ((total, 1.0), (last, 1.0)), rule="+")


_CHAINS: dict[ops.Op | None, Callable[[Value, list[Node], list[Node]], Node]] = {
    ops.NEG: _negation,
    ops.SUB: _subtraction,
    ops.DIV: _division,
    ops.DOT: _dot,
    ops.SUM: _sum,
    ops.POW_CONSTANT: _power,
}


# ---------------------------------------------------------------------------------------------
# Making boxes


def _stand_in(
    value: Value,
    op: str,
    children: tuple[Node, ...],
    shares: tuple[tuple[Node, float], ...] | None = None,
    rule: str | None = None,
) -> Node:
    """The box of a Value of the graph: its own label, data and gradient."""
    return Node(
        label=value.label or "",
        data=value.data,
        grad=_number(value.grad),
        op=op,
        rule=value.op if rule is None else rule,
        children=children,
        shares=shares,
        value=value,
    )


def _link(
    made: list[Node],
    data: float,
    grad: float,
    op: str = "",
    children: tuple[Node, ...] = (),
    shares: tuple[tuple[Node, float], ...] = (),
) -> Node:
    """A drawing-only box (a link of a chain, or a constant such as its -1), added to ``made``."""
    rule = "**" if op.startswith("**") else op
    node = Node(label="", data=data, grad=grad, op=op, rule=rule, children=children, shares=shares)
    made.append(node)
    return node


def _number(x: Value | float) -> float:
    """The float a gradient holds: after ``backward(create_graph=True)`` it is a Value."""
    return float(x.data if isinstance(x, Value) else x)


def _power_of(x: float, exponent: float) -> float:
    """``x ** exponent`` as micrograd computes it; infinite at x == 0, where Python raises."""
    try:
        return x**exponent
    except ZeroDivisionError:  # only a graph made without chainrule's checks gets here
        return float("inf")


def _reachable(root: Node) -> list[Node]:
    """The boxes ``root`` is drawn from, itself included."""
    seen, stack = {id(root): root}, [root]
    while stack:
        for child in stack.pop().children:
            if id(child) not in seen:
                seen[id(child)] = child
                stack.append(child)
    return list(seen.values())
