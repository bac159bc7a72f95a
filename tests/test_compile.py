"""chainrule.compile against eager chainrule: models and losses, results, structure, errors, warnings.

The oracle everywhere is eager chainrule run on the same numbers (its own correctness is tested
elsewhere against sympy, finite differences and PyTorch); a compiled call must agree with it to
1e-9 relative. Random graphs over every op are in test_compile_props.py.
"""

import math
import random
import warnings

import pytest

np = pytest.importorskip("numpy")  # chainrule.compile is the `fast` extra

import chainrule  # noqa: E402
from chainrule import AnomalyError, Value, detect_anomaly, engine, no_grad, sum_values  # noqa: E402
from chainrule.losses import binary_cross_entropy_with_logits, cross_entropy, hinge, l2, mse  # noqa: E402
from chainrule.nn import MLP  # noqa: E402
from chainrule.optim import SGD, Adam  # noqa: E402

REL = 1e-9


def close(compiled, eager, abs_tol=1e-12):
    return math.isclose(compiled, eager, rel_tol=REL, abs_tol=abs_tol)


def assert_all_close(compiled, eager, what, abs_tol=1e-12):
    assert len(compiled) == len(eager)
    for i, (c, e) in enumerate(zip(compiled, eager)):
        assert close(c, e, abs_tol), f"{what}[{i}]: compiled {c!r} != eager {e!r}"


# ---------------------------------------------------------------------------------------------
# 2. Training an MLP, eager and compiled side by side, from the same initial weights.

BATCH, STEPS, N_IN = 5, 4, 3
LABELS = [0, 2, 1, 1, 0]  # class indices are ints: cross_entropy's targets are constants of the trace


def model_outputs(model, X):
    return [model(x) for x in X]


def loss_of(loss, model, X, y):
    """One minibatch's loss; ``y`` holds a number per example (unused by cross_entropy)."""
    if loss == "mse":
        return mse(model_outputs(model, X), y)
    if loss == "hinge":
        return hinge(model_outputs(model, X), y)
    if loss == "binary_cross_entropy_with_logits":
        return binary_cross_entropy_with_logits(model_outputs(model, X), y)
    if loss == "cross_entropy":
        return cross_entropy(model_outputs(model, X), LABELS)
    if loss == "l2":  # micrograd's demo loss: hinge plus an L2 penalty on every weight
        return hinge(model_outputs(model, X), y) + 1e-2 * l2(model.parameters())
    raise AssertionError(loss)


def minibatch(rng, loss):
    X = [[rng.uniform(-2, 2) for _ in range(N_IN)] for _ in range(BATCH)]
    if loss in ("hinge", "l2"):
        y = [rng.choice([-1.0, 1.0]) for _ in range(BATCH)]
    elif loss == "binary_cross_entropy_with_logits":
        y = [rng.choice([0.0, 1.0, 0.25]) for _ in range(BATCH)]
    else:
        y = [rng.uniform(-1, 1) for _ in range(BATCH)]
    return X, y


def make_model(activation, loss):
    random.seed(20240607)  # the same initial weights for the eager and the compiled model
    return MLP(N_IN, [6, 5, 3 if loss == "cross_entropy" else 1], activation=activation)


