"""chainrule.take: eager indexing, and a gather that chainrule.compile records and replays.

Oracles: eager chainrule (plain list indexing) for values and gradients, finite differences of
the compiled function itself, and sympy's derivative of the same expression written by hand.
"""

import math
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, no_grad, take

np = pytest.importorskip("numpy")  # the traced half needs chainrule.compile


def table(rows, cols, seed=0):
    rng = random.Random(seed)
    return [[Value(rng.uniform(-1.0, 1.0)) for _ in range(cols)] for _ in range(rows)]


def parameters(rows):
    return [v for row in rows for v in row]


def values_and_grads(fn, params, *args):
    """fn(*args)'s number and every parameter's gradient, from zeroed gradients."""
    for p in params:
        p.grad = 0.0
    out = fn(*args)
    out.backward()
    return out.data, [p.grad for p in params]


def assert_close(compiled, eager, what):
    assert len(compiled) == len(eager)
    for i, (c, e) in enumerate(zip(compiled, eager)):
        assert math.isclose(c, e, rel_tol=1e-12, abs_tol=1e-12), f"{what}[{i}]: {c!r} != {e!r}"


# ---------------------------------------------------------------------------------------------
# Eager: plain indexing, with the errors list indexing would give, named.


def test_eager_take_is_plain_indexing():
    W = table(3, 2)
    assert take(W, 1) is W[1]
    assert take(W, -1) is W[-1]
    assert take(W[0], Value(1.0)) is W[0][1]  # a Value index is read as its number
    assert take(W, 2.0) is W[2]  # a whole float is an integer, as an input of compile would be


@pytest.mark.parametrize("index", [3, -4, 10**30, Value(3.0)])
def test_eager_out_of_range_is_an_index_error(index):
    with pytest.raises(IndexError, match="take: index .* is out of range for 3 rows"):
        take(table(3, 2), index)


@pytest.mark.parametrize("index", [1.5, math.nan, math.inf, -math.inf, "1", True, None, Value(math.nan)])
def test_eager_non_integer_index_is_a_type_error(index):
    # Regression: nan and inf raised ValueError and OverflowError from int() before.
    with pytest.raises(TypeError, match="take: index must be an integer"):
        take(table(3, 2), index)


# ---------------------------------------------------------------------------------------------
# Compiled: the index is an input, so each replay picks anew.


def embed_and_score(W, tokens):
    """Sum over positions of a product of the picked row's entries (uses every column)."""
    total = 0.0
    for t in tokens:
        a, b, c = take(W, t)
        total = total + a * b.tanh() + c * c
    return total


@pytest.mark.parametrize("seed", range(3))
def test_compiled_take_matches_eager_with_new_repeated_and_negative_indices(seed):
    W = table(5, 3, seed)
    params = parameters(W)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    rng = random.Random(seed)
    calls = [[0, 1, 2, 3]] + [[rng.randrange(-5, 5) for _ in range(4)] for _ in range(6)] + [[4, 4, 4, 4]]
    for tokens in calls:
        compiled = values_and_grads(f, params, tokens)
        eager = values_and_grads(embed_and_score, params, W, tokens)
        assert_close([compiled[0]], [eager[0]], f"loss for {tokens}")
        assert_close(compiled[1], eager[1], f"grads for {tokens}")
    assert len(f.tapes) == 1  # one trace served every call of that length


def test_take_of_one_value_picks_a_target_like_cross_entropy():
    W = table(1, 4)[0]

    def nll(logits, target):
        return chainrule.logsumexp(logits) - take(logits, target)

    f = chainrule.compile(lambda target: nll([w * 2.0 for w in W], target))
    for target in [0, 3, 1, -2]:
        compiled = values_and_grads(f, W, target)
        eager = values_and_grads(lambda t: nll([w * 2.0 for w in W], t), W, target)
        assert_close([compiled[0]], [eager[0]], "loss")
        assert_close(compiled[1], eager[1], "grads")


def test_gradient_reaches_only_the_picked_rows():
    W = table(4, 3)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    _, grads = values_and_grads(f, parameters(W), [1, 3])
    for i in range(len(W)):
        touched = any(g != 0.0 for g in grads[3 * i : 3 * i + 3])
        assert touched == (i in (1, 3)), f"row {i}"


