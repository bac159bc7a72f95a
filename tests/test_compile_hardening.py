"""chainrule.compile never returns stale numbers: detach/no_grad, .data reads, bad arguments.

Issue 8. The oracle is eager chainrule run on the same numbers: for every function here the
compiled call must give eager's forward values and eager's parameter gradients on inputs (and
parameter values) other than the ones it was traced with. Where a trace cannot replay what
eager does, tracing must say so (a ``TraceWarning`` for user code, an error for chainrule's own
functions) instead of freezing a number silently.
"""

import importlib.util
import math
import threading
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest

np = pytest.importorskip("numpy")  # chainrule.compile is the `fast` extra

import chainrule  # noqa: E402
from chainrule import Value, autograd, enable_grad, no_grad  # noqa: E402
from chainrule.losses import mse  # noqa: E402
from chainrule.nn import MLP  # noqa: E402
from chainrule.optim import SGD  # noqa: E402

SLOTS = {name: Value.__dict__[name] for name in ("data", "grad", "__float__")}  # as outside traces


def assert_slots_restored():
    assert {name: Value.__dict__[name] for name in SLOTS} == SLOTS


def assert_close(compiled, eager, what):
    assert math.isclose(compiled, eager, rel_tol=1e-12, abs_tol=1e-12), f"{what}: {compiled!r} != {eager!r}"


def as_list(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]


def as_leaves(arg):
    """Numbers as leaf Values, in the same lists and tuples: what a trace passes to ``fn``."""
    if isinstance(arg, (list, tuple)):
        return type(arg)(as_leaves(a) for a in arg)
    return Value(arg)


def check_against_eager(fn, params, calls):
    """Compile ``fn`` and, for each (parameter values, arguments) in ``calls``, compare a compiled
    call with an eager one: every output's value, then the parameters' grads after backward of
    each output in turn. The first call traces; the others replay on new numbers."""
    compiled_fn = chainrule.compile(fn)
    for param_values, args in calls:
        for p, x in zip(params, param_values, strict=True):
            p.data, p.grad = x, 0.0
        eager = as_list(fn(*as_leaves(args)))
        eager_grads = []
        for out in eager:
            out.backward()
            eager_grads.append([p.grad for p in params])
        for p in params:
            p.grad = 0.0
        compiled = as_list(compiled_fn(*args))
        assert len(compiled) == len(eager)
        for i, (c, e) in enumerate(zip(compiled, eager)):
            assert_close(c.data, e.data, f"output {i} at {param_values}, {args}")
        for i, c in enumerate(compiled):
            c.backward()
            for j, p in enumerate(params):
                assert_close(p.grad, eager_grads[i][j], f"grad of param {j} after output {i}, at {args}")
    assert len(compiled_fn.tapes) == 1
    return compiled_fn


# ---------------------------------------------------------------------------------------------
# 1. detach() and no_grad() inside a traced function replay from the new numbers.

CALLS = [([1.5], [2.0]), ([1.5], [-3.0]), ([0.5], [0.25]), ([-2.0], [7.0])]


def test_x_over_its_detached_self_is_one_at_every_input():
    f = chainrule.compile(lambda x: x / x.detach())
    assert [f(x).data for x in (2.0, 5.0, -0.5)] == [1.0, 1.0, 1.0]


def test_detach_replays_forward_and_blocks_the_gradient():
    w = Value(0.0)
    # d/dw (w x) / stop(w x) = x / (w x) = 1 / w: only the numerator carries a gradient
    check_against_eager(lambda x: (w * x) / (w * x).detach(), [w], CALLS)
    check_against_eager(lambda x: w.detach() * x + w * w, [w], CALLS)  # a parameter detached
    check_against_eager(lambda x: (w * x).detach() * w + x.detach(), [w], CALLS)


def test_ops_under_no_grad_replay_and_carry_no_gradient():
    w = Value(0.0)

    def fn(x):
        with no_grad():
            s = (w * x * 2.0).tanh()
            t = s + w * 3.0  # an op on a no_grad result, still under no_grad
        return s * w + t * x + w

    check_against_eager(fn, [w], CALLS)