def make_optimizer(name, params):
    if name == "sgd":
        return SGD(params, lr=0.05, momentum=0.9)
    return Adam(params, lr=0.01)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["mse", "hinge", "binary_cross_entropy_with_logits", "cross_entropy", "l2"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
def test_training_steps_match_eager(activation, loss, optimizer):
    eager_model, fast_model = make_model(activation, loss), make_model(activation, loss)
    eager_opt = make_optimizer(optimizer, eager_model.parameters())
    fast_opt = make_optimizer(optimizer, fast_model.parameters())
    fast_loss = chainrule.compile(lambda X, y: loss_of(loss, fast_model, X, y))
    rng = random.Random(7)
    for step in range(STEPS):
        X, y = minibatch(rng, loss)  # new numbers every step: the first call traces, the others replay

        eager_opt.zero_grad()
        eager = loss_of(loss, eager_model, X, y)
        eager.backward()
        fast_opt.zero_grad()
        fast = fast_loss(X, y)
        fast.backward()

        assert close(fast.data, eager.data), f"loss at step {step}: {fast.data!r} != {eager.data!r}"
        assert_all_close(
            [p.grad for p in fast_model.parameters()],
            [p.grad for p in eager_model.parameters()],
            f"gradients at step {step}",
        )
        eager_opt.step()
        fast_opt.step()
        assert_all_close(
            [p.data for p in fast_model.parameters()],
            [p.data for p in eager_model.parameters()],
            f"weights after step {step}",
        )
    assert len(fast_loss.tapes) == 1


def test_manual_sgd_on_a_wide_layer_matches_eager():
    # A wider net and batch, so the tape's layers become matrix products; plain `p.data -= lr * p.grad`.
    random.seed(3)
    eager_model = MLP(4, [16, 16, 1])
    random.seed(3)
    fast_model = MLP(4, [16, 16, 1])
    fast_loss = chainrule.compile(lambda X, y: mse(model_outputs(fast_model, X), y))
    rng = random.Random(11)
    for _ in range(3):
        X = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(12)]
        y = [rng.gauss(0, 1) for _ in range(12)]
        eager_model.zero_grad()
        mse(model_outputs(eager_model, X), y).backward()
        fast_model.zero_grad()
        fast_loss(X, y).backward()
        for p in eager_model.parameters() + fast_model.parameters():
            p.data -= 0.1 * p.grad
        assert_all_close(
            [p.data for p in fast_model.parameters()], [p.data for p in eager_model.parameters()], "weights"
        )


def test_stable_losses_stay_stable_when_logits_change_sign_on_replay():
    # The traced logits are small and positive; the replayed ones are huge, of both signs.
    # A loss that chose its formula from the numbers seen while tracing would overflow here.
    w = Value(1.0)
    bce = chainrule.compile(lambda zs: binary_cross_entropy_with_logits([w * z for z in zs], [1.0, 0.0]))
    ce = chainrule.compile(lambda zs: cross_entropy([w * z for z in zs], 1))
    bce([0.5, 0.5])
    ce([0.5, 0.5])
    for zs in ([-800.0, 800.0], [800.0, -800.0], [-40.0, 3.0]):
        for fast_fn, eager_fn in (
            (bce, lambda vs: binary_cross_entropy_with_logits(vs, [1.0, 0.0])),
            (ce, lambda vs: cross_entropy(vs, 1)),
        ):
            w.grad = 0.0
            eager = eager_fn([w * z for z in zs])
            eager.backward()
            eager_grad, w.grad = w.grad, 0.0
            fast = fast_fn(zs)
            fast.backward()
            assert math.isfinite(fast.data)
            assert close(fast.data, eager.data) and close(w.grad, eager_grad), (zs, fast.data, eager.data)


# ---------------------------------------------------------------------------------------------
# 3. What a compiled call returns.


def test_a_value_result_is_a_compiled_node_over_the_parameters():
    a, b = Value(2.0), Value(-3.0)
    f = chainrule.compile(lambda xs: a * xs[0] + b * xs[1] * a)
    y = f([1.5, 4.0])
    assert isinstance(y, Value)
    assert y.op == "compiled"
    assert set(y.children) == {a, b}
    assert y.data == 2.0 * 1.5 + (-3.0) * 4.0 * 2.0  # exact in floats
    y.backward()
    # d/da = x0 + b x1 = 1.5 - 12 = -10.5;  d/db = x1 a = 8
    assert (a.grad, b.grad) == (-10.5, 8.0)
    assert y.grad == 1.0  # the root's own grad, as eager's backward sets it


def test_arguments_reach_fn_as_the_lists_and_tuples_they_were():
    w = Value(2.0)
    seen = []

    def fn(pair, rows):
        seen.append((type(pair), type(rows), [type(row) for row in rows]))
        return w * pair[0] + w * rows[0][0] + w * rows[1][0]

    f = chainrule.compile(fn)
    for rows in ([(3.0,), [4.0]], [(3.0,), (4.0,)], [[3.0], [4.0]]):
        assert f((1.0, 2.0), rows).data == 2.0 * (1.0 + 3.0 + 4.0)
        assert seen[-1] == (tuple, list, [type(row) for row in rows])


