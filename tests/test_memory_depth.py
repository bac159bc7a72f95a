"""Deep graphs and memory: backward over a million nodes without recursion, in linear time, and
graphs that reference counting alone frees (no reference cycles).
"""

import gc
import sys
import time
import weakref

import pytest

from chainrule import Value, dot, no_grad, sum_values
from chainrule.nn import MLP

# ---------------------------------------------------------------------------------------------
# 3. Depth

# Runs in a fresh interpreter, so a crash (stack overflow while freeing, say) fails this test
# instead of killing the whole test run.
MILLION_CHAIN = r"""
import sys
from chainrule import Value, topological_order

limit = sys.getrecursionlimit()
a = Value(1.0)
x = a
for _ in range(1_000_000):
    x = x + a          # x_n = x_(n-1) + a, so x_n = (n + 1) a and dx_n/da = n + 1
x.backward()
assert a.grad == 1_000_001.0, a.grad
assert x.grad == 1.0
assert sys.getrecursionlimit() == limit, (limit, sys.getrecursionlimit())
del x                  # freeing a million-deep chain must not overflow the C stack
assert sys.getrecursionlimit() == limit
print("ok")
"""


def test_backward_over_a_million_node_chain(run_python):
    done = run_python(MILLION_CHAIN)
    assert done.stdout.strip() == "ok"
    assert "RecursionError" not in done.stderr


def _chain(length):
    """A chain of `length` nodes alternating between four ops; returns (leaf, root)."""
    leaf = Value(0.5)
    x = leaf
    for i in range(length):
        step = i % 4
        if step == 0:
            x = x * 1.0
        elif step == 1:
            x = -x
        elif step == 2:
            x = x + leaf
        else:
            x = x.tanh()
    return leaf, x


def _backward_seconds(root, repeats=3):
    """The fastest of a few backward passes, with the cyclic collector paused so it cannot land in one."""
    times = []
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            root.backward()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return min(times)


def test_backward_time_is_linear_in_graph_size():
    limit = sys.getrecursionlimit()
    _, small = _chain(100_000)
    _, large = _chain(200_000)
    t_small = _backward_seconds(small)
    t_large = _backward_seconds(large)
    # Linear time gives a ratio near 2; quadratic would give 4. The bound is loose on purpose,
    # because the machine may be busy with other work.
    assert t_large / t_small < 4.0, (t_small, t_large)
    assert sys.getrecursionlimit() == limit


def test_deep_chain_gradient_is_right():
    # x -> x*1 -> -x -> + leaf -> tanh, repeated: check the first few links with hand calculus.
    # With 4 nodes: y = tanh(-(leaf * 1) + leaf) = tanh(0) = 0, dy/dleaf = (1 - 0^2) * (-1 + 1) = 0.
    leaf, y = _chain(4)
    y.backward()
    assert y.data == 0.0
    assert leaf.grad == 0.0
    # With 3 nodes: y = -leaf + leaf = 0, and the two paths cancel: dy/dleaf = -1 + 1 = 0; with
    # 2 nodes: y = -(leaf * 1), dy/dleaf = -1.
    leaf, y = _chain(2)
    y.backward()
    assert leaf.grad == -1.0


# ---------------------------------------------------------------------------------------------
# 8. Memory: no reference cycles, so a graph dies as soon as its root is unreachable.


@pytest.fixture
def gc_off():
    """Turn the cyclic garbage collector off, so only reference counting can free objects."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _every_op_graph():
    """A graph using every op, reusing nodes; returns (root, weakref to a leaf, weakref to an inner node)."""
    a = Value(0.7, label="a")
    b = Value(1.3, label="b")
    c = a * b + a
    inner = (c / b - a) ** 2
    d = sum_values([inner.exp(), (-c).tanh(), c.sigmoid(), a.relu(), 2**a, a**b, b.log()])
    root = dot([a, b], [d, c], inner)
    return root, weakref.ref(a), weakref.ref(inner)


@pytest.mark.parametrize("run_backward", [False, True], ids=["no backward", "after backward"])
def test_graph_is_freed_by_reference_counting(gc_off, run_backward):
    root, leaf, inner = _every_op_graph()
    if run_backward:
        root.backward()
        root.backward()
    assert leaf() is not None and inner() is not None
    del root
    assert inner() is None
    assert leaf() is None


def test_failed_op_leaves_no_references_behind(gc_off):
    root, leaf, inner = _every_op_graph()
    with pytest.raises(ValueError):
        (inner() - 1e9).log()
    with pytest.raises(ZeroDivisionError):
        root / 0
    del root
    assert inner() is None
    assert leaf() is None


def test_no_grad_results_hold_no_references(gc_off):
    a = Value(2.0)
    ref = weakref.ref(a)
    with no_grad():
        y = (a * 3).exp()
    del a
    assert ref() is None
    assert y.data > 0


def test_training_step_graph_is_freed_while_the_model_lives(gc_off):
    import random

    random.seed(3)
    model = MLP(2, [8, 8, 1])
    loss = sum_values([(1 - model([x, -x])).relu() for x in (0.1, 0.5, -0.7)])
    loss.backward()
    hidden = weakref.ref(loss.children[0])
    first_weight = weakref.ref(model.parameters()[0])
    del loss
    assert hidden() is None
    assert first_weight() is not None  # parameters belong to the model, not the graph
