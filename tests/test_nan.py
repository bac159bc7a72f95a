"""A nan that goes into an op comes out of it, forward and backward, eager and compiled.

A nan that silently turns into a 0 (``relu(nan) == 0.0`` in an engine written with ``x > 0``)
hides the step where a computation broke. Every op is checked with a nan in each input
position; PyTorch (float64) is the oracle for which outputs and gradients are nan, and the
compiled replay must agree with eager.
"""

import math

import pytest

import chainrule
from chainrule import Value, ops

NAN = math.nan

# Each op: how chainrule applies it to Values, how PyTorch computes the same, and ordinary inputs.
CASES = {
    "+": (lambda x, y: x + y, lambda t, x, y: x + y, (0.7, 1.3)),
    "-": (lambda x, y: x - y, lambda t, x, y: x - y, (0.7, 1.3)),
    "*": (lambda x, y: x * y, lambda t, x, y: x * y, (0.7, 1.3)),
    "/": (lambda x, y: x / y, lambda t, x, y: x / y, (0.7, 1.3)),
    "neg": (lambda x: -x, lambda t, x: -x, (0.7,)),
    "pow": (lambda x, y: x**y, lambda t, x, y: x**y, (0.7, 1.3)),
    "pow, negative base": (lambda x, y: x**y, lambda t, x, y: x**y, (-0.7, 2.0)),
    "rpow": (lambda y: 2.0**y, lambda t, y: 2.0**y, (1.3,)),
    "**": (lambda x: x**3.0, lambda t, x: x**3.0, (0.7,)),
    "exp": (lambda x: x.exp(), lambda t, x: x.exp(), (0.7,)),
    "log": (lambda x: x.log(), lambda t, x: x.log(), (0.7,)),
    "tanh": (lambda x: x.tanh(), lambda t, x: x.tanh(), (0.7,)),
    "sigmoid": (lambda x: x.sigmoid(), lambda t, x: x.sigmoid(), (0.7,)),
    "relu": (lambda x: x.relu(), lambda t, x: t.relu(x), (0.7,)),
    "relu, negative": (lambda x: x.relu(), lambda t, x: t.relu(x), (-0.7,)),
    "softplus": (lambda x: x.softplus(), lambda t, x: t.nn.functional.softplus(x), (0.7,)),
    "sum": (lambda *xs: chainrule.sum_values(xs), lambda t, *xs: t.stack(xs).sum(), (0.7, 1.3, -2.0)),
    "logsumexp": (
        lambda *xs: chainrule.logsumexp(xs),
        lambda t, *xs: t.logsumexp(t.stack(xs), 0),
        (0.7, 1.3, -2.0),
    ),
    # compile's op for detach() inside a trace; x + (detach(x) - x) is PyTorch's way to say it
    "stop_gradient": (
        lambda x: chainrule.engine.apply(ops.STOP_GRADIENT, x),
        lambda t, x: x + (x.detach() - x),
        (0.7,),
    ),
    # chainrule.take's op while compile traces (inputs: the index, then the rows); a nan in the
    # picked row comes out, as with PyTorch indexing
    "take": (
        lambda x: chainrule.engine.apply(ops.TAKE, Value(0.0), x),
        lambda t, x: t.stack([x])[0],
        (0.7,),
    ),
    "dot": (
        lambda w1, w2, x1, x2, b: chainrule.dot([w1, w2], [x1, x2], b),
        lambda t, w1, w2, x1, x2, b: w1 * x1 + w2 * x2 + b,
        (0.7, 1.3, -2.0, 0.5, 0.25),
    ),
}

POSITIONS = [(name, i) for name, (_, _, xs) in CASES.items() for i in range(len(xs))]


def test_every_op_in_the_table_is_covered():
    covered = {name.split(",")[0] for name in CASES}
    assert set(ops.OPS) <= covered


def _with_nan(xs, position):
    return [NAN if i == position else x for i, x in enumerate(xs)]


def _eager(name, numbers):
    f = CASES[name][0]
    leaves = [Value(x) for x in numbers]
    out = f(*leaves)
    out.backward()
    return out.data, [v.grad for v in leaves]


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name,position", POSITIONS)
def test_a_nan_input_gives_a_nan_output(name, position):
    out, _ = _eager(name, _with_nan(CASES[name][2], position))
    assert math.isnan(out)


@pytest.mark.parametrize("name,position", POSITIONS)
def test_nan_outputs_and_gradients_match_pytorch(name, position):
    torch = pytest.importorskip("torch")
    numbers = _with_nan(CASES[name][2], position)
    out, grads = _eager(name, numbers)
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in numbers]
    expected = CASES[name][1](torch, *leaves)
    expected.backward()
    assert _same(out, expected.item())
    for ours, theirs in zip(grads, leaves):
        assert _same(ours, theirs.grad.item()), (grads, [v.grad for v in leaves])


@pytest.mark.parametrize("name,position", POSITIONS)
def test_compiled_nan_matches_eager(name, position):
    pytest.importorskip("numpy")
    f = CASES[name][0]
    numbers = _with_nan(CASES[name][2], position)
    compiled = chainrule.compile(lambda xs: f(*xs))
    compiled(list(CASES[name][2]))  # trace with ordinary numbers, then replay with the nan
    out = compiled(numbers)
    out.backward()
    eager_out, eager_grads = _eager(name, numbers)
    assert _same(out.data, eager_out)
    # The compiled function's inputs are numbers, so check the gradients through a parameter.
    params = [Value(x) for x in numbers]
    traced = chainrule.compile(lambda: f(*params))
    result = traced()
    result.backward()
    for ours, theirs in zip([p.grad for p in params], eager_grads):
        assert _same(ours, theirs)


def test_relu_of_nan_in_a_network_reaches_the_loss():
    from chainrule.nn import MLP

    model = MLP(2, [4, 1])
    assert math.isnan(model([NAN, 1.0]).data)
