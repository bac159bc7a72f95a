"""chainrule.map_rows: the plain loop eagerly; while chainrule.compile traces, one row traced and its
tape copied for every row (compiler/mapping.py).

The oracles: eager chainrule on the same numbers (tested elsewhere against sympy, finite
differences and PyTorch), the same function compiled with a plain loop over the rows, and, for
one model, central finite differences of the compiled loss. Results and gradients must agree
to 1e-12 relative. The suite runs under every backend (see test_native.py).
"""

import math
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")

import chainrule  # noqa: E402
from chainrule import Value, map_rows, nn, sum_values  # noqa: E402
from chainrule.compiler import TraceWarning  # noqa: E402


def rows_of(n, width, seed=0):
    rng = random.Random(seed)
    return [[rng.uniform(-1.5, 1.5) for _ in range(width)] for _ in range(n)]


def eager_result_and_grads(fn, params, *args):
    """fn on Values made from args' numbers, then backward: (numbers out, params' grads)."""
    for p in params:
        p.grad = 0.0
    as_values = [
        [[Value(x) for x in row] for row in arg] if isinstance(arg[0], list) else [Value(x) for x in arg]
        for arg in args
    ]
    out = fn(*as_values)
    outs = out if isinstance(out, list) else [out]
    sum_values(outs).backward()
    return [o.data for o in outs], [p.grad for p in params]


def compiled_result_and_grads(f, params, *args):
    for p in params:
        p.grad = 0.0
    out = f(*args)
    outs = out if isinstance(out, list) else [out]
    sum_values(outs).backward() if len(outs) > 1 else outs[0].backward()
    return [o.data for o in outs], [p.grad for p in params]


def assert_close(got, want):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14), f"[{i}]: {a!r} != {b!r}"


def assert_matches_eager(compiled, fn, params, *args):
    """The compiled call's results and the params' gradients equal those of ``fn`` run eagerly
    on the same numbers (1e-12 relative); returns the compiled ones."""
    got = compiled_result_and_grads(compiled, params, *args)
    want = eager_result_and_grads(fn, params, *args)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    return got


def hinge_loss(model, mapped):
    def loss(X, y):
        scores = map_rows(model, X) if mapped else [model(x) for x in X]
        scores = [sum_values(s) if isinstance(s, list) else s for s in scores]
        return sum((1 + -t * s).relu() for t, s in zip(y, scores)) * (1.0 / len(y))

    return loss


# ---------------------------------------------------------------------------------------------
# Eagerly: the plain loop


def test_eagerly_it_is_the_plain_loop_over_zipped_rows():
    xs = [Value(1.0), Value(2.0), Value(3.0)]
    ys = [Value(10.0), Value(20.0)]  # shorter: zip stops there, as map does
    got = map_rows(lambda x, y: x * y, xs, ys)
    assert [v.data for v in got] == [10.0, 40.0]
    assert map_rows(lambda x: x, []) == []


def test_a_missing_function_or_missing_rows_is_a_type_error():
    with pytest.raises(TypeError, match="fn must be callable, got list"):
        map_rows([Value(1.0)], lambda x: x)  # the arguments swapped
    with pytest.raises(TypeError, match="no rows given"):
        map_rows(lambda x: x)


# ---------------------------------------------------------------------------------------------
# Compiled: the same numbers as eager and as the plain loop, on every call


@pytest.mark.parametrize("sizes", [[4, 1], [16, 16, 1], [5, 3]])
def test_an_mlp_over_a_batch_matches_eager_and_the_plain_loop_on_every_call(sizes):
    random.seed(1)
    model = nn.MLP(2, sizes)
    params = model.parameters()
    mapped = chainrule.compile(hinge_loss(model, True))
    plain = chainrule.compile(hinge_loss(model, False))
    for seed in range(3):  # the first call traces, the others replay with new numbers
        X = rows_of(37, 2, seed)
        y = [1.0 if a * b > 0 else -1.0 for a, b in X]
        got = assert_matches_eager(mapped, hinge_loss(model, False), params, X, y)
        assert_close(compiled_result_and_grads(plain, params, X, y)[1], got[1])
    assert len(mapped.tapes) == 1


