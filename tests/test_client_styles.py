"""What the micrograd family's scripts do with a Value, run on chainrule as they are written.

Eureka Labs' course micrograd stores attributes on Values (its AdamW keeps ``p.m`` and ``p.v``;
its model builder tags nodes for drawing), the pure-Python GPT scripts read ``_children`` and
``_local_grads``, and PyTorch users call ``float(v)``. The helpers below are written here in
those scripts' style; their numbers are checked against plain-float arithmetic.
"""

import math
import warnings

import pytest

import chainrule
from chainrule import Value
from chainrule.nn import MLP

# ---------------------------------------------------------------------------------------------
# float(v)


def test_float_of_a_value_is_its_number():
    x = Value(2.5)
    y = x * x + 1
    assert float(y) == 7.25 and type(float(y)) is float
    assert float(x) == x.data
    assert math.exp(x) == math.exp(2.5)  # math's functions take it as a number, as with a tensor


def test_float_of_a_parameter_and_of_a_bool_valued_leaf():
    model = MLP(2, [1])
    w = model.parameters()[0]
    assert float(w) == w.data
    assert float(Value(True)) == 1.0


def test_float_inside_a_compiled_function_warns_as_a_data_read_at_the_callers_line():
    pytest.importorskip("numpy")

    def f(a):
        return a * float(a)  # the number is frozen into the trace: 2 * a on every call

    fast = chainrule.compile(f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fast(2.0).data == 4.0
    assert len(caught) == 1 and issubclass(caught[0].category, chainrule.TraceWarning)
    assert "read .data of a traced value" in str(caught[0].message)
    assert caught[0].filename == __file__  # the user's line, not chainrule's
    assert fast(3.0).data == 6.0  # frozen, as the warning says (eager would give 9)


# ---------------------------------------------------------------------------------------------
# The GPT scripts' _children and _local_grads


def _scripts_backward(root):
    """The scripts' own backward, written against their attribute names."""
    topo, visited = [], set()

    def build_topo(v):
        if v not in visited:
            visited.add(v)
            for child in v._children:
                build_topo(child)
            topo.append(v)

    build_topo(root)
    grads = {root: 1.0}
    for v in reversed(topo):
        for child, local_grad in zip(v._children, v._local_grads, strict=True):
            grads[child] = grads.get(child, 0.0) + local_grad * grads.get(v, 0.0)
    return grads


@pytest.mark.parametrize(
    "build",
    [
        lambda a, b: a * b + a,
        lambda a, b: (a * b).tanh() - b / a,
        lambda a, b: (a**2 + b**3).log() + a.exp() * b.relu(),
        lambda a, b: (a * b).sigmoid() + (-a).relu() + chainrule.sum_values([a, b, a * b]),
        lambda a, b: chainrule.dot([a, b], [b, 2.0], a) + a**b,
        lambda a, b: a.softplus() * chainrule.logsumexp([a, b]),
    ],
)
def test_the_scripts_backward_over_children_and_local_grads_matches_chainrules(build):
    a, b = Value(0.7), Value(1.3)
    out = build(a, b)
    grads = _scripts_backward(out)
    out.backward()
    assert grads[a] == pytest.approx(a.grad, rel=1e-12)
    assert grads[b] == pytest.approx(b.grad, rel=1e-12)


def test_children_in_order_and_local_grads_as_numbers():
    x, y = Value(3.0), Value(-2.0)
    assert (x * y)._children == (x, y) and (x * y)._local_grads == (-2.0, 3.0)
    assert (y - x)._children == (y, x) and (y - x)._local_grads == (1.0, -1.0)
    p = x**3  # the scripts' x ** c has x alone as its child
    assert p._children == (x,) and p._local_grads == (27.0,)
    t = x.tanh()
    assert t._local_grads == (pytest.approx(1 - math.tanh(3.0) ** 2, rel=1e-15),)
    assert x._children == () and x._local_grads == ()
    assert all(type(g) is float for g in (x * y)._local_grads)


def test_local_grads_of_a_node_with_a_closure_says_why_there_are_none():
    a = Value(2.0)
    out = Value(a.data * 2, (a,), "double")

    def _backward():
        a.grad += 2 * out.grad

    out._backward = _backward
    with pytest.raises(AttributeError, match="_backward closure"):
        out._local_grads  # noqa: B018 (the read is the test)
