"""copy.deepcopy and pickle of Values, ops and models (a best-model snapshot is kept that way).

Only leaf Values copy, as in PyTorch: a parameter, an input, a constant. A computed Value
refuses with a TypeError instead of copying its graph (which could be as deep as the
program ran, and would be copied again for every Value that shares it). A leaf's gradient
is copied as a number, even when ``backward(create_graph=True)`` made it a Value.
"""

import copy
import pickle
import random

import pytest

from chainrule import Value, ops
from chainrule.losses import mse
from chainrule.nn import MLP, Layer, Module
from chainrule.optim import SGD


def _pickled(x):
    return pickle.loads(pickle.dumps(x))


COPIES = [copy.deepcopy, _pickled]


class Scale(Module):
    """A user-written layer with one parameter (module level, so that pickle can find it)."""

    def __init__(self, s):
        self.s = Value(s, label="s")

    def __call__(self, x):
        return self.s * x

    def parameters(self):
        return [self.s]


class Doubled(Layer):
    """A Layer subclass that overrides __call__."""

    def __call__(self, x):
        return [2 * v for v in self.outputs(x)]


def _train(model, steps=3):
    opt = SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model.zero_grad()
        mse(model([0.5, -1.0]), 2.0).backward()
        opt.step()


@pytest.mark.parametrize("copier", COPIES)
def test_a_copied_model_is_identical_and_independent(copier):
    random.seed(0)
    model = MLP(2, [4, 4, 1])
    model([1.0, 2.0]).backward()  # some gradients, which are copied too
    snapshot = copier(model)
    assert repr(snapshot) == repr(model)
    assert snapshot.state_dict() == model.state_dict()
    assert [p.grad for p in snapshot.parameters()] == [p.grad for p in model.parameters()]
    assert snapshot([0.3, 0.7]).data == model([0.3, 0.7]).data
    assert not {id(p) for p in snapshot.parameters()} & {id(p) for p in model.parameters()}
    before = model.state_dict()
    _train(snapshot)  # training the copy leaves the original alone ...
    assert model.state_dict() == before
    assert snapshot.state_dict() != before
    trained = snapshot.state_dict()
    _train(model)  # ... and the other way round
    assert snapshot.state_dict() == trained


@pytest.mark.parametrize("copier", COPIES)
def test_custom_modules_copy_with_their_behaviour(copier):
    random.seed(1)
    model = MLP(2, [3, 1])
    model.layers.insert(1, Doubled(3, 3))
    model.layers.append(Scale(3.0))
    clone = copier(model)
    assert [type(layer) for layer in clone.layers] == [Layer, Doubled, Layer, Scale]
    assert clone([0.5, 1.5]).data == model([0.5, 1.5]).data
    assert clone.layers[-1].s.label == "s"
    clone.layers[-1].s.data = 0.0
    assert clone([0.5, 1.5]).data == 0.0 and model.layers[-1].s.data == 3.0


@pytest.mark.parametrize("copier", COPIES)
def test_a_shared_parameter_stays_shared_in_the_copy(copier):
    tied = Value(2.0)
    a, b = Scale(0.0), Scale(0.0)
    a.s = b.s = tied
    clone_a, clone_b = copier([a, b])
    assert clone_a.s is clone_b.s and clone_a.s is not tied


@pytest.mark.parametrize("copier", COPIES)
def test_a_leaf_copies_its_data_grad_and_label(copier):
    x = Value(-1.5, label="x")
    x.grad = 0.25
    y = copier(x)
    assert (y.data, y.grad, y.label, y.children, y.op) == (-1.5, 0.25, "x", (), "")
    (y * y).backward()
    assert y.grad == 0.25 - 3.0 and x.grad == 0.25
    assert copier(Value(float("nan"))).data != copier(Value(float("nan"))).data


@pytest.mark.parametrize("copier", COPIES)
def test_a_gradient_that_is_a_value_is_copied_as_its_number(copier):
    x = Value(3.0)
    (x * x * x).backward(create_graph=True)
    assert isinstance(x.grad, Value)  # 3 x**2 = 27, with a graph
    y = copier(x)
    assert type(y.grad) is float and y.grad == x.grad.data == 27.0


@pytest.mark.parametrize("copier", [copy.deepcopy, copy.copy, _pickled])
def test_a_computed_value_refuses_to_copy_clearly(copier):
    x = Value(2.0)
    y = x * 3
    with pytest.raises(TypeError, match=r"made by '\*': only leaf Values"):
        copier(y)
    assert y.data == 6.0 and y.children[0] is x  # untouched


@pytest.mark.parametrize("copier", COPIES)
def test_a_computed_value_inside_a_container_refuses_too(copier):
    y = Value(2.0) * 3
    with pytest.raises(TypeError, match="only leaf Values"):
        copier({"loss": y, "model": MLP(2, [1])})


DEPTH = 100_000


@pytest.mark.parametrize("copier", COPIES)
def test_deep_graphs_never_hit_the_recursion_limit(copier):
    x = Value(0.5)
    y = x
    for _ in range(DEPTH):
        y = y + x  # a chain 100,000 nodes deep
    with pytest.raises(TypeError, match="only leaf Values"):
        copier(y)
    y.backward(create_graph=True)  # x.grad is now a Value with a graph as deep as y's
    assert isinstance(x.grad, Value)
    model = Scale(1.0)
    model.s = x
    clone = copier(model)
    assert clone.s.data == 0.5 and clone.s.grad == float(DEPTH + 1)


def test_registered_ops_pickle_by_name_and_stay_the_same_object():
    for op in ops.OPS.values():
        assert _pickled(op) is op
        assert copy.deepcopy(op) is op and copy.copy(op) is op


def test_an_op_outside_the_table_refuses_to_pickle_clearly():
    custom = ops.Op("custom", lambda x: x, lambda g, out, x: (g,))
    with pytest.raises(TypeError, match="custom.*OPS"):
        pickle.dumps(custom)
    impostor = ops.Op("add", lambda x, y: x - y, lambda g, out, x, y: (g, -g))  # not ops.ADD
    with pytest.raises(TypeError, match="add.*OPS"):
        pickle.dumps(impostor)