def test_the_copies_of_a_layer_are_one_matrix_product():
    random.seed(2)
    model = nn.MLP(2, [8, 1])
    f = chainrule.compile(lambda X: map_rows(model, X))
    f(rows_of(20, 2))
    assert sum(hasattr(group, "weights") for group in f.last_tape.groups) == 2  # both layers


def test_gradients_agree_with_central_finite_differences():
    random.seed(3)
    model = nn.MLP(3, [4, 1])
    X = rows_of(9, 3, seed=5)
    f = chainrule.compile(lambda X: sum_values(map_rows(lambda x: model(x).tanh() ** 2, X)))
    params = model.parameters()
    _, grads = compiled_result_and_grads(f, params, X)
    h = 1e-6
    for p, g in zip(params, grads):
        p.data += h
        up = f(X).data
        p.data -= 2 * h
        down = f(X).data
        p.data += h
        assert math.isclose(g, (up - down) / (2 * h), rel_tol=1e-5, abs_tol=1e-8)


def test_a_row_of_several_arguments_and_several_results():
    random.seed(4)
    model = nn.MLP(2, [3, 2])
    params = model.parameters()

    def fn(X, y):
        pairs = map_rows(lambda x, t: (model(x)[0] * t, [model(x)[1], x[0]]), X, y)
        return [a + b[0] * b[1] for a, b in pairs]

    X, y = rows_of(6, 2, 7), [0.5, -1.0, 2.0, 0.25, 1.5, -0.5]
    assert_matches_eager(chainrule.compile(fn), fn, params, X, y)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x[1],  # one of the row's own Values
        lambda x: W,  # a Value made before the trace
        lambda x: Value(2.5),  # a constant made inside fn
        lambda x: [x[0] * W, x[0], Value(-1.0), W],  # all of them at once
    ],
    ids=["own value", "parameter", "constant", "mixed"],
)
def test_results_that_are_not_new_nodes(fn):
    X = rows_of(5, 2, 9)

    def whole(X):
        out = []
        for r in map_rows(fn, X):
            out += r if isinstance(r, list) else [r]
        return [v * (i + 1) for i, v in enumerate(out)]

    assert_matches_eager(chainrule.compile(whole), whole, [W], X)


W = Value(1.75, label="W")


def test_rows_made_inside_the_function_and_results_mapped_again():
    random.seed(5)
    model = nn.MLP(2, [3, 2])
    params = model.parameters()
    scale = Value(0.5)

    def fn(X):
        shifted = [[x[1] * scale, x[0] - 1] for x in X]  # rows computed in the trace, interleaved
        first = map_rows(model, shifted)
        second = map_rows(lambda pair, s: (pair[0] * pair[1] + s).tanh(), first, [scale] * len(X))
        weight = scale * 3  # a node of the trace, read by the next fn as a parameter would be
        return sum_values(map_rows(lambda v: v * weight, second))

    f = chainrule.compile(fn)
    for seed in (0, 1):
        X = rows_of(7, 2, seed)
        assert_matches_eager(f, fn, [*params, scale], X)
    assert len(f.last_tape.groups) > 0


def test_rows_that_are_parameters_and_rows_that_repeat():
    table = [[Value(0.1 * i), Value(-0.2 * i + 1)] for i in range(4)]  # an embedding's rows
    params = [v for row in table for v in row] + [W]

    def fn(x):
        rows = [table[1], table[3], table[1], [x[0], x[0]]]  # one row twice, one Value twice
        return sum_values(map_rows(lambda r: (r[0] * W + r[1]).exp(), rows))

    X = [[0.3]]
    assert_matches_eager(chainrule.compile(fn), fn, params, X[0])


