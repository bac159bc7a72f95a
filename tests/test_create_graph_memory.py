"""backward(create_graph=True) leaves no reference cycles behind for the garbage collector.

With the collector off, a graph must be freed by reference counting alone as soon as nothing
refers to it. A leaf's gradient graph refers back to the leaf (d/dx x^2 = 2x contains x), as in
PyTorch, so that one is freed once the leaf's gradient is reset (``zero_grad``, ``grad = None``);
every other node keeps the plain number of its gradient, so no intermediate node holds a graph
that refers back to itself.
"""

import gc
import weakref

import pytest

import chainrule
from chainrule import Value, autograd
from chainrule.nn import MLP


@pytest.fixture
def no_collector():
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def _one_round(params):
    """A loss with intermediates, its create_graph gradients, and a gradient penalty's backward."""
    x, y = params
    hidden = (x * y).tanh() * x + (y * y).exp()
    loss = hidden * hidden
    loss.backward(create_graph=True)
    penalty = x.grad * x.grad + y.grad * y.grad
    for p in params:
        p.grad = 0.0
    penalty.backward()
    return weakref.ref(loss), weakref.ref(hidden), weakref.ref(penalty)


def test_intermediate_nodes_are_freed_without_the_collector(no_collector):
    params = [Value(0.3), Value(-0.7)]
    refs = _one_round(params)
    for p in params:
        p.grad = 0.0  # zero_grad: the leaves let go of their gradient graphs
    assert [r() for r in refs] == [None, None, None]


def test_intermediate_nodes_keep_the_number_of_their_gradient():
    x = Value(3.0)
    h = x * x
    y = h * h  # dy/dh = 2h = 18, dy/dx = 4x^3 = 108
    y.backward(create_graph=True)
    assert h.grad == 18.0 and type(h.grad) is float
    assert isinstance(x.grad, Value) and x.grad.data == 108.0
    assert autograd.grad(x.grad, [x]) == [12 * 3.0**2]


def test_repeated_training_rounds_do_not_grow_memory(no_collector):
    import random

    random.seed(0)
    model = MLP(2, [4, 1], activation="tanh")
    refs = []
    for _ in range(20):
        model.zero_grad()
        loss = (model([0.5, -0.25]) - 1.0) ** 2
        loss.backward(create_graph=True)
        refs.append(weakref.ref(loss))
        del loss
    model.zero_grad()
    assert all(r() is None for r in refs)


def test_a_leaf_lets_go_of_its_gradient_graph_when_grad_is_reset(no_collector):
    x = Value(0.5)
    y = x**4
    y.backward(create_graph=True)
    graph = weakref.ref(x.grad)
    y_ref = weakref.ref(y)
    del y
    x.grad = None
    assert graph() is None and y_ref() is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: chainrule.grad(chainrule.grad(lambda x: x**3 * x.tanh()))(0.7),
        lambda: chainrule.hessian(lambda x, y: x * x * y + y.exp())(1.0, 2.0),
        lambda: chainrule.hvp(lambda x, y: x * x * y, [1.0, 2.0], [1.0, 0.0]),
    ],
    ids=["grad of grad", "hessian", "hvp"],
)
def test_the_functional_api_leaves_nothing_for_the_collector(no_collector, call):
    call()  # warm up caches
    before = len(gc.get_objects())
    for _ in range(50):
        call()
    assert len(gc.get_objects()) - before < 50