def test_no_grad_as_a_decorator_inside_the_traced_function():
    w = Value(0.0)

    @no_grad()
    def baseline(x):
        return chainrule.sum_values([w * x, x * x, w.exp()])

    check_against_eager(lambda x: w * x - baseline(x), [w], CALLS)


def test_enable_grad_inside_no_grad_records_again():
    w = Value(0.0)

    def fn(x):
        with no_grad():
            a = w * x
            with enable_grad():
                b = w * a  # recorded: a gradient flows to w through this factor only
            c = b + a  # not recorded
        return c * w + b

    check_against_eager(fn, [w], CALLS)


def test_a_no_grad_result_returned_as_it_is():
    w = Value(0.0)

    def fn(xs):
        with no_grad():
            stopped = w * xs[0]
        return stopped, w * xs[1], xs[0].detach()

    pairs = zip([2.0, -1.0, 3.0], [(1.0, 2.0), (3.0, 4.0), (-5.0, 0.5)])
    check_against_eager(fn, [w], [([v], [[x, y]]) for v, (x, y) in pairs])


def test_detached_values_in_sums_and_dot_products_the_compiler_folds():
    ws = [Value(0.0) for _ in range(3)]

    def fn(xs):
        plain = sum(w * x for w, x in zip(ws, xs))
        stopped = sum(w.detach() * x for w, x in zip(ws, xs))  # a dot over detached weights
        with no_grad():
            frozen_dot = chainrule.dot(ws, xs, ws[0])
        return plain * stopped + frozen_dot * ws[1] + sum(x.detach() for x in xs)

    calls = [([0.5, -1.0, 2.0], [1.0, 2.0, 3.0]), ([1.5, 0.25, -2.0], [-1.0, 0.5, 4.0])]
    check_against_eager(fn, ws, [(p, [xs]) for p, xs in calls])


def test_a_model_output_under_no_grad_as_a_baseline():
    model = MLP(2, [3, 1], activation="tanh")
    params = model.parameters()
    start = [p.data for p in params]

    def fn(x, y):
        with no_grad():
            baseline = model(x)  # e.g. a REINFORCE-style baseline
        return (model(x) - baseline + y) ** 2 + mse(model(x), y)

    shifted = [v + 0.3 for v in start]
    check_against_eager(fn, params, [(start, ([0.5, -1.0], 0.5)), (shifted, ([2.0, 1.0], -1.0))])


def test_no_gradient_leaks_through_a_stop_from_an_overflow_below_it():
    w = Value(0.0)

    def under_no_grad(x):
        with no_grad():
            s = (w * x).exp()  # inf for a large x; eager never differentiates it
        return w * x + (-s).relu()

    def detached(x):
        s = (w * x).exp().detach()  # exp is recorded here, but only reached through the detach
        return w * x + (-s).relu()

    # traced at a small x, replayed where exp overflows: w.grad must stay x, not 0 * inf = nan
    for fn in (under_no_grad, detached):
        check_against_eager(fn, [w], [([1.0], [1.0]), ([1.0], [1000.0]), ([2.0], [800.0])])


def test_detach_inside_no_grad_and_a_detached_input_used_twice():
    w = Value(0.0)

    def fn(x):
        d = x.detach()
        with no_grad():
            e = (w * d).detach() + d
        return w * d * d + e * w

    check_against_eager(fn, [w], CALLS)


def test_detecting_anomalies_a_detached_nan_input_passes_as_in_eager():
    # detach is no op, so detect_anomaly has nothing to flag; an op on the nan still raises
    w = Value(1.0)
    f = chainrule.compile(lambda x: (w * 2.0, x.detach()))
    g = chainrule.compile(lambda x: w * x.detach())
    f(1.0), g(1.0)
    with chainrule.detect_anomaly():
        assert math.isnan(f(math.nan)[1].data)
        with pytest.raises(chainrule.AnomalyError, match=r"\*"):
            g(math.nan)
        with pytest.raises(chainrule.AnomalyError, match=r"\*"):
            w * Value(math.nan).detach()  # eager agrees