def test_a_result_left_unused_sends_no_gradient_even_where_its_own_is_infinite():
    w = Value(0.0)

    def fn(X):
        pairs = map_rows(lambda x: (x[0] * w + x[1], (x[0] * w) ** 0.5), X)  # d sqrt at 0: inf
        return sum_values([a for a, _ in pairs])

    X = rows_of(4, 2, 3)
    got = assert_matches_eager(chainrule.compile(fn), fn, [w], X)
    assert math.isfinite(got[1][0])


def test_part_of_the_rows_used():
    w = Value(2.0)

    def fn(X):
        outs = map_rows(lambda x: (x[0] * w) ** 0.5, X)
        return outs[1] + outs[2]

    X = [[0.0], [1.0], [4.0], [0.0]]  # rows 0 and 3 have an infinite local gradient
    assert_matches_eager(chainrule.compile(fn), fn, [w], X)


def test_a_domain_error_in_any_row_is_eagers_error():
    f = chainrule.compile(lambda X: sum_values(map_rows(lambda x: x[0].log(), X)))
    with pytest.raises(ValueError, match="log") as traced:
        f([[1.0], [2.0], [-1.0]])  # while tracing: the copies' replay meets it in row 2
    with pytest.raises(ValueError, match="log") as eager:
        sum_values([Value(x).log() for x in (1.0, 2.0, -1.0)])
    assert str(traced.value) == str(eager.value)
    assert f([[1.0], [2.0], [3.0]]).data == pytest.approx(math.log(6.0), rel=1e-15)
    with pytest.raises(ValueError, match="log"):
        f([[1.0], [-2.0], [3.0]])  # on replay


def test_a_detach_and_no_grad_inside_the_function():
    w = Value(1.5)

    def fn(X):
        def row(x):
            with chainrule.no_grad():
                frozen = x[0] * w
            return x[0] * w + frozen + (x[1] * w).detach() * w

        return sum_values(map_rows(row, X))

    X = rows_of(5, 2, 11)
    assert_matches_eager(chainrule.compile(fn), fn, [w], X)


def test_under_no_grad_the_rows_send_no_gradient():
    w = Value(1.5)

    def fn(X):
        with chainrule.no_grad():
            frozen = map_rows(lambda x: x[0] * w, X)
        return sum_values([v * w for v in frozen])

    X = rows_of(5, 1, 12)
    assert_matches_eager(chainrule.compile(fn), fn, [w], X)


def test_take_with_an_index_per_row():
    table = [[Value(float(i)), Value(float(-i))] for i in range(5)]
    params = [v for row in table for v in row]

    def fn(indices):
        return sum_values(
            map_rows(lambda i: chainrule.take(table, i)[0] * 2 + chainrule.take(table, i)[1], indices)
        )

    f = chainrule.compile(fn)
    for indices in ([0.0, 3.0, 3.0], [4.0, 1.0, 0.0]):
        assert_matches_eager(f, fn, params, indices)


def test_under_detect_anomaly_a_nan_in_a_later_row_raises():
    f = chainrule.compile(lambda X: sum_values(map_rows(lambda x: x[0] * x[1], X)))
    f([[1.0, 2.0], [3.0, 4.0]])
    with chainrule.detect_anomaly(), pytest.raises(chainrule.AnomalyError):
        f([[1.0, 2.0], [math.inf, 0.0]])


# ---------------------------------------------------------------------------------------------
# When copying would not be right: a plain loop, as if map_rows were not there


def test_a_function_that_reads_a_rows_number_runs_on_every_row():
    def fn(X):
        # the branch depends on the row: copying the first row's choice would be wrong
        return sum_values(map_rows(lambda x: x[0] if x[0].data > 0 else -x[0], X))

    X = [[1.0], [-2.0], [3.0]]
    with pytest.warns(TraceWarning):
        f = chainrule.compile(fn)
        assert f(X).data == 6.0  # |1| + |-2| + |3|, each row's own branch
    assert f(X).data == 6.0