def test_nested_list_and_tuple_results_mirror_what_fn_returned():
    w = Value(0.5)

    def fn(xs):
        s = w * xs[0]
        return [s.tanh(), (s.exp(), [s * s, xs[1] * w]), (w + 1.0,)]

    result = chainrule.compile(fn)([0.3, -2.0])
    eager = fn([Value(0.3), Value(-2.0)])
    assert type(result) is list and type(result[1]) is tuple and type(result[1][1]) is list
    assert type(result[2]) is tuple and len(result[2]) == 1
    flat_c = [result[0], result[1][0], *result[1][1], result[2][0]]
    flat_e = [eager[0], eager[1][0], *eager[1][1], eager[2][0]]
    assert_all_close([v.data for v in flat_c], [v.data for v in flat_e], "outputs")


def test_multiple_outputs_each_backpropagate_their_own_gradient():
    a, b = Value(0.7), Value(-1.2)

    def fn(xs):
        return (a * xs[0]).tanh() + b, (b * xs[1]).sigmoid() * a

    fast = chainrule.compile(fn)
    for xs in ([0.4, 2.0], [-1.0, 0.5]):
        first, second = fast(xs)
        eager_first, eager_second = fn([Value(x) for x in xs])
        for compiled, eager in ((first, eager_first), (second, eager_second)):
            a.grad = b.grad = 0.0
            eager.backward()
            expected = [a.grad, b.grad]
            a.grad = b.grad = 0.0
            compiled.backward()
            assert close(compiled.data, eager.data)
            assert_all_close([a.grad, b.grad], expected, "gradients of one output")


def test_the_same_value_returned_twice_gives_two_results_that_each_backpropagate():
    w = Value(1.5)
    f = chainrule.compile(lambda xs: [(w * xs[0]).exp()] * 2)  # one node, returned twice
    f([1.0])  # traces
    first, second = f([0.5])
    assert first is not second
    assert first.data == second.data == math.exp(0.75)
    first.backward()
    second.backward()
    # d/dw exp(0.5 w) = 0.5 exp(0.5 w), once per backward
    assert close(w.grad, 2 * 0.5 * math.exp(0.75))


def test_backward_twice_accumulates_twice():
    w = Value(-0.4)
    f = chainrule.compile(lambda xs: (w * w * xs[0]).sigmoid())
    y = f([3.0])
    eager = (w * w * Value(3.0)).sigmoid()
    eager.backward()
    once = w.grad
    w.grad = 0.0
    y.backward()
    y.backward()
    assert close(w.grad, 2 * once)
    assert y.grad == 2.0


def test_an_older_result_backpropagates_its_own_numbers_after_newer_calls():
    w = Value(2.0)
    f = chainrule.compile(lambda xs: w * xs[0] * xs[0])
    old = f([3.0])
    assert f([100.0]).data == 2e4  # a newer replay must not overwrite what `old` needs
    old.backward()
    assert w.grad == 9.0  # d/dw w x^2 = x^2 at x = 3


def test_compiled_result_in_further_eager_arithmetic_gives_eager_gradients():
    a, b = Value(0.3), Value(-0.8)

    def fn(xs):
        return (a * xs[0] + b).tanh() * xs[1]

    loss = chainrule.compile(fn)([1.1, 2.0])
    (loss * 2 + a * b).backward()  # `a * b` also reaches the parameters, outside the compiled node
    compiled_grads = [a.grad, b.grad]
    a.grad = b.grad = 0.0
    (fn([Value(1.1), Value(2.0)]) * 2 + a * b).backward()
    assert_all_close(compiled_grads, [a.grad, b.grad], "gradients")


def test_no_grad_around_a_compiled_call_returns_a_leaf():
    w = Value(1.25)
    f = chainrule.compile(lambda xs: w * xs[0] + xs[1])
    with no_grad():
        y = f([2.0, 0.5])  # the first call traces even here, with recording on inside the trace
    assert y.children == () and y.op == ""
    assert y.data == 3.0
    y = f([2.0, 0.5])  # the trace made under no_grad is a full one
    y.backward()
    assert w.grad == 2.0
    assert len(f.tapes) == 1


def test_compiled_function_called_inside_another_compiled_function():
    w = Value(0.9)
    inner = chainrule.compile(lambda xs: (w * xs[0]).tanh())
    outer = chainrule.compile(lambda xs: inner(xs) * xs[1] + w)
    y = outer([0.5, 3.0])
    eager = (w * Value(0.5)).tanh() * 3.0 + w
    assert close(y.data, eager.data)
    y.backward()
    compiled_grad, w.grad = w.grad, 0.0
    eager.backward()
    assert close(compiled_grad, w.grad)


