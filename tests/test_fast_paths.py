"""The fast paths of the common ops agree with the op table, the single source of truth.

``Value.__add__`` and friends build their node directly when no mode is on; ``apply`` runs the
table's ``forward``; backward runs the table's rule for both (the C loop runs the common rules
itself). Both must give the same numbers, so every fast op is checked against its table entry here.
"""

import math

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, engine, ops

finite = st.floats(-5.0, 5.0, allow_nan=False).filter(lambda x: abs(x) > 1e-3)

FAST = {
    "x + y": (lambda x, y: x + y, ops.ADD),
    "x + c": (lambda x, y: x + y.data, ops.ADD),
    "c + x": (lambda x, y: x.data + y, ops.ADD),
    "x - y": (lambda x, y: x - y, ops.SUB),
    "c - x": (lambda x, y: x.data - y, ops.SUB),
    "x * y": (lambda x, y: x * y, ops.MUL),
    "x * c": (lambda x, y: x * y.data, ops.MUL),
    "c * x": (lambda x, y: x.data * y, ops.MUL),
    "x * int": (lambda x, y: x * 3, ops.MUL),
    "-x": (lambda x, y: -x, ops.NEG),
    "exp": (lambda x, y: x.exp(), ops.EXP),
    "tanh": (lambda x, y: x.tanh(), ops.TANH),
    "relu": (lambda x, y: x.relu(), ops.RELU),
    "x / y": (lambda x, y: x / y, ops.DIV),
    "x / int": (lambda x, y: x / 4, ops.DIV),
    "|x| ** c": (lambda x, y: (x * x) ** 1.5, ops.POW_CONSTANT),
    "|x| ** -0.5": (lambda x, y: (x * x) ** -0.5, ops.POW_CONSTANT),
    "|x| ** int": (lambda x, y: (x * x) ** 2, ops.POW_CONSTANT),
    "log": (lambda x, y: (x * x).log(), ops.LOG),
    "sigmoid": (lambda x, y: x.sigmoid(), ops.SIGMOID),
    "dot": (lambda x, y: chainrule.dot([x, y], [y, 2.0], x), ops.DOT),
    "sum": (lambda x, y: chainrule.sum_values([x, y, x]), ops.SUM),
}


@hsettings(max_examples=30)
@given(name=st.sampled_from(sorted(FAST)), a=finite, b=finite, g=finite)
def test_a_fast_node_matches_its_table_entry(name, a, b, g):
    build, rule = FAST[name]
    node = build(Value(a), Value(b))
    assert node._rule is rule and node._local is None and "_local" not in vars(node)  # nothing stored
    inputs = [c.data for c in node.children]
    assert node.data == rule.forward(*inputs)
    # backward (the C loop when built, which runs the common rules itself) passes on exactly
    # what the rule in ops.py gives, bit for bit
    shares = chainrule.engine.propagate(node, g)
    for child, theirs in zip(node.children, rule.backward(g, node.data, *inputs)):
        if theirs is not None and node.children.count(child) == 1:
            assert math.copysign(1.0, shares[child]) == math.copysign(1.0, 0.0 + theirs)
            assert shares[child] == theirs or (math.isnan(shares[child]) and math.isnan(theirs))


@hsettings(max_examples=30)
@given(name=st.sampled_from(sorted(FAST)), a=finite, b=finite)
def test_the_fast_path_and_the_general_path_give_the_same_gradients(name, a, b):
    build = FAST[name][0]

    def run():
        x, y = Value(a), Value(b)
        out = build(x, y) * build(y, x)
        out.backward()
        return out.data, x.grad, y.grad

    fast = run()
    with chainrule.detect_anomaly():  # a mode is on, so every op goes through apply and the rules
        general = run()
    assert fast == general  # the same rules run on both paths


def test_no_mode_is_left_counted_after_blocks_that_raise():
    before = len(engine._modes_open)
    for switch in (chainrule.no_grad, chainrule.detect_anomaly, chainrule.enable_grad):
        with pytest.raises(RuntimeError):
            with switch():
                raise RuntimeError("inside")
    assert len(engine._modes_open) == before == 0


def test_a_fast_op_inside_no_grad_records_nothing():
    x = Value(2.0)
    with chainrule.no_grad():
        y = (x * 3.0 + 1.0).tanh()
    assert y.children == () and y.data == math.tanh(7.0)
    assert (x * 3.0).children[0] is x  # and outside the block, the graph is recorded again


def test_numbers_that_are_not_float_or_int_take_the_general_path():
    from fractions import Fraction

    x = Value(2.0)
    assert (x * Fraction(1, 2)).data == 1.0
    assert (x + True).data == 3.0  # a bool is a real number, as in Python
    with pytest.raises(TypeError):
        x * "3"
