"""Code written against micrograd runs unchanged on chainrule, and gives micrograd's numbers.

Oracles: micrograd 0.1.0 itself (when importable), sympy for the README example (exact rational
arithmetic), and the figures printed in micrograd's README.
"""

import math
import random

import pytest
import sympy

import chainrule.nn
from chainrule import Value

# ---------------------------------------------------------------------------------------------
# micrograd's README example


def readme_example(Value):
    """micrograd's README usage example, written against whichever ``Value`` class is passed."""
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return g, a, b


def readme_example_in_sympy():
    """The same computation on sympy symbols; returns g and its derivatives, exact, at (-4, 2)."""
    a, b = sympy.symbols("a b", real=True)

    def relu(x):
        return sympy.Piecewise((x, x > 0), (0, True))

    c = a + b
    d = a * b + b**3
    c = c + (c + 1)
    c = c + (1 + c + (-a))
    d = d + (d * 2 + relu(b + a))
    d = d + (3 * d + relu(b - a))
    e = c - d
    f = e**2
    g = f / 2
    g = g + 10 / f
    point = {a: sympy.Integer(-4), b: sympy.Integer(2)}
    return [sympy.nsimplify(expr.subs(point)) for expr in (g, sympy.diff(g, a), sympy.diff(g, b))]


def test_readme_example_gives_the_readme_numbers():
    g, a, b = readme_example(Value)
    # printed in micrograd's README, to 4 decimals
    assert f"{g.data:.4f}" == "24.7041"
    assert f"{a.grad:.4f}" == "138.8338"
    assert f"{b.grad:.4f}" == "645.5773"


def test_readme_example_matches_sympy():
    g, a, b = readme_example(Value)
    exact = readme_example_in_sympy()
    assert all(x.is_Rational for x in exact)  # nothing was rounded on sympy's side
    assert [g.data, a.grad, b.grad] == pytest.approx([float(x) for x in exact], rel=1e-12)


def test_readme_example_matches_micrograd():
    engine = pytest.importorskip("micrograd.engine")
    ours = readme_example(Value)
    theirs = readme_example(engine.Value)
    assert [ours[0].data, ours[1].grad, ours[2].grad] == pytest.approx(
        [theirs[0].data, theirs[1].grad, theirs[2].grad], rel=1e-12
    )


# ---------------------------------------------------------------------------------------------
# micrograd's demo: an MLP trained with the SVM max-margin loss and hand-written SGD.


def two_moons(n, seed):
    """n points on two interleaved half circles with a little noise; labels -1 and +1."""
    rng = random.Random(seed)
    X, y = [], []
    for i in range(n):
        t = math.pi * rng.random()
        if i % 2 == 0:
            X.append([math.cos(t) + rng.gauss(0, 0.1), math.sin(t) + rng.gauss(0, 0.1)])
            y.append(-1)
        else:
            X.append([1 - math.cos(t) + rng.gauss(0, 0.1), 0.5 - math.sin(t) + rng.gauss(0, 0.1)])
            y.append(1)
    return X, y


def demo_loss(model, Value, X, y):
    """SVM max-margin loss plus L2 regularization, in micrograd's API only; returns (loss, accuracy)."""
    inputs = [list(map(Value, row)) for row in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * score).relu() for yi, score in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in model.parameters())
    accuracy = [(yi > 0) == (score.data > 0) for yi, score in zip(y, scores)]
    return data_loss + reg_loss, sum(accuracy) / len(accuracy)


def demo_step(model, Value, X, y, k):
    """One step of the demo's training loop; returns the loss before the step."""
    total_loss, _ = demo_loss(model, Value, X, y)
    model.zero_grad()
    total_loss.backward()
    learning_rate = 1.0 - 0.9 * k / 100
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    return total_loss.data


def test_demo_training_reduces_the_loss():
    X, y = two_moons(30, seed=0)
    random.seed(1337)
    model = chainrule.nn.MLP(2, [16, 16, 1])
    losses = [demo_step(model, Value, X, y, k) for k in range(12)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0]
    _, accuracy = demo_loss(model, Value, X, y)
    assert 0.0 <= accuracy <= 1.0