def test_detach_keeps_the_label_and_no_grad_results_look_like_eager_ones_while_tracing():
    w = Value(1.0, label="w")
    seen = {}

    def fn(x):
        seen["label"] = w.detach().label
        with no_grad():
            seen["grad enabled"] = chainrule.is_grad_enabled()
        return w * x

    chainrule.compile(fn)(2.0)
    assert seen == {"label": "w", "grad enabled": False}


def test_the_compiled_function_of_a_gradient_replays_with_create_graph():
    """``chainrule.grad`` inside a compiled function builds its gradient with create_graph, so
    the gradient's own graph is traced and replays on new numbers."""
    w = Value(0.0)
    f = lambda x: w * x**3 + (w * x).tanh()  # noqa: E731
    check_against_eager(lambda x: chainrule.grad(f)(x), [w], CALLS)


def test_an_empty_sum_and_an_empty_dot_inside_a_trace():
    w = Value(0.0)
    check_against_eager(lambda x: chainrule.sum_values([]) + w * x + chainrule.dot([], [], w), [w], CALLS)


# ---------------------------------------------------------------------------------------------
# Chainrule's own functions that would freeze a traced number refuse while tracing.


def test_backward_inside_the_traced_function_raises_at_trace_time():
    w = Value(2.0)

    def fn(x):
        loss = w * x
        loss.backward()  # would run only while tracing: replays would never touch w.grad
        return loss

    f = chainrule.compile(fn)
    with pytest.raises(NotImplementedError, match=r"backward\(\).*compiled"):
        f(3.0)
    assert len(f.tapes) == 0 and w.grad == 0.0


def test_backward_of_an_earlier_compiled_result_inside_a_trace_raises():
    w = Value(2.0)
    earlier = chainrule.compile(lambda x: w * x)(3.0)

    def fn(x):
        earlier.backward()
        return w * x

    f = chainrule.compile(fn)
    with pytest.raises(NotImplementedError, match=r"backward\(\)"):
        f(1.0)
    assert len(f.tapes) == 0 and w.grad == 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda w, x: w * autograd.grad(w * x * x, [w])[0],
        lambda w, x: w * chainrule.hvp(lambda v: v * v * w, [x], [1.0])[0],  # its last pass gives floats
        lambda w, x: w * chainrule.hessian(lambda v: v * v * w)(x)[0][0],
        # Graphs of the fast ops alone, whose first-order backward runs in C, around the watch:
        lambda w, x: x * autograd.grad(w * w * 2.0, [w])[0],
        lambda w, x: x * autograd.grad((w * 3.0).tanh() + w, [w])[0],
        lambda w, x: (w * w).backward() or x * w.grad,
        lambda w, x: autograd.grad(x * x + w, [x])[0] * w,
    ],
)
def test_gradients_as_floats_inside_a_trace_raise(fn):
    w = Value(2.0)
    f = chainrule.compile(lambda x: fn(w, x))
    with pytest.raises(NotImplementedError, match="backward"):
        f(3.0)
    assert len(f.tapes) == 0


@pytest.mark.parametrize("op", [lambda v: v.relu(), lambda v: v ** Value(2.0)])
def test_a_gradient_that_branches_on_a_traced_number_raises(op):
    # relu's gradient, and x ** y's with respect to y, branch on the sign of x: a trace would
    # freeze the branch taken at trace time.
    w = Value(0.5)
    f = chainrule.compile(lambda x: chainrule.grad(lambda v: op(v * w))(x))
    with pytest.raises(NotImplementedError, match="frozen"):
        f(3.0)
    assert len(f.tapes) == 0


