"""The compiler's IR: a ``Program`` of ``Group``s, what every stage hands to the next.

Tracing records Values; ``rewriting.layout`` (or ``mapping.compose``, for a trace with
``map_rows`` calls) turns them into a Program; a backend (see ``backends/``) prepares the
Program and runs it over one float64 array ``data``, a slot per node:

- positions ``0 .. n_inputs``: the arguments' numbers;
- then the constants made inside the function, then the externals (Values made before the
  trace, parameters: their numbers are read afresh at every call);
- then every group's nodes in turn, ``count`` consecutive positions per group.

A group is ``count`` nodes with one op (``rule``) and ``width`` inputs each, at one depth of
the graph, so that a backend can run it as one operation. ``rows`` holds the positions of
each node's inputs, node after node, as a flat buffer of C ``ssize_t`` (numpy's ``intp``).
For dot nodes, ``vectors`` numbers each node's weight vector and input vector in the order
first seen (how a backend recognizes a layer applied to a batch: one matrix product); else None.

A tape of a long chain has a group per node, a million of them, so a Program keeps its groups
as plain tuples in ``Group``'s field order (no object per group beyond the tuple the layout
made); ``program.groups`` gives them as ``Group`` records. ``print(program)`` shows it::

    >>> from chainrule import Value, compile
    >>> w = Value(2.0)
    >>> f = compile(lambda xs: sum(w * x for x in xs).tanh(), backend="numpy")
    >>> _ = f([1.0, 2.0, 3.0])
    >>> print(f.program)
    Program: 3 inputs, 1 constant, 1 external -> 2 nodes in 2 groups, 1 output
      5                  1 x dot        7 inputs each, reading 0..4
      6                  1 x tanh       1 input each, reading 5
      outputs: 6

    (``sum`` starts from the constant 0, and ``w * x1 + ... + w * x3 + 0`` is one dot node of
    three weights, three inputs and a bias.)
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy

__all__ = ["Group", "Mapped", "Program"]


class Group(NamedTuple):
    """``count`` nodes with the same op and number of inputs, at the same depth: one operation."""

    rule: Any  # the ops.Op every node applies
    count: int  # type: ignore[assignment]  # how many nodes (a field that hides tuple.count)
    width: int  # how many inputs each node has
    rows: Any  # their inputs' positions, node after node: a buffer of ssize_t (array or ndarray)
    vectors: Any  # for dot nodes: (weight vector ids, input vector ids) as ssize_t buffers; else None

    def positions(self, np):
        """The inputs' positions as a (count, width) array, a row a node (a view of ``rows``)."""
        return np.frombuffer(self.rows, dtype=np.intp).reshape(self.count, self.width)

    def describe(self, start: int) -> str:
        """One line: where the group's nodes sit, the op, and the range of positions it reads."""
        import numpy as np  # (the compiler needs it anyway)

        inputs = np.frombuffer(self.rows, dtype=np.intp).tolist()
        low, high = (min(inputs), max(inputs)) if inputs else (None, None)
        reads = "-" if low is None else str(low) if low == high else f"{low}..{high}"
        each = f"{self.width} input{'s' if self.width != 1 else ''} each"
        where = str(start) if self.count == 1 else f"{start}..{start + self.count - 1}"
        return f"{where:<14}{self.count:>6} x {self.rule.name:<10} {each}, reading {reads}"


class Mapped(NamedTuple):
    """A ``map_rows`` call whose copies a Program's layout holds (see mapping.py). A backend may
    run ``row``, the function traced on one row, over every row instead of the copies' groups
    (the JAX backend does, with jax.vmap); the others run the copies and ignore this."""

    first_group: int  # where the copies' groups start in the layout: one per group of ``row``
    row: Program  # the row trace, in its own numbering: the row's Values are its inputs
    rows: Any  # (R, k) array of ssize_t: where each row's k Values sit in the outer Program
    leaves: Any  # where the row trace's constants and externals sit in the outer Program


@dataclass(frozen=True, eq=False)
class Program:
    """A traced function laid out for replay: its leaves, its groups, its outputs."""

    n_inputs: int  # the arguments' numbers come first in data
    constants: tuple  # the leaves made from numbers inside the function, in data next: Values
    # (a compiled function's ``program`` gives their numbers: it keeps no Value the trace made)
    externals: tuple  # the other leaves it reads (Values made before the trace), next
    layout: Sequence[tuple]  # the groups, each a tuple in Group's field order (see above)
    outputs: tuple  # the results' positions
    checked: Sequence[int] | numpy.ndarray = ()  # positions of the nodes whose op can raise, in eager's order
    mapped: tuple = ()  # the map_rows calls whose copies the layout holds, as Mapped records

    @property
    def n_fixed(self) -> int:
        """Where the externals start: after the inputs and the constants."""
        return self.n_inputs + len(self.constants)

    @property
    def n_leaves(self) -> int:
        """Where the computed nodes start."""
        return self.n_fixed + len(self.externals)

    @property
    def n_nodes(self) -> int:
        return sum(map(_COUNT, self.layout))

    @property
    def size(self) -> int:
        """The length of the data array: every leaf and every node."""
        return self.n_leaves + self.n_nodes

    @property
    def groups(self) -> list[Group]:
        """The groups as Group records (made on each access: see the module's docstring)."""
        return list(map(Group._make, self.layout))

    def starts(self) -> list[int]:
        """Where each group's first node sits."""
        return list(itertools.accumulate(map(_COUNT, self.layout), initial=self.n_leaves))[:-1]

    def __str__(self) -> str:
        return self.describe()

    def describe(self, most: int = 40) -> str:
        """The program as text: a header, a line a group (the first and last ``most // 2`` past
        ``most`` groups), the outputs."""
        n = len(self.layout)
        lines = [
            f"Program: {_count(self.n_inputs, 'input')}, {_count(len(self.constants), 'constant')}, "
            f"{_count(len(self.externals), 'external')} -> {_count(self.n_nodes, 'node')} in "
            f"{_count(n, 'group')}, {_count(len(self.outputs), 'output')}"
        ]
        shown = range(n) if n <= most else itertools.chain(range(most // 2), range(n - most // 2, n))
        starts, previous = self.starts(), -1
        for i in shown:
            if i != previous + 1:
                lines.append(f"  ... {i - previous - 1:,} groups ...")
            lines.append("  " + Group._make(self.layout[i]).describe(starts[i]))
            previous = i
        outputs = ", ".join(map(str, self.outputs[:20])) + (", ..." if len(self.outputs) > 20 else "")
        lines.append(f"  outputs: {outputs or '-'}")
        if len(self.checked):
            lines.append(f"  checked for errors: {_count(len(self.checked), 'node')}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Program: {_count(self.n_leaves, 'leaf')}, {_count(self.n_nodes, 'node')} in "
            f"{_count(len(self.layout), 'group')}, {_count(len(self.outputs), 'output')}>"
        )


def _count(n: int, noun: str) -> str:
    plural = "leaves" if noun == "leaf" else noun + "s"
    return f"{n:,} {noun if n == 1 else plural}"


_COUNT = operator.itemgetter(1)