@pytest.mark.parametrize("backend", ["numpy", "c", "auto"])
def test_rows_a_take_did_not_pick_pass_no_gradient_nor_their_errors(backend):
    # Regression: eagerly take is plain indexing, so an unpicked row's graph is not visited by
    # backward; the compiled tape's take node sent it a zero, which met y ** 0.5's infinite
    # slope at 0 (a ZeroDivisionError) and x ** x's exponent gradient at x < 0 (a ValueError).
    pytest.importorskip("numpy")
    y = Value(0.0)

    def fn(x):
        picked = take([x[1] * 2.0, y**0.5, x[1] ** x[1]], x[0])
        return picked * x[1]

    def outcome(run, args):
        """(result, y's gradient), or the error backward raised."""
        y.grad = 0.0
        result = run(args)
        try:
            result.backward()
        except (ValueError, ZeroDivisionError) as error:
            return type(error), str(error)
        return result.data, y.grad

    fast = chainrule.compile(fn, backend=backend)
    for i, x1 in [(0.0, 3.0), (0.0, -2.0), (-3.0, 3.0), (2.0, 3.0), (2.0, -2.0), (1.0, 4.0)]:
        expected = outcome(fn, [Value(i), Value(x1)])
        assert outcome(fast, [i, x1]) == expected, (i, x1)
    assert outcome(fast, [0.0, -2.0]) == (8.0, 0.0)  # unpicked: no error, no gradient
    assert outcome(fast, [2.0, -2.0])[0] is ValueError  # picked, and eager raises there too
    assert outcome(fast, [1.0, 4.0])[0] is ZeroDivisionError


@pytest.mark.parametrize("backend", ["numpy", "c", "auto"])
def test_an_index_computed_by_an_op_gets_no_gradient_nor_its_errors(backend):
    # Regression: (-2) ** x's slope in x raises at a negative base; eager take never sends the
    # index a gradient, but the compiled tape ran every node's backward (a ValueError).
    pytest.importorskip("numpy")

    def fn(x):
        return take([x[0], x[1] * x[1]], (-2.0) ** x[2]) * 3.0  # the index: 1 at x[2] = 0

    fast = chainrule.compile(fn, backend=backend)
    for x in ([1.5, -2.0, 0.0], [0.5, 4.0, 0.0]):
        xs = [Value(v) for v in x]
        eager = fn(xs)
        eager.backward()
        got = fast(x)
        got.backward()  # no error, as eagerly
        assert got.data == eager.data == 3.0 * x[1] ** 2


def test_an_index_computed_from_inputs_and_a_parameter_index_are_recorded():
    W = table(4, 3)
    shift = Value(1.0)  # a parameter: replay reads its number afresh
    f = chainrule.compile(lambda t: take(W, t + 1)[0] + take(W, shift)[2])
    assert f(0).data == W[1][0].data + W[1][2].data
    shift.data = 3.0
    assert f(2).data == W[3][0].data + W[3][2].data


def test_no_trace_warning_and_one_trace_for_every_document_of_a_length():
    W = table(6, 3)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TraceWarning would fail the test
        for tokens in ([0, 1, 2], [5, 5, 0], [3, 2, 1]):
            f(tokens).backward()
    assert len(f.tapes) == 1


def test_finite_differences_of_the_compiled_function():
    W = table(4, 3, seed=7)
    params = parameters(W)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    tokens = [2, 0, 2]
    _, grads = values_and_grads(f, params, tokens)
    h = 1e-6
    for p, g in zip(params, grads):
        x = p.data
        p.data = x + h
        up = f(tokens).data
        p.data = x - h
        down = f(tokens).data
        p.data = x
        assert math.isclose(g, (up - down) / (2 * h), rel_tol=1e-6, abs_tol=1e-8)


def test_gradient_matches_sympy():
    sympy = pytest.importorskip("sympy")
    rows, cols, tokens = 3, 3, [2, 0, 2]
    W = table(rows, cols, seed=3)
    symbols = [[sympy.Symbol(f"w{i}{j}") for j in range(cols)] for i in range(rows)]
    expr = sum(symbols[t][0] * sympy.tanh(symbols[t][1]) + symbols[t][2] ** 2 for t in tokens)
    at = {symbols[i][j]: W[i][j].data for i in range(rows) for j in range(cols)}
    f = chainrule.compile(lambda toks: embed_and_score(W, toks))
    value, grads = values_and_grads(f, parameters(W), tokens)
    assert math.isclose(value, float(expr.subs(at)), rel_tol=1e-12)
    expected = [float(sympy.diff(expr, s).subs(at)) for row in symbols for s in row]
    assert_close(grads, expected, "d/dw")