def test_a_result_that_is_a_parameter_or_an_input():
    w = Value(4.0)
    y, x = chainrule.compile(lambda xs: (w, xs[0]))([7.0])
    assert (y.data, x.data) == (4.0, 7.0)
    y.backward()
    x.backward()
    assert w.grad == 1.0  # dw/dw; the input is not a parameter


# ---------------------------------------------------------------------------------------------
# 4. Argument structure: one trace per structure.


def counting(fn):
    """fn, and a list whose length says how often fn ran (it runs only when tracing)."""
    calls = []

    def wrapped(*args):
        calls.append(1)
        return fn(*args)

    return wrapped, calls


def test_a_new_structure_traces_again_and_a_known_one_reuses_its_trace():
    w = Value(0.5)
    fn, calls = counting(lambda xs: sum(w * x for x in (xs if isinstance(xs, list) else [xs])))
    f = chainrule.compile(fn)
    assert f([1.0, 2.0]).data == 1.5
    assert f([3.0, 4.0]).data == 3.5
    assert (len(f.tapes), len(calls)) == (1, 1)
    assert f([1.0, 2.0, 3.0]).data == 3.0  # another length
    assert (len(f.tapes), len(calls)) == (2, 2)
    assert f(2.0).data == 1.0  # a bare number
    assert (len(f.tapes), len(calls)) == (3, 3)
    assert f([5.0, 5.0]).data == 5.0  # back to the first structure: its trace is reused
    assert (len(f.tapes), len(calls)) == (3, 3)


def test_nesting_is_part_of_the_structure():
    w = Value(2.0)

    def flat_sum(x):
        return w * x if isinstance(x, Value) else sum(flat_sum(item) for item in x)

    fn, calls = counting(flat_sum)
    f = chainrule.compile(fn)
    assert f([1.0, 2.0, 3.0, 4.0]).data == 20.0
    assert f([[1.0, 2.0], [3.0, 4.0]]).data == 20.0
    assert f([[1.0], [2.0, 3.0, 4.0]]).data == 20.0  # ragged
    assert f([[1.0, [2.0]], 3.0, (4.0,)]).data == 20.0
    assert (len(f.tapes), len(calls)) == (4, 4)
    assert f([[5.0], [5.0, 5.0, 5.0]]).data == 40.0
    assert (len(f.tapes), len(calls)) == (4, 4)


def test_several_arguments():
    w = Value(3.0)
    f = chainrule.compile(lambda X, y, c: mse([w * x[0] + x[1] for x in X], y) * c)
    X, y = [[1.0, 2.0], [0.5, -1.0]], [4.0, 0.0]
    for c in (1.0, 2.0):
        w.grad = 0.0
        eager = mse([w * x[0] + x[1] for x in X], y) * c
        eager.backward()
        eager_grad, w.grad = w.grad, 0.0
        fast = f(X, y, c)
        fast.backward()
        assert close(fast.data, eager.data) and close(w.grad, eager_grad)
    assert len(f.tapes) == 1


def test_numpy_arrays_are_accepted_as_arguments():
    w = [Value(0.5), Value(-1.5)]
    fn = lambda X, y: mse([chainrule.dot(w, row, 0.25) for row in X], y)  # noqa: E731
    f = chainrule.compile(fn)
    rng = np.random.default_rng(0)
    for _ in range(3):
        X, y = rng.normal(size=(4, 2)), rng.normal(size=4)
        eager = fn(X.tolist(), y.tolist())
        assert close(f(X, y).data, eager.data)
        assert close(f(X.tolist(), tuple(y)).data, eager.data)  # plain lists and tuples too
    assert close(
        f(np.arange(8, dtype=np.int64).reshape(4, 2), y).data,
        fn([[0, 1], [2, 3], [4, 5], [6, 7]], y.tolist()).data,
    )
    assert chainrule.compile(lambda x: w[0] * x)(np.float64(3.0)).data == 1.5  # a numpy scalar


