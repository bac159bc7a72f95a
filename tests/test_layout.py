"""compiler/_layout.c, the tape's layout in C, against rewriting.layout's Python, index for index.

The C version must give exactly what the Python one gives (the same leaves in the same order,
the same groups with the same rows, the same output positions) on every traced graph, and
hand anything unusual back to Python.
"""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")  # chainrule.compile is the `fast` extra

import chainrule  # noqa: E402
from chainrule import Value, engine, logsumexp, sum_values, take  # noqa: E402
from chainrule.compiler import rewriting, tracing  # noqa: E402
from chainrule.losses import cross_entropy, hinge, l2  # noqa: E402
from chainrule.nn import MLP  # noqa: E402

pytestmark = pytest.mark.skipif(rewriting._in_c is None, reason="compiler/_layout.c is not built here")


def traced_parts(fn, *args):
    """What a trace hands to the tape: (inputs, constants, outputs, created)."""
    caught = []

    def catch(inputs, constants, outputs, created):
        caught.append((inputs, constants, outputs, created))
        raise StopIteration

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracing, "program", catch)  # (rewriting.program, which lays them out)
        with pytest.raises(StopIteration):
            chainrule.compile(fn)(*args)
    return caught[0]


def both_layouts(parts):
    in_c = rewriting._in_c.layout(*parts, rewriting._FOLDED_RULES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewriting, "_in_c", None)
        in_python = rewriting.layout(*parts)
    return in_c, in_python


def comparable(layout):
    constants, externals, groups, outputs = layout
    return (
        [id(v) for v in constants],
        [id(v) for v in externals],
        [
            (id(rule), count, width, bytes(rows), vectors and tuple(map(bytes, vectors)))
            for rule, count, width, rows, vectors in groups
        ],
        list(outputs),
    )


def assert_same_layout(fn, *args):
    in_c, in_python = both_layouts(traced_parts(fn, *args))
    assert in_c is not None
    assert comparable(in_c) == comparable(in_python)
    return in_python


def random_function(seed: int, size: int):
    """Sums and products to fold (chains of +, sums of products, shared terms), every kind of
    op, constants, parameters, unused work and several outputs."""
    rng = random.Random(seed)
    params = [Value(rng.uniform(-1, 1)) for _ in range(4)]
    made_before = params[0] * params[1]  # a computed Value made before the trace: an external
    plan = [(rng.randrange(12), rng.random(), rng.random(), rng.random()) for _ in range(size)]

    def fn(xs):
        pool = [*xs, *params, made_before]
        for kind, r, s, t in plan:
            a, b, c = (pool[int(u * len(pool))] for u in (r, s, t))
            if kind == 0:
                v = a + b
            elif kind == 1:
                v = a * b
            elif kind == 2:
                v = a * b + b * c + 1.0  # a dot
            elif kind == 3:
                v = sum(x * y for x, y in zip((a, b, c), (c, a, b)))  # 0 + ..., a dot with a constant
            elif kind == 4:
                v = a + b + c + a  # a chain: one sum
            elif kind == 5:
                v = sum_values([a * b, c * a, b])
            elif kind == 6:
                v = (a * 0.5).tanh() - c
            elif kind == 7:
                v = logsumexp([a, b]) + take([a, b, c], xs[0])
            elif kind == 8:
                a * b + c  # unused work
                v = a.relu()
            elif kind == 9:
                v = engine.dot([a, b], [c, c], a)
            elif kind == 10:
                v = (b * b + 1.0) ** 0.5 + a.detach()
            else:
                v = a * b * c
            pool.append(v)
        return [pool[-1], pool[len(pool) // 2], sum_values(pool[-4:])]

    return fn


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(0, 50))
def test_c_and_python_lay_out_every_traced_graph_the_same(seed, size):
    assert_same_layout(random_function(seed, size), [1.0, 0.5, -2.0])


def test_c_and_python_lay_out_the_benchmarks_the_same():
    random.seed(0)
    model = MLP(3, [8, 8, 2])
    X = [[0.1 * i, -0.2 * i, 0.3] for i in range(6)]

    def mlp_loss(X):
        return cross_entropy([model(x) for x in X], [0, 1, 1, 0, 1, 0]) + 1e-4 * l2(model.parameters())

    layout = assert_same_layout(mlp_loss, X)
    assert "dot" in [rule.name for rule, *_ in layout[2]]

    def hinge_loss(X, y):
        return hinge([model(x)[0] for x in X], y)

    assert_same_layout(hinge_loss, X, [1.0, -1.0] * 3)


def test_an_unusual_graph_is_handed_back_to_python():
    x = Value(1.0)
    y = x * 2.0
    z = y + x
    listed_twice = [y, z, y]
    assert rewriting._in_c.layout([x], set(), [z], listed_twice, rewriting._FOLDED_RULES) is None
    assert (
        rewriting._in_c.layout([x], set(), [z, 2.0], [y, z], rewriting._FOLDED_RULES) is None
    )  # not a Value
    odd = Value(3.0)
    odd.children, odd._rule = [x], chainrule.ops.NEG  # a list, not a tuple, set by hand
    assert rewriting._in_c.layout([x], set(), [odd], [odd], rewriting._FOLDED_RULES) is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewriting, "_in_c", None)
        constants, externals, groups, outputs = rewriting.layout([x], set(), [odd], [odd])
    assert (constants, externals, outputs) == ([], [], [1])
    assert [
        (rule.name, count, width, list(rows), vectors) for rule, count, width, rows, vectors in groups
    ] == [("neg", 1, 1, [0], None)]


def test_a_long_chain_lays_out_the_same_without_recursion():
    def chain(x):
        for _ in range(20000):
            x = x * 0.999 + 0.001
        return x

    constants, _, groups, _ = assert_same_layout(chain, 1.0)
    assert len(constants) == 40000
    assert [rule.name for rule, *_ in groups] == ["*", "+"] * 20000  # a group per level


@pytest.mark.parametrize("repeat_a_pair", [False, True])
def test_a_layer_on_a_batch_in_any_order_is_recognized_alike(repeat_a_pair, loss_and_grads):
    from chainrule.compiler.backends import numpy as tape_module

    rng = random.Random(7)
    W = [[Value(rng.uniform(-1, 1)) for _ in range(3)] for _ in range(4)]
    b = [Value(0.1 * i) for i in range(4)]
    pairs = [(i, j) for i in range(4) for j in range(5)]
    rng.shuffle(pairs)
    if repeat_a_pair:
        pairs[-1] = pairs[0]  # one (weights, inputs) pair twice, another missing: not a full product

    def layer(X):
        return sum_values([engine.dot(W[i], X[j], b[i]) for i, j in pairs])

    X = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(5)]
    _, _, groups, _ = assert_same_layout(layer, X)
    dots = [g for g in groups if g[0] is chainrule.ops.DOT]
    assert len(dots) == 1 and dots[0][4] is not None
    f = chainrule.compile(layer)
    f(X)
    matmuls = [g for g in f.last_tape.groups if isinstance(g, tape_module._MatmulGroup)]
    assert len(matmuls) == (0 if repeat_a_pair else 1)
    params = [*b, *(w for row in W for w in row)]
    compiled, got = loss_and_grads(f, params, X)
    eager, expected = loss_and_grads(layer, params, [[Value(x) for x in row] for row in X])
    assert [compiled, *got] == pytest.approx([eager, *expected], rel=1e-12, abs=1e-12)