def _parameters_and_grads(model):
    return [p.data for p in model.parameters()], [p.grad for p in model.parameters()]


def test_same_seed_gives_micrograds_model_outputs_and_gradients():
    micrograd_nn = pytest.importorskip("micrograd.nn")
    micrograd_engine = pytest.importorskip("micrograd.engine")
    X, y = two_moons(20, seed=1)
    random.seed(7)
    ours = chainrule.nn.MLP(2, [16, 16, 1])
    random.seed(7)
    theirs = micrograd_nn.MLP(2, [16, 16, 1])
    # both draw weights with random.uniform(-1, 1) in the same order
    assert _parameters_and_grads(ours)[0] == _parameters_and_grads(theirs)[0]
    for k in range(3):
        row = [Value(x) for x in X[k]]
        assert ours(row).data == pytest.approx(theirs(list(map(micrograd_engine.Value, X[k]))).data, rel=1e-9)
        loss_ours = demo_step(ours, Value, X, y, k)
        loss_theirs = demo_step(theirs, micrograd_engine.Value, X, y, k)
        assert loss_ours == pytest.approx(loss_theirs, rel=1e-9)
        data_ours, grads_ours = _parameters_and_grads(ours)
        data_theirs, grads_theirs = _parameters_and_grads(theirs)
        assert grads_ours == pytest.approx(grads_theirs, rel=1e-9, abs=1e-12)
        assert data_ours == pytest.approx(data_theirs, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The rest of micrograd's surface


def test_micrograd_aliases_prev_and_op():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    assert c._op == c.op == "*"
    assert c.children == (a, b)
    assert c._prev == {a, b}  # a set, as in micrograd
    assert (a * a)._prev == {a}
    assert a._op == "" and a._prev == set()
    with pytest.raises(AttributeError):
        c._prev = ()
    with pytest.raises(AttributeError):
        c._op = "+"


def test_repr_format():
    a = Value(2.0)
    b = a * 3
    b.label = "b"
    b.backward()
    assert repr(b) == "Value(data=6.0, grad=1.0, label='b')"
    assert repr(a) == "Value(data=2.0, grad=3.0)"


def test_equality_and_hash_are_identity():
    a, b = Value(1.0), Value(1.0)
    assert a == a
    assert a != b
    assert not (a == b)
    assert len({a, b, a}) == 2
    grads = {a: "first", b: "second"}
    assert grads[a] == "first" and grads[b] == "second"
    assert hash(a) == hash(a)


def test_in_place_add_builds_a_new_node():
    c = Value(2.0)
    old = c
    c += 1
    assert c is not old
    assert old.data == 2.0
    assert c.data == 3.0
    assert c.op == "+" and c.children[0] is old
    c *= 2  # likewise for the other operators
    assert c.data == 6.0 and c.children[0].children[0] is old


def test_numbers_on_either_side_of_every_operator():
    a = Value(3.0)
    # each result checked against the same arithmetic on floats
    pairs = [
        (a + 2, 3.0 + 2),
        (2 + a, 2 + 3.0),
        (a - 2, 3.0 - 2),
        (2 - a, 2 - 3.0),
        (a * 2, 3.0 * 2),
        (2 * a, 2 * 3.0),
        (a / 2, 3.0 / 2),
        (2 / a, 2 / 3.0),
        (a**2, 3.0**2),
        (2**a, 2**3.0),
        (a**a, 3.0**3.0),
        (-a, -3.0),
    ]
    for value, expected in pairs:
        assert value.data == expected


def test_one_neuron_hidden_layer_mlp_trains():
    # micrograd itself cannot run MLP(2, [16, 1, 1]): its one-neuron layer returns a bare Value
    X, y = two_moons(10, seed=2)
    random.seed(0)
    model = chainrule.nn.MLP(2, [16, 1, 1])
    loss = demo_step(model, Value, X, y, 0)
    assert math.isfinite(loss)
    assert any(p.grad != 0.0 for p in model.parameters())
