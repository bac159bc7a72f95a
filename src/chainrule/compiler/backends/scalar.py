"""Scalar replay: a thin Program's nodes run one by one in Python, where numpy would only cost.

A scalar RNN or a long chain has one node per depth, so each of the Program's groups is one
node wide, and a numpy call per group (several microseconds each) costs more than eager's
whole work on that node. Where the C table program is not there to run such a Program, it is
replayed node by node instead, with the ops' scalar rules from ``ops.py`` on Python floats:
eager's arithmetic without building Values or sorting the graph. It raises eager's errors
itself and passes nan and inf on as eager does; only ``detect_anomaly`` is left to the numpy
backend. Which Programs are thin: ``is_thin`` below.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from ... import _settings
from ...engine import Value, op_error
from ..ir import Program
from . import numpy as numpy_backend

if TYPE_CHECKING:
    import numpy

name = "scalar"

THIN = 4  # a tape whose groups hold fewer nodes than this on average is replayed node by node


def is_thin(n_nodes: int, n_groups: int) -> bool:
    """Whether a tape of so many nodes in so many groups is thin, to be replayed node by node.
    ``CHAINRULE_SCALAR_REPLAY=0`` says never (the test suite runs the compile tests that way
    too, so that the group-by-group replay is tested on thin tapes as well)."""
    if not _settings.scalar_replay():
        return False
    return n_groups > 0 and n_nodes < THIN * n_groups


def prepare(program: Program, reference: numpy_backend.NumpyProgram | None = None) -> ScalarReplay:
    """The node-by-node replay of ``program``, over the numpy backend's positions."""
    return ScalarReplay(reference or numpy_backend.prepare(program))


class ScalarReplay:
    """The Program's nodes in replay order: each one's rule and the positions of its inputs.

    The groups are thin, so their nodes sit at consecutive positions from ``first`` on, and a
    node's position is ``first`` plus its place in that order. Each position's int is made once
    and shared by every node that reads it: a long chain keeps about 100 bytes a node here.
    """

    def __init__(self, reference: numpy_backend.NumpyProgram) -> None:
        self.reference = reference
        self.outputs, self.checked = reference.outputs, reference.checked
        groups = reference.groups
        self.first = first = reference.first  # the position of the first computed node
        size = groups[-1].end if groups else first
        number = list(range(size))  # one int object per position, shared
        self.rules, self.inputs = [], []
        for group in groups:
            for inputs in group.children.T.tolist():
                self.rules.append(group.rule)
                self.inputs.append(tuple(map(number.__getitem__, inputs)))

    def layout(self) -> list[tuple]:
        return self.reference.layout()

    def forward(self, data: numpy.ndarray) -> bool:
        values = data.tolist()  # Python floats: the scalar rules are eager's own arithmetic
        read = values.__getitem__  # (map with it reads a node's inputs without a Python loop)
        for position, rule, inputs in zip(itertools.count(self.first), self.rules, self.inputs):
            try:
                values[position] = rule.forward(*map(read, inputs))
            except (ValueError, ZeroDivisionError) as error:
                raise op_error(rule, [Value(values[i]) for i in inputs], error) from None
        data[self.first :] = values[self.first :]
        return True

    def backward(self, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray | None) -> bool:
        values, grads = data.tolist(), grad.tolist()
        read = values.__getitem__
        needed = needed.tolist() if needed is not None else None
        last = self.first + len(self.rules) - 1
        for position, rule, inputs in zip(
            itertools.count(last, -1), reversed(self.rules), reversed(self.inputs)
        ):
            if needed is not None and not needed[position]:
                continue  # on the way to another output, or behind a stop_gradient
            try:
                shares = rule.backward(grads[position], values[position], *map(read, inputs))
            except (ValueError, ZeroDivisionError) as error:
                xs = [Value(values[i]) for i in inputs]
                raise op_error(rule, xs, error, stage="backward of ") from None
            for i, share in zip(inputs, shares):
                if share is not None:  # None: an input that is a constant by construction
                    grads[i] += share
        grad[:] = grads
        return True