@settings(max_examples=25)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 4)),
    calls=st.lists(st.lists(st.integers(-100, 100), min_size=3, max_size=3), min_size=1, max_size=4),
)
def test_property_compiled_take_equals_eager_indexing(shape, calls):
    rows, cols = shape
    W = table(rows, cols, seed=rows * 10 + cols)
    params = parameters(W)

    def fn(W, tokens):
        picked = [take(W, t) for t in tokens]
        return sum((x * (i + 1.0) for i, row in enumerate(picked) for x in row), Value(0.0)).exp()

    f = chainrule.compile(lambda tokens: fn(W, tokens))
    for tokens in calls:
        tokens = [t % rows - (rows if t % 2 else 0) for t in tokens]  # in range, some negative
        compiled = values_and_grads(f, params, tokens)
        eager = values_and_grads(fn, params, W, tokens)
        assert_close([compiled[0]], [eager[0]], "value")
        assert_close(compiled[1], eager[1], "grads")


# ---------------------------------------------------------------------------------------------
# Errors on replay are eager's, and leave everything as it was.


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (4, IndexError, "take: index 4 is out of range for 4 rows"),
        (-5, IndexError, "take: index -5 is out of range for 4 rows"),
        (1.5, TypeError, "take: index must be an integer, got 1.5"),
        (math.nan, TypeError, "take: index must be an integer, got nan"),
        (math.inf, TypeError, "take: index must be an integer, got inf"),
    ],
)
def test_a_bad_index_on_replay_raises_like_eager_and_changes_nothing(bad, error, match):
    W = table(4, 3)
    params = parameters(W)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    f([0, 1]).backward()
    grads = [p.grad for p in params]
    with pytest.raises(error, match=match):
        embed_and_score(W, [0, bad])
    with pytest.raises(error, match=match):
        f([0, bad])
    assert [p.grad for p in params] == grads
    assert len(f.tapes) == 1
    assert math.isclose(f([3, 2]).data, embed_and_score(W, [3, 2]).data, rel_tol=1e-12)  # still works


def test_a_bad_index_while_tracing_raises_like_eager():
    W = table(4, 3)
    f = chainrule.compile(lambda tokens: embed_and_score(W, tokens))
    with pytest.raises(IndexError, match="out of range for 4 rows"):
        f([9])
    assert not f.tapes


def test_indexing_a_list_with_a_traced_number_says_to_use_take():
    W = table(3, 2)
    f = chainrule.compile(lambda t: W[t][0] * 2.0)
    with pytest.raises(TypeError, match=r"chainrule\.take\(rows, index\)"):
        f(1)


def test_indexing_a_list_with_any_value_says_to_use_take():
    W = table(3, 2)
    with pytest.raises(TypeError, match=r"chainrule\.take\(rows, index\)"):
        W[Value(1.0)]  # eager: a Value is not an int
    f = chainrule.compile(lambda t: W[t * 1.0][0])  # traced, and computed from the input
    with pytest.raises(TypeError, match=r"chainrule\.take\(rows, index\)"):
        f(1)
    assert W[int(Value(1.0).data)] is W[1]


def test_ragged_or_mixed_rows_cannot_be_picked_by_a_traced_index():
    ragged = [[Value(1.0)], [Value(2.0), Value(3.0)]]
    with pytest.raises(ValueError, match="different lengths"):
        chainrule.compile(lambda t: take(ragged, t)[0])(0)
    mixed = [[Value(1.0)], Value(2.0)]
    with pytest.raises(TypeError, match="all be lists"):
        chainrule.compile(lambda t: take(mixed, t) * 1.0)(1)
    with pytest.raises(TypeError, match="take: inputs must be Values or real numbers"):
        chainrule.compile(lambda t: take(["a", "b"], t) * 1.0)(1)


def test_take_of_plain_numbers_and_under_no_grad():
    w = Value(2.0)
    numbers_row = [10.0, 20.0, 30.0]
    f = chainrule.compile(lambda t: w * take(numbers_row, t))
    assert f(2).data == 60.0
    assert f(0).data == 20.0

    W = table(3, 1)
    params = parameters(W)

    def g(t):
        with no_grad():
            frozen = take(W, t)[0]  # recomputed on replay, but no gradient flows through it
        return frozen * take(W, t)[0]

    h = chainrule.compile(g)
    for t in (0, 2):
        value, grads = values_and_grads(h, params, t)
        assert value == W[t][0].data ** 2
        assert grads == [W[t][0].data if i == t else 0.0 for i in range(3)]