@pytest.mark.parametrize(
    "inside",
    [
        lambda model, x: SGD(model.parameters(), lr=0.1).step(),
        lambda model, x: model.state_dict(),
        lambda model, x: chainrule.gradcheck(lambda v: v * v, [x]),
        lambda model, x: model.zero_grad(),  # would zero the gradients once, not at every call
        lambda model, x: SGD(model.parameters(), lr=0.1).zero_grad(),
        lambda model, x: model.load_state_dict(model.state_dict()),
        lambda model, x: (model.parameters()[0] * x).backward(create_graph=True),
    ],
    ids=[
        "optimizer step",
        "state_dict",
        "gradcheck",
        "zero_grad",
        "optimizer zero_grad",
        "load_state_dict",
        "backward with create_graph",
    ],
)
def test_library_functions_that_read_numbers_refuse_while_tracing(inside):
    model = MLP(2, [2, 1])
    before = [p.data for p in model.parameters()]

    def fn(x):
        inside(model, x)
        return model([x, x])

    for p in model.parameters():
        p.grad = 0.5
    f = chainrule.compile(fn)
    with pytest.raises(NotImplementedError, match="tracing"):
        f(1.0)
    assert len(f.tapes) == 0
    assert [p.data for p in model.parameters()] == before
    assert [p.grad for p in model.parameters()] == [0.5] * len(before)


# ---------------------------------------------------------------------------------------------
# 2. Reading .data of a Value made outside the function warns, like a traced value's.


def test_reading_data_of_a_parameter_in_a_branch_warns():
    w = Value(2.0)

    def fn(x):
        if w.data > 1:  # frozen: the branch taken at trace time
            return w * x
        return -w * x

    f = chainrule.compile(fn)
    with pytest.warns(chainrule.TraceWarning, match="outside the function") as record:
        f(1.0)
    assert record[0].filename == __file__  # the warning points at the user's line


def test_using_data_of_a_parameter_as_a_number_warns():
    w = Value(2.0)
    f = chainrule.compile(lambda x: w.data * x)
    with pytest.warns(chainrule.TraceWarning, match="frozen"):
        f(1.0)


@pytest.mark.parametrize(
    "touch",
    [
        lambda w, x: w.grad * x,  # the gradient as it was while tracing
        lambda w, x: setattr(w, "grad", 0.0),  # zeroed once, not at every call
        lambda w, x: setattr(w, "data", 1.0),  # set once, not at every call
    ],
    ids=["read .grad", "write .grad", "write .data"],
)
def test_touching_grad_or_writing_data_of_a_parameter_warns(touch):
    w = Value(2.0)

    def fn(x):
        touch(w, x)
        return w * x

    with pytest.warns(chainrule.TraceWarning, match="once, while tracing|frozen"):
        chainrule.compile(fn)(1.0)


def test_reading_data_of_a_value_made_by_detach_warns_as_a_traced_value():
    f = chainrule.compile(lambda x: x * x.detach().data)
    with pytest.warns(chainrule.TraceWarning, match="traced value"):
        f(1.0)