def test_reading_a_parameters_number_still_copies():
    w = Value(2.0)

    def fn(X):
        return sum_values(map_rows(lambda x: x[0] * (3.0 if w.data > 0 else -3.0), X))

    with pytest.warns(TraceWarning):
        f = chainrule.compile(fn)
        assert f([[1.0], [2.0]]).data == 9.0
    assert f.last_tape.size < 8  # one copied group: the rows' products


def test_rows_of_different_shapes_run_plainly():
    def fn(a):
        rows = [[a[0], a[1]], [a[2]], (a[0], a[2]), a[1]]  # lengths, list or tuple, a lone Value
        return sum_values(
            map_rows(lambda r: r[0] * r[-1] * W if isinstance(r, (list, tuple)) else r * 2, rows)
        )

    f = chainrule.compile(fn)
    for a in ([1.0, 2.0, 3.0], [-0.5, 4.0, 0.25]):
        assert_matches_eager(f, fn, [W], a)


def test_rows_holding_no_values_run_plainly():
    def fn(x):
        return sum_values(map_rows(lambda empty: x[0] * len(empty) + W, [[], [], []]))

    assert_matches_eager(chainrule.compile(fn), fn, [W], [2.0])


def test_a_function_that_changes_its_row_runs_plainly():
    def row(x):
        x.append(x[0] * W)  # the loop changes the caller's rows in place
        return x[1]

    def fn(X):
        X = [list(x) for x in X]
        out = sum_values(map_rows(row, X))
        return out + sum_values([x[-1] * 2 for x in X])  # reads what fn appended

    X = rows_of(4, 2, 8)
    assert_matches_eager(chainrule.compile(fn), fn, [W], X)


def test_rows_holding_numbers_run_plainly():
    labels = [1, 0, 1]  # plain numbers: fn gets them as they are

    def fn(X):
        return sum_values(map_rows(lambda x, label: x[label] * 1.0, X, labels))

    f = chainrule.compile(fn)
    X = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert f(X).data == 2.0 + 3.0 + 6.0


def test_a_function_returning_numbers_runs_plainly():
    def fn(X):
        pairs = map_rows(lambda x: (x[0] * 2, 1.0), X)
        return sum_values([a * b for a, b in pairs])

    assert chainrule.compile(fn)([[1.0], [2.0]]).data == 6.0


def test_map_rows_inside_the_mapped_function_is_a_plain_loop():
    w = Value(0.5)

    def fn(X):
        return sum_values(map_rows(lambda x: sum_values(map_rows(lambda v: v * w, x)), X))

    X = rows_of(4, 3, 2)
    assert_matches_eager(chainrule.compile(fn), fn, [w], X)


def test_a_function_that_needs_the_rows_own_values_runs_plainly():
    X = [[Value(1.0), Value(2.0)], [Value(3.0), Value(4.0)], [Value(5.0), Value(6.0)]]
    weight_of = {id(row[0]): W * (i + 1) for i, row in enumerate(X)}  # keyed by the Values

    def fn(dummy):
        return sum_values(map_rows(lambda x: x[1] * weight_of[id(x[0])], X)) * dummy[0]

    assert_matches_eager(chainrule.compile(fn), fn, [W], [1.0])