@pytest.mark.parametrize(
    "bad, name",
    [
        ("abc", "str"),
        (Value(1.0), "Value"),
        ({"a": 1.0}, "dict"),
        ([1.0, "b"], "str"),
        ([{1.0}], "set"),
        (None, "NoneType"),
    ],
)
def test_bad_argument_types_raise_type_error_naming_the_type(bad, name):
    w = Value(1.0)
    f = chainrule.compile(lambda x: w * 2.0)
    f([1.0])
    with pytest.raises(TypeError, match=rf"real number.*not {name}"):
        f(bad)
    assert len(f.tapes) == 1  # nothing was traced for the bad call
    assert f([3.0]).data == 2.0


def test_a_value_argument_is_told_to_be_a_parameter():
    f = chainrule.compile(lambda x: x * 2.0)
    with pytest.raises(TypeError, match="parameters"):
        f(Value(1.0))


@pytest.mark.parametrize("returned", [3.0, None, "loss", [Value(1.0), 2.0], {"loss": Value(1.0)}])
def test_fn_returning_something_other_than_values_raises_type_error(returned):
    f = chainrule.compile(lambda x: returned)
    with pytest.raises(TypeError, match="must return a Value or a list/tuple of Values"):
        f(1.0)
    assert len(f.tapes) == 0


def test_an_error_while_tracing_leaves_no_trace_behind():
    w = Value(2.0)
    f = chainrule.compile(lambda xs: (w * xs[0]).log())
    with pytest.raises(ValueError, match="log"):
        f([0.0])  # fails while tracing, as eager would
    assert len(f.tapes) == 0
    assert close(f([1.5]).data, math.log(3.0))
    assert close(f([0.5]).data, 0.0)


# ---------------------------------------------------------------------------------------------
# 5. Out-of-domain numbers on replay raise eager's error; overflow stays IEEE.


def eager_error(fn, xs):
    try:
        fn([Value(x) for x in xs])
    except (ValueError, ZeroDivisionError) as error:
        return error
    raise AssertionError("eager did not raise")


CASES = [  # fn, traced at, replayed at, error, op named
    (lambda xs: xs[0].log(), [1.0], [0.0], ValueError, "log"),
    (lambda xs: xs[0].log(), [1.0], [-2.0], ValueError, "log"),
    (lambda xs: 2.0 / xs[0], [1.0], [0.0], ZeroDivisionError, "/"),
    (lambda xs: xs[0] / xs[1], [1.0, 1.0], [0.0, 0.0], ZeroDivisionError, "/"),  # 0/0
    (lambda xs: xs[0] ** -1.0, [1.0], [0.0], ZeroDivisionError, r"\*\*"),
    (lambda xs: xs[0] ** -0.5, [1.0], [0.0], ZeroDivisionError, r"\*\*"),
    (lambda xs: xs[0] ** 0.5, [4.0], [-4.0], ValueError, r"\*\*"),
    (lambda xs: xs[0] ** xs[1], [2.0, 0.5], [-2.0, 0.5], ValueError, "pow"),
    (lambda xs: xs[0] ** xs[1], [2.0, 1.0], [0.0, -1.0], ZeroDivisionError, "pow"),
    (lambda xs: 0.0 ** xs[0], [1.0], [-1.0], ZeroDivisionError, "pow"),
    (lambda xs: sum(x.log() for x in xs), [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 4.0], ValueError, "log"),
]


@pytest.mark.parametrize("fn, traced_at, bad, error, op", CASES)
def test_domain_errors_on_replay_raise_like_eager(fn, traced_at, bad, error, op):
    w = Value(1.0)
    compiled = chainrule.compile(lambda xs: fn(xs) * w)
    compiled(traced_at)
    with pytest.raises(error, match=op) as raised:
        compiled(bad)
    expected = eager_error(fn, bad)
    assert type(raised.value) is type(expected)
    assert str(raised.value) == str(expected)  # the same message: the op, its operands, the reason
    # The compiled function still works afterwards, on the same trace.
    good = [x + 0.5 for x in traced_at]
    y = compiled(good)
    y.backward()
    eager = fn([Value(x) for x in good]) * w
    assert close(y.data, eager.data)
    assert len(compiled.tapes) == 1


def test_a_domain_error_in_backward_raises_like_eager_and_leaves_grads_alone():
    w = Value(1.0)
    f = chainrule.compile(lambda xs: (w * xs[0]) ** 0.5)
    f([4.0])
    y = f([0.0])  # sqrt(0) = 0 is fine; its derivative 0.5 * 0 ** -0.5 is not
    assert y.data == 0.0
    w.grad = 0.25
    with pytest.raises(ZeroDivisionError) as compiled_error:
        y.backward()
    assert w.grad == 0.25
    eager = (w * Value(0.0)) ** 0.5
    with pytest.raises(ZeroDivisionError) as eager_raised:
        eager.backward()
    assert w.grad == 0.25
    assert str(compiled_error.value) == str(eager_raised.value)
    assert "backward of **" in str(compiled_error.value)