def test_chainrule_internals_and_display_read_data_without_warning():
    model = MLP(2, [4, 3])
    w = Value(0.5, label="w")

    def fn(X, y):
        repr(w), str(model.layers[0].neurons[0].w[0])  # display, not computation
        if importlib.util.find_spec("graphviz"):  # the drawing reads numbers for its labels
            chainrule.draw_dot(w * X[0][0])
        losses = [chainrule.losses.cross_entropy(model(x), [t, 1 - t, 0.0]) for x, t in zip(X, y)]
        return chainrule.sum_values(losses) * w + chainrule.logsumexp([w, w * 2.0]) + w.detach()

    f = chainrule.compile(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f([[0.5, -1.0], [2.0, 0.1]], [1.0, 0.0])
        f([[1.5, -0.5], [-2.0, 0.3]], [0.0, 1.0]).backward()


def test_the_slot_is_restored_after_tracing_even_when_fn_raises():
    w = Value(2.0)
    chainrule.compile(lambda x: w * x)(1.0)
    assert_slots_restored()

    def failing(x):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        chainrule.compile(failing)(1.0)
    assert_slots_restored()
    assert w.data == 2.0  # and Values read as before


def start_a_paused_trace(body):
    """Trace, in another thread, a function that waits inside its trace until released and then
    returns ``body(3.0)``; return the thread, the release event and the list its result goes to."""
    inside, release, results = threading.Event(), threading.Event(), []

    def slow(x):
        inside.set()
        release.wait(10)
        return body(x)

    compiled = chainrule.compile(slow)
    thread = threading.Thread(target=lambda: results.append(compiled(3.0).data))
    thread.start()
    assert inside.wait(10)
    return thread, release, results


def test_tracing_in_one_thread_does_not_touch_eager_code_in_another():
    w = Value(2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread, release, results = start_a_paused_trace(lambda x: w * x)
        # eager code here, while the other thread is inside its trace: no warnings, right numbers
        y = w.data * 2.0 + (w * w).data
        with no_grad():
            z = w * 3.0
        assert (y, z.children, z.data) == (8.0, (), 6.0)
        d = w.detach()
        assert (d.children, d.data) == ((), 2.0)
        release.set()
        thread.join(10)
    assert results == [6.0]
    assert caught == []
    assert_slots_restored()


def test_overlapping_traces_in_two_threads_each_keep_watching_until_they_end():
    w = Value(2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the paused trace reads w.data after the trace below has begun and ended
        thread, release, results = start_a_paused_trace(lambda x: w * x * w.data)
        chainrule.compile(lambda x: w * x)(1.0)
        release.set()
        thread.join(10)
    assert results == [12.0]
    assert [type(c.message) for c in caught] == [chainrule.TraceWarning]
    assert_slots_restored()


# ---------------------------------------------------------------------------------------------
# 3. Arguments that eager refuses are refused, before tracing and on replay.

W = Value(2.0)


def eager_fn(xs, *rest):
    return W * xs[0] + xs[1]


BAD = [
    (["1.5", 1.0], TypeError, r"argument 0\[0\].*str"),
    ([b"1", 1.0], TypeError, r"argument 0\[0\].*bytes"),
    ([1 + 2j, 1.0], TypeError, r"argument 0\[0\].*complex"),
    ([None, 1.0], TypeError, r"argument 0\[0\].*NoneType"),
    ([Decimal("1.5"), 1.0], TypeError, r"argument 0\[0\].*Decimal"),
    ([{1: 2}, 1.0], TypeError, r"argument 0\[0\].*dict"),
    ([1.0, [2.0, "x"]], TypeError, r"argument 0\[1\]\[1\].*str"),
    (np.array(["1.5", "2"]), TypeError, r"argument 0.*str"),
    (np.array([1 + 0j, 1]), TypeError, r"argument 0.*complex"),
    (np.array([1.0, None], dtype=object), TypeError, r"argument 0\[1\].*NoneType"),
    (np.array(["a", 1.0], dtype=object), TypeError, r"argument 0\[0\].*str"),
    ([10**400, 1.0], OverflowError, r"argument 0\[0\].*too large"),
    ("ab", TypeError, r"argument 0.*str"),
    (b"ab", TypeError, r"argument 0.*bytes"),
]


@pytest.mark.parametrize("bad, error, message", BAD)
def test_an_argument_eager_refuses_is_refused_before_tracing_and_on_replay(bad, error, message):
    if not isinstance(bad, (str, bytes)):
        with pytest.raises(error):
            eager_fn(bad)  # the oracle: eager refuses it too
    fresh = chainrule.compile(eager_fn)
    with pytest.raises(error, match=message):
        fresh(bad)
    assert len(fresh.tapes) == 0

    traced = chainrule.compile(eager_fn)
    traced([1.0, 2.0])
    with pytest.raises(error, match=message):
        traced(bad)
    assert len(traced.tapes) == 1
    assert traced([3.0, 4.0]).data == 10.0  # the cached trace still works


def test_the_position_names_a_later_argument():
    f = chainrule.compile(lambda a, b, c: W * a + b[0] + c)
    with pytest.raises(TypeError, match=r"argument 2.*complex"):
        f(1.0, [2.0], 3j)
    with pytest.raises(TypeError, match=r"argument 1\[0\].*NoneType"):
        f(1.0, [None], 3.0)


@pytest.mark.parametrize(
    "good",
    [
        [np.True_, 1.0],
        [np.int64(3), np.float32(0.5)],
        [Fraction(1, 3), True],
        np.array([True, False]),
        np.array([1.0, 2.0], dtype=object),
        np.array([3, 4], dtype=np.uint8),
        [10**30, 1],
        (np.int64(2), 1.5),
    ],
)
def test_real_numbers_eager_accepts_are_accepted(good):
    f = chainrule.compile(eager_fn)
    assert_close(f(good).data, eager_fn(good).data, "forward")
    f2 = chainrule.compile(lambda x: W * x)
    assert_close(f2(good[0]).data, (W * good[0]).data, "a scalar argument")


# ---------------------------------------------------------------------------------------------
# Work the result does not need is left off the tape, and counted out of the folding.


def test_nodes_the_result_does_not_use_are_dropped_and_the_rest_replays_as_eager():
    w, v = Value(0.5), Value(-1.5)

    def fn(x, y):
        shared = w * x  # used once by the result and once by unused work
        unused = (shared + v * y).exp()  # a chain of unused nodes ...
        unused = unused * unused + w.tanh()  # ... that reads a parameter only it uses
        return shared + v * y + (x * y).relu()  # a sum of products, once `unused` is counted out

    calls = [([0.5, -1.5], [2.0, 3.0]), ([0.25, 2.0], [-1.0, 0.5]), ([-3.0, 1.0], [0.75, -2.0])]
    compiled_fn = check_against_eager(fn, [w, v], calls)
    tape = compiled_fn.last_tape
    assert {group.rule.name for group in tape.groups} <= {"*", "dot", "relu", "+", "sum"}
    assert tape.externals == [w, v]  # w.tanh() was only read by unused work


# ---------------------------------------------------------------------------------------------
# The garbage collector is held off while tracing, and put back as it was in every case.


def test_the_collector_is_off_while_tracing_and_back_on_afterwards():
    import gc

    seen = []

    def fn(x):
        seen.append(gc.isenabled())
        return x * 2.0

    assert gc.isenabled()
    chainrule.compile(fn)(1.0)
    assert seen == [False] and gc.isenabled()


def test_the_collector_is_back_on_after_a_trace_that_raises():
    import gc

    def fn(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        chainrule.compile(fn)(1.0)
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off():
    import gc

    gc.disable()
    try:
        chainrule.compile(lambda x: x * 2.0)(1.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_two_ops_of_the_same_name_at_the_same_depth_each_keep_their_own_rule():
    # The tape groups nodes by op; grouped by name, the second op silently ran the first's rule.
    from chainrule import ops
    from chainrule.engine import apply

    square = ops.Op("mine", lambda x: x * x, lambda g, out, x: (2 * x * g,), lambda np, X: X[0] * X[0])
    cube = ops.Op(
        "mine", lambda x: x * x * x, lambda g, out, x: (3 * x * x * g,), lambda np, X: X[0] * X[0] * X[0]
    )
    w = Value(0.5)

    def fn(x):
        shifted = x + w
        return apply(square, shifted) + apply(cube, shifted)

    f = chainrule.compile(fn, backend="numpy")
    for x in (2.0, -1.5):
        w.grad = 0.0
        eager = fn(Value(x))
        eager.backward()
        eager_grad, w.grad = w.grad, 0.0
        compiled = f(x)
        compiled.backward()
        assert_close(compiled.data, eager.data, "forward")
        assert_close(w.grad, eager_grad, "gradient")
    assert f(1.5).data == 2.0**2 + 2.0**3  # the oracle by hand: (1.5 + 0.5)^2 + (1.5 + 0.5)^3