def test_an_error_inside_the_function_comes_out_unchanged():
    def fn(X):
        return sum_values(map_rows(lambda x: x[5], X))

    with pytest.raises(IndexError):
        chainrule.compile(fn)([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("where", ["list", "returned", "next map_rows"])
def test_a_value_leaking_out_of_the_row_trace_is_refused(where):
    kept = []

    def row(x):
        y = x[0] * W
        kept.append(y)  # only the first row's, while tracing: it must not stand for the others
        return y + 1

    def fn(X):
        out = sum_values(map_rows(row, X))
        if where == "returned":
            return [out, kept[0]]
        if where == "next map_rows":
            return out + sum_values(map_rows(lambda x: x[0] * kept[0], X))
        return out + sum_values(kept)

    X = rows_of(4, 1, 6)
    with pytest.raises(NotImplementedError, match="inside map_rows' function was used outside it"):
        chainrule.compile(fn)(X)
    kept.clear()
    eager = fn([[Value(x) for x in r] for r in X])  # eagerly it is the plain loop: all rows kept
    assert len(kept) == 4 and eager is not None


def test_backward_inside_the_mapped_function_is_refused_as_in_any_trace():
    def fn(X):
        def row(x):
            y = x[0] * 2
            y.backward()
            return y

        return sum_values(map_rows(row, X))

    with pytest.raises(NotImplementedError, match="backward"):
        chainrule.compile(fn)([[1.0], [2.0]])


# ---------------------------------------------------------------------------------------------
# Random functions and rows against the plain loop and eager

OPS = [
    lambda a, b: a + b,
    lambda a, b: a * b,
    lambda a, b: a - b,
    lambda a, b: a * 0.5 + b.tanh(),
    lambda a, b: (a * a + 1).log() * b,
    lambda a, b: a.relu() + b.sigmoid(),
    lambda a, b: (a - b).exp() * 0.1,
    lambda a, b: a * b + b * 0.5 + a,  # a dot product: weights (a, b), inputs (b, 0.5), bias a
    lambda a, b: sum_values([a * a, b * a, b]),  # another, its halves mixing row and parameter
]


@settings(max_examples=40)
@given(
    n_rows=st.integers(1, 9),
    width=st.integers(1, 4),
    program=st.lists(
        st.tuples(st.integers(0, len(OPS) - 1), st.integers(0, 30), st.integers(0, 30)),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 10**6),
)
def test_random_row_functions_match_the_plain_loop_and_eager(n_rows, width, program, seed):
    params = [Value(random.Random(seed + i).uniform(-1, 1)) for i in range(3)]

    def row_fn(x):
        values = [*x, *params]
        for op, i, j in program:
            values.append(OPS[op](values[i % len(values)], values[j % len(values)]))
        return [values[-1], values[len(values) // 2]]

    def mapped(X):
        return [a * 2 + b for a, b in map_rows(row_fn, X)]

    def plain(X):
        return [a * 2 + b for a, b in map(row_fn, X)]

    X = rows_of(n_rows, width, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compiled_result_and_grads(chainrule.compile(mapped), params, X)
    want = eager_result_and_grads(plain, params, X)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    assert_close(compiled_result_and_grads(chainrule.compile(plain), params, X)[1], got[1])


def test_the_results_hold_each_rows_numbers_while_tracing():
    seen = []

    def fn(X):
        results = map_rows(lambda x: (x[0] * x[0] + 1).log() * 3 - x[1], X)  # constants in the row trace
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceWarning)
            seen.extend(v.data for v in results)
        return sum_values(results)

    X = rows_of(6, 2, 4)
    chainrule.compile(fn)(X)
    assert_close(seen, [math.log(a * a + 1) * 3 - b for a, b in X])


def test_while_tracing_fn_runs_on_one_row_only():
    calls = []

    def row(x):
        calls.append(len(x))
        return x[0] * W + x[1]

    f = chainrule.compile(lambda X: sum_values(map_rows(row, X)))
    X = rows_of(500, 2, 13)
    want = sum(a * W.data + b for a, b in X)
    assert math.isclose(f(X).data, want, rel_tol=1e-12)
    assert calls == [2]  # one row traced, not 500
    assert math.isclose(f(X).data, want, rel_tol=1e-12)
    assert calls == [2]  # a replay runs no Python of fn at all
    eager = map_rows(row, [[Value(a), Value(b)] for a, b in X[:3]])
    assert len(calls) == 4 and len(eager) == 3  # eagerly: once a row