def test_detect_anomaly_around_a_compiled_call_raises_on_inf():
    w = Value(1.0)
    f = chainrule.compile(lambda xs: (w * xs[0]).exp() + xs[1])
    f([1.0, 0.0])
    with detect_anomaly(), pytest.raises(AnomalyError, match="exp"):
        f([1000.0, 0.0])
    with detect_anomaly():
        assert close(f([2.0, 1.0]).data, math.exp(2.0) + 1.0)  # finite numbers pass


def test_detect_anomaly_catches_an_inf_gradient_in_compiled_backward():
    w = Value(1.0)
    f = chainrule.compile(lambda xs: 1.0 / (w * xs[0]))
    f([1.0])
    y = f([1e-200])  # 1e200 is finite; its derivative -1 / (w x)^2 * x = -1e200 / 1e-200 is not
    assert y.data == 1e200
    with detect_anomaly(), pytest.raises(AnomalyError):
        y.backward()
    eager = 1.0 / (w * Value(1e-200))
    with detect_anomaly(), pytest.raises(AnomalyError):
        eager.backward()


def test_overflow_gives_inf_like_eager_without_raising():
    w = Value(1.0)
    f = chainrule.compile(lambda xs: (w * xs[0]).exp())
    f([1.0])
    y = f([1000.0])
    eager = (w * Value(1000.0)).exp()
    assert y.data == eager.data == math.inf
    y.backward()
    compiled_grad, w.grad = w.grad, 0.0
    eager.backward()
    assert compiled_grad == w.grad == math.inf  # d/dw exp(1000 w) = 1000 exp(1000 w)
    # inf - inf is nan, in both: not an error outside detect_anomaly
    g = chainrule.compile(lambda xs: (w * xs[0]).exp() - (w * xs[0]).exp())
    g([1.0])
    assert math.isnan(g([1000.0]).data)


# ---------------------------------------------------------------------------------------------
# 6. Tracing warns when fn reads a number it cannot see change.


def test_reading_data_of_a_traced_value_warns():
    w = Value(1.0)

    def fn(xs):
        if xs[0].data > 0:  # a branch on a number: frozen into the trace
            return w * xs[0]
        return -w * xs[0]

    f = chainrule.compile(fn)
    with pytest.warns(chainrule.TraceWarning, match="frozen") as record:
        f([1.0])
    assert record[0].filename == __file__  # the warning points at the user's line
    assert f([-2.0]).data == -2.0  # the frozen branch, as the warning says; eager would give 2.0


def test_no_warning_without_reading_data():
    random.seed(1)
    model = MLP(2, [4, 1], activation="tanh")
    w = Value(0.5)

    def fn(X, y):
        scores = model_outputs(model, X)
        return (
            hinge(scores, y)
            + binary_cross_entropy_with_logits(scores, [0.0, 1.0])
            + l2([w])
            + (cross_entropy([[s, w * s] for s in scores], [0, 1]))
        )

    f = chainrule.compile(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = f([[0.5, -1.0], [2.0, 0.1]], [1.0, -1.0])
        loss = f([[1.5, -0.5], [-2.0, 0.3]], [-1.0, -1.0])
        loss.backward()
        assert isinstance(loss.data, float)  # reading the result outside the trace is fine


# ---------------------------------------------------------------------------------------------
# 7. numpy is optional.

WITHOUT_NUMPY = """
import sys
sys.modules["numpy"] = None  # `import numpy` now raises ImportError
import chainrule
from chainrule import Value
from chainrule.nn import MLP

a = Value(2.0)
b = (a * a + a.exp()).tanh() + chainrule.sum_values([a, 1.0]) / 4
b.backward()
assert a.grad != 0.0
MLP(2, [3, 1])([1.0, 2.0]).backward()
assert "numpy" not in {name for name, m in sys.modules.items() if m is not None}
try:
    chainrule.compile(lambda x: a * x)
except ImportError as error:
    assert "chainrule[fast]" in str(error), error
else:
    raise AssertionError("compile did not raise ImportError")
print("ok")
"""


def test_chainrule_works_without_numpy_and_compile_says_what_to_install(run_python):
    assert run_python(WITHOUT_NUMPY).stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# 8. Deep graphs: no recursion anywhere.


def test_a_chain_of_twenty_thousand_ops_compiles_and_replays():
    w = Value(0.5)

    def chain(xs):
        x = xs[0]
        for _ in range(5000):  # 4 ops per round, none of which the compiler folds away
            x = (x * 0.999 + w).tanh() - 0.1 * w
        return x

    f = chainrule.compile(chain)
    for x0 in (0.3, -1.0, 2.0):
        w.grad = 0.0
        eager = chain([Value(x0)])
        eager.backward()
        eager_grad, w.grad = w.grad, 0.0
        y = f([x0])
        y.backward()
        assert close(y.data, eager.data) and close(w.grad, eager_grad)
    assert len(f.tapes) == 1


def test_a_sum_of_twenty_thousand_products_compiles_and_replays():
    w = Value(0.25)
    fn = lambda xs: sum(w * x for x in xs) + sum(xs)  # noqa: E731
    f = chainrule.compile(fn)
    rng = np.random.default_rng(1)
    for _ in range(2):
        xs = rng.normal(size=20_000)
        w.grad = 0.0
        eager = fn([Value(x) for x in xs.tolist()])
        eager.backward()
        eager_grad, w.grad = w.grad, 0.0
        y = f(xs)
        y.backward()
        scale = float(np.abs(xs).sum())  # the sums' rounding is relative to their terms
        assert close(y.data, eager.data, 1e-12 * scale) and close(w.grad, eager_grad, 1e-12 * scale)


# ---------------------------------------------------------------------------------------------
# Bugs found while writing these tests (each fails until the compiler is fixed).


def test_backward_of_one_output_ignores_a_domain_error_in_another_outputs_graph():
    # Eager: `first.backward()` only visits first's graph, so sqrt's bad derivative at 0 (which
    # belongs to `second` alone) is never computed. The compiled backward must not raise either.
    w = Value(3.0)
    fn = lambda xs: [w * xs[0], (w * xs[1]) ** 0.5]  # noqa: E731
    eager_first, _ = fn([Value(1.0), Value(0.0)])
    eager_first.backward()
    assert w.grad == 1.0
    w.grad = 0.0
    first, _ = chainrule.compile(fn)([1.0, 0.0])
    first.backward()
    assert w.grad == 1.0


def test_backward_of_one_output_is_not_poisoned_by_an_overflow_in_another_outputs_graph():
    # The same leak, silent: second = exp(2000) = inf; backward from `first` alone must give
    # dfirst/dw = x0 = 1, as eager does, not 0 * inf = nan through second's exp node.
    w = Value(2.0)
    fn = lambda xs: [w * xs[0], (w * xs[1]).exp()]  # noqa: E731
    f = chainrule.compile(fn)
    f([1.0, 1.0])
    first, second = f([1.0, 1000.0])
    assert second.data == math.inf
    first.backward()
    compiled_grad, w.grad = w.grad, 0.0
    eager_first, _ = fn([Value(1.0), Value(1000.0)])
    eager_first.backward()
    assert w.grad == 1.0
    assert compiled_grad == 1.0


def test_backward_with_create_graph_through_a_compiled_result_raises_not_implemented():
    # CONTEXT: "No create_graph through compiled results (NotImplementedError)".
    w = Value(2.0)
    y = chainrule.compile(lambda xs: w * xs[0])([3.0])
    with pytest.raises(NotImplementedError):
        y.backward(create_graph=True)


def test_a_computed_value_made_before_the_call_is_read_like_a_parameter():
    # Values that existed before the call are read afresh at every call, and backward adds into
    # their .grad, as eager does for every node of the graph (intermediate ones too).
    w = Value(2.0)
    h = w * 3.0  # made outside fn, not a leaf
    f = chainrule.compile(lambda xs: h * xs[0])
    y = f([5.0])
    y.backward()
    compiled = (h.grad, w.grad)
    h.grad = w.grad = 0.0
    (h * Value(5.0)).backward()
    assert compiled == (h.grad, w.grad)  # eager: h.grad = 5, w.grad = 15
    w.data = 10.0  # h.data is still 6: h was computed when w was 2
    assert f([1.0]).data == (h * Value(1.0)).data


@pytest.mark.parametrize(
    "args",
    [
        (np.arange(6.0).reshape(3, 2), np.array([1.0, -1.0, 2.0])),
        (np.float64(3.0) * np.ones(()),),  # 0-d
        (np.arange(12.0).reshape(3, 4)[:, ::2],),  # not contiguous
        (np.empty((0, 2)),),
        (),
    ],
)
def test_float_arrays_take_a_short_way_in_with_the_same_structure_and_numbers(args):
    from chainrule.compiler import arguments

    flat = []
    structure = tuple(arguments._flatten_arguments(a, flat, (i,)) for i, a in enumerate(args))
    got_structure, got_numbers = arguments.flatten_all(np, args)
    assert got_structure == structure
    assert got_numbers.tolist() == (np.concatenate(flat).tolist() if flat else [])
    if all(a.size for a in args):  # the same call with lists: the same trace ([] has no width)
        assert arguments.flatten_all(np, [a.tolist() for a in args])[0] == structure


def test_an_empty_numpy_array_is_accepted_like_an_empty_list():
    w = Value(2.0)
    f = chainrule.compile(lambda xs: sum((w * x for x in xs), w))
    assert f([]).data == 2.0
    assert f(np.array([])).data == 2.0


def test_dot_nodes_number_their_weight_and_input_vectors_in_the_order_first_seen():
    import array

    from chainrule.compiler import rewriting
    from chainrule.compiler.backends import numpy as tape

    # Five dot nodes of two weights, two inputs and a bias: (w1, w2, x1, x2, b), a row each.
    rows = [3, 0, 7, 8, 9, 0, 1, 7, 8, 9, 3, 0, 6, 6, 9, 5, 5, 6, 6, 9, 0, 1, 2, 7, 9]
    flat = array.array(rewriting._SSIZE_T, rows)
    assert list(rewriting._vector_ids(flat, 5, 5, 0, 2)) == [0, 1, 0, 2, 1]  # (3,0) (0,1) (3,0) (5,5) (0,1)
    assert list(rewriting._vector_ids(flat, 5, 5, 2, 2)) == [0, 0, 1, 1, 2]  # (7,8) (7,8) (6,6) (6,6) (2,7)
    assert tape._first_rows(np, np.array([0, 1, 0, 2, 1])).tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    "shape",
    [
        "a layer",
        "a bias per pair",
        "a weight used twice in a vector",
        "inputs that are weights",
        "bias is a weight",
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_a_layer_on_a_batch_adds_every_gradient_where_positions_repeat_or_overlap(
    shape, backend, loss_and_grads
):
    # The compiled layer adds its gradients block by block (weights, inputs, biases); each block
    # must sum where a position repeats, and blocks that share positions must both add.
    from chainrule.compiler.backends import numpy as tape_module

    rng = random.Random(3)
    W = [[Value(rng.uniform(-1, 1)) for _ in range(3)] for _ in range(4)]
    b = [Value(rng.uniform(-1, 1)) for _ in range(4)]
    pair_bias = [[Value(rng.uniform(-1, 1)) for _ in range(5)] for _ in range(4)]
    if shape == "a weight used twice in a vector":
        for row in W:
            row[2] = row[0]
    params = [
        *{id(p): p for p in [*b, *(w for row in W for w in row), *(p for r in pair_bias for p in r)]}.values()
    ]

    def layer(X):
        if shape == "inputs that are weights":
            X = [*W, [W[0][0], W[1][1], W[2][2]]]
        out = []
        for j, x in enumerate(X):
            for i in range(4):
                bias = {"a bias per pair": pair_bias[i][j], "bias is a weight": W[i][1]}.get(shape, b[i])
                out.append(engine.dot(W[i], x, bias))
        return sum_values([o * o for o in out])

    X = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(5)]
    eager, expected = loss_and_grads(layer, params, [[Value(x) for x in row] for row in X])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no C compiler: numpy, with a note
        f = chainrule.compile(layer, backend=backend)
        compiled, got = loss_and_grads(f, params, X)
    assert any(isinstance(g, tape_module._MatmulGroup) for g in f.last_tape.groups)
    assert [compiled, *got] == pytest.approx([eager, *expected], rel=1e-12, abs=1e-12)
