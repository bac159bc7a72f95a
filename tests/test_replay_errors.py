"""A compiled replay raises what eager raises: the same error, for the same node.

Eagerly an op raises the moment it is computed, whether or not the result uses its value
(``x.log()`` computed and thrown away still raises on x <= 0), and the first op to fail, in
the order the program runs, is the one reported. A replay runs the nodes grouped by depth,
and leaves out what the outputs do not need; so it must keep the nodes that can raise on the
tape all the same, and when several fail, report the one eager meets first.

The oracle is eager chainrule on the same numbers: its exception's type and message, or its
numbers. Every backend is checked ("numpy", "c", "auto"), with the node-by-node replay of thin
tapes on and off (CHAINRULE_SCALAR_REPLAY=0), with the layout in C and in Python, and with
``map_rows``, whose rows run one after another eagerly.
"""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, map_rows, no_grad, take
from chainrule.compiler import rewriting

pytest.importorskip("numpy")

BACKENDS = ("numpy", "c", "auto")


@pytest.fixture(params=["scalar replay", "group replay"])
def replay(request, monkeypatch):
    if request.param == "group replay":
        monkeypatch.setenv("CHAINRULE_SCALAR_REPLAY", "0")
    return request.param


@pytest.fixture(params=["C layout", "Python layout"])
def layout_in(request, monkeypatch):
    if request.param == "Python layout":
        monkeypatch.setattr(rewriting, "_in_c", None)
    return request.param


def outcome(call):
    """What a call gives: ("ok", its numbers) or ("error", exception type, message)."""
    try:
        result = call()
    except Exception as error:  # the oracle: any exception eager raises, compiled must too
        return ("error", type(error), str(error))
    results = result if isinstance(result, list) else [result]
    return ("ok", [v.data for v in results])


def same(a, b):
    """Outcomes equal, numbers to 1e-9 (nan equal to nan)."""
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return a == b
    return len(a[1]) == len(b[1]) and all(
        (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9, abs=1e-12)
        for x, y in zip(a[1], b[1])
    )


def eager_call(fn, args):
    """``fn`` run eagerly on fresh leaves holding ``args`` (a flat list of numbers)."""
    return lambda: fn([Value(x) for x in args])


def check_against_eager(fn, trace_args, call_args, backend):
    compiled = chainrule.compile(fn, backend=backend)
    assert outcome(lambda: compiled(trace_args))[0] == "ok"  # the trace itself must pass
    expected = outcome(eager_call(fn, call_args))
    got = outcome(lambda: compiled(call_args))
    assert same(got, expected), (backend, got, expected)
    return expected


# ---------------------------------------------------------------------------------------------
# A domain error in a value the result never uses.

w = Value(1.5)  # a parameter made outside the function


UNUSED = {  # each computes something that can raise, throws it away, and returns x[2] * w
    "log": (lambda x: x[0].log(), [0.0]),
    "log of a product": (lambda x: (x[0] * x[1]).log(), [-1.0]),
    "division": (lambda x: x[1] / x[0], [0.0]),
    "number / value": (lambda x: 2.0 / x[0], [0.0]),
    "value ** value": (lambda x: x[0] ** x[1], [-2.0, 0.5]),
    "value ** fraction": (lambda x: x[0] ** 0.5, [-1.0]),
    "zero ** negative": (lambda x: x[0] ** -1, [0.0]),
    "number ** value": (lambda x: 0.0 ** x[1], [1.0, -1.0]),
    "negative number ** value": (lambda x: (-2.0) ** x[1], [1.0, 0.5]),
    "take out of range": (lambda x: take([x[1], x[2]], x[0]), [5.0]),
    "take of a fraction": (lambda x: take([x[1], x[2]], x[0]), [0.5]),
    "log of a parameter's product": (lambda x: (x[0] * w).log(), [-2.0]),
    "used by an unused value": (lambda x: x[0].log().exp() + 1.0, [-1.0]),
    "under no_grad": (lambda x: _under_no_grad(x[0]), [-1.0]),
    "detached": (lambda x: x[0].detach().log(), [-1.0]),
}


def _under_no_grad(x):
    with no_grad():
        return x.log()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(UNUSED))
def test_an_unused_value_raises_as_eagerly(case, backend, replay, layout_in):
    side, bad = UNUSED[case]

    def fn(x):
        side(x)  # computed, never used
        return x[2] * w

    good = [1.0, 1.0, 1.0]
    bad_args = bad + good[len(bad) :]
    expected = check_against_eager(fn, good, bad_args, backend)
    assert expected[0] == "error"  # the case does raise eagerly
    check_against_eager(fn, good, good, backend)  # and the good numbers still replay


@pytest.mark.parametrize("backend", BACKENDS)
def test_unused_nodes_pass_no_gradient(backend, replay, layout_in):
    """A node kept only for its error is not on the way to the output: its local gradient (inf
    here: the slope of sqrt at 0) must not reach its inputs, as eager backward never visits it."""
    p = Value(0.0)

    def fn(x):
        (p * x[0]) ** 0.5  # at p = 0: value 0, slope inf
        return p * x[0] + x[1]

    compiled = chainrule.compile(fn, backend=backend)
    for args in ([1.0, 1.0], [2.0, 3.0], [2.0, 3.0]):
        p.grad = 0.0
        fn([Value(x) for x in args]).backward()
        expected = p.grad
        p.grad = 0.0
        result = compiled(args)
        result.backward()
        assert result.data == pytest.approx(p.data * args[0] + args[1])
        assert p.grad == expected == args[0]


# ---------------------------------------------------------------------------------------------
# Two domain errors: the first in eager's order wins.


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_of_two_errors_is_eagers(backend, replay, layout_in):
    # The deeper node is made first: replay by depth meets the other one first.
    def fn(x):
        a = (x[1] * x[2] * x[2]).log()
        b = (x[0] * x[2]).log()
        return a + b

    expected = check_against_eager(fn, [1.0, 1.0, 1.0], [-2.0, -1.0, 1.0], backend)
    assert expected[0] == "error" and "-1.0" in expected[2]  # a's, made first


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_error_among_ops_of_every_kind(backend, replay, layout_in):
    def fn(x):
        deep = ((x[0] * x[1] + x[2]) * x[3]).log()  # made first, deepest
        quotient = x[1] / x[3]
        power = x[2] ** 0.5
        picked = take([x[0], x[1]], x[3])
        return deep + quotient + power + picked

    good = [1.0, 1.0, 1.0, 1.0]
    for bad in ([1.0, 1.0, 1.0, 0.0], [1.0, 1.0, -1.0, 0.0], [1.0, 1.0, -1.0, 2.0], [1.0, 1.0, 1.0, 2.0]):
        assert check_against_eager(fn, good, bad, backend)[0] == "error"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wide_group_reports_its_first_node(backend, replay, layout_in):
    def fn(x):
        return [v.log() for v in x]  # one group: every node at one depth

    assert check_against_eager(fn, [1.0] * 6, [1.0, 2.0, -3.0, 1.0, -5.0, 0.0], backend)[0] == "error"


# ---------------------------------------------------------------------------------------------
# map_rows: eagerly, fn runs on one row after another, between the ops made before and after.


def _map_rows_program(x):
    rows = [x[0:2], x[2:4], x[4:6]]

    def row(r):
        (r[1] * w).log()  # never used
        return r[0] * w

    first = x[6].log()  # made before the rows
    out = map_rows(row, rows)
    (5.0 - out[0]).log()  # after the rows, never used
    return sum(out) + first


MAP_ROWS_CALLS = [
    [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0],  # no error
    [1.0, 1.0, 2.0, -2.0, 3.0, -3.0, 1.0],  # rows 1 and 2 fail: row 1's
    [6.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0],  # after the rows
    [6.0, 1.0, 2.0, -2.0, 3.0, 3.0, 1.0],  # row 1 and after: row 1's
    [1.0, 1.0, 2.0, -2.0, 3.0, 3.0, -1.0],  # before and row 1: before's
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call", range(len(MAP_ROWS_CALLS)))
def test_map_rows_raises_as_eagerly(backend, call, replay, layout_in):
    check_against_eager(_map_rows_program, MAP_ROWS_CALLS[0], MAP_ROWS_CALLS[call], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_rows_error_while_tracing_is_the_first_rows(backend):
    def row(r):
        (r[0] * w).log()
        return r[1] * w

    def fn(x):
        return sum(map_rows(row, [x[0:2], x[2:4], x[4:6]]))

    args = [1.0, 1.0, -2.0, 1.0, -3.0, 1.0]  # rows 1 and 2 fail while the copies are replayed
    expected = outcome(eager_call(fn, args))
    assert expected[0] == "error"
    assert outcome(lambda: chainrule.compile(fn, backend=backend)(args)) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_rows_through_a_layer_reports_eagers_row(backend, replay, layout_in):
    """A layer over the rows is one matrix product; after it, each row makes a deep log first and
    a shallow one second. Replay meets every row's shallow log before any deep one, eager goes
    row by row."""
    weights = [[Value(0.5), Value(-1.0)], [Value(1.0), Value(0.25)]]
    biases = [Value(0.0), Value(0.5)]

    def row(r):
        h = [chainrule.dot(w_u, r, b_u) for w_u, b_u in zip(weights, biases)]
        deep = (h[0] * h[1]).log()  # made first
        r[0].log()  # made second, never used
        return deep + h[0]

    def fn(x):
        return sum(map_rows(row, [x[0:2], x[2:4], x[4:6]]))

    good = [2.0, 0.5, 3.0, 0.5, 4.0, 0.5]
    row_1_deep = [2.0, 0.5, 1.0, 1.0, 4.0, 0.5]  # h = (-0.5, 1.75): the log of -0.875
    row_2_shallow = [2.0, 0.5, 3.0, 0.5, -4.0, -1.0]  # the log of -4 (h0 * h1 = 3.75)
    both = [2.0, 0.5, 1.0, 1.0, -4.0, -1.0]
    for args in (good, row_1_deep, row_2_shallow, both):
        check_against_eager(fn, good, args, backend)
    assert "-0.875" in outcome(eager_call(fn, both))[2]  # row 1's, though replay meets row 2's first


# ---------------------------------------------------------------------------------------------
# Random programs: each step an op on nodes made before; some results used, some thrown away.

NUMBERS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
N_INPUTS = 4
p1, p2 = Value(0.5), Value(-1.5)  # parameters


def _apply(op, a, b, c):
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    if op == "log":
        return a.log()
    if op == "** 0.5":
        return a**0.5
    if op == "** -1":
        return a**-1
    if op == "** value":
        return a**b
    if op == "0 ** value":
        return 0.0**a
    if op == "-2 ** value":
        return (-2.0) ** a
    if op == "take":
        return take([b, c], a)
    if op == "tanh":
        return a.tanh()
    if op == "relu":
        return a.relu()
    if op == "no_grad log":
        return _under_no_grad(a)
    if op == "detach":
        return a.detach()
    raise AssertionError(op)


OPS = ("+", "-", "*", "/", "log", "** 0.5", "** -1", "** value", "0 ** value", "-2 ** value")
OPS += ("take", "tanh", "relu", "no_grad log", "detach")


@st.composite
def programs(draw):
    n_steps = draw(st.integers(1, 8))
    steps = []
    for i in range(n_steps):
        pool = N_INPUTS + 2 + i  # inputs, parameters, then every step so far
        operands = draw(st.tuples(*[st.integers(0, pool - 1)] * 3))
        steps.append((draw(st.sampled_from(OPS)), operands))
    pool = N_INPUTS + 2 + n_steps
    returned = draw(st.lists(st.integers(0, pool - 1), min_size=1, max_size=3, unique=True))
    return steps, returned


def run_program(program, x):
    steps, returned = program
    nodes = [*x, p1, p2]
    for op, (a, b, c) in steps:
        nodes.append(_apply(op, nodes[a], nodes[b], nodes[c]))
    return [nodes[i] for i in returned]


@pytest.mark.slow  # 60 programs on each of 12 backend, replay and layout mixes: about 8 s
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    program=programs(),
    trace_args=st.lists(st.sampled_from(NUMBERS), min_size=N_INPUTS, max_size=N_INPUTS),
    calls=st.lists(
        st.lists(st.sampled_from(NUMBERS), min_size=N_INPUTS, max_size=N_INPUTS), min_size=1, max_size=4
    ),
)
def test_random_programs_raise_as_eagerly(backend, replay, layout_in, program, trace_args, calls):
    fn = lambda x: run_program(program, x)  # noqa: E731
    if outcome(eager_call(fn, trace_args))[0] != "ok":
        trace_args = [1.0] * N_INPUTS  # a program that fails here is skipped below
    if outcome(eager_call(fn, trace_args))[0] != "ok":
        return
    compiled = chainrule.compile(fn, backend=backend)
    compiled(trace_args)
    for args in calls:
        expected = outcome(eager_call(fn, args))
        got = outcome(lambda args=args: compiled(args))
        assert same(got, expected), (program, args, got, expected)
        if expected[0] == "ok":
            _check_gradients(fn, compiled, args)


def _check_gradients(fn, compiled, args):
    """The parameters' gradients of the first result, where eager's are finite; or the same
    error from backward."""
    grads = []
    for run in (fn, compiled):
        p1.grad = p2.grad = 0.0
        result = run([Value(x) for x in args] if run is fn else args)[0]
        grads.append(outcome(lambda result=result: result.backward() or [Value(p1.grad), Value(p2.grad)]))
    eager, got = grads
    if eager[0] == "error":
        assert got == eager
        return
    assert got[0] == "ok", (eager, got)
    for e, g in zip(eager[1], got[1]):
        if math.isfinite(e):
            assert g == pytest.approx(e, rel=1e-9, abs=1e-12), (eager, got)


# ---------------------------------------------------------------------------------------------
# The numbers in the message are eager's: numpy's tanh of an array can differ from math.tanh in
# the last bit (tanh(-1.5): ...665 against eager's ...664), and the message shows the number.


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forward_error_message_shows_eagers_numbers(backend, replay, layout_in):
    def fn(x):
        return [(x[1] * x[0] + 1.0).tanh(), (-2.0) ** (x[1] * x[0]).tanh()]  # wide enough for numpy

    compiled = chainrule.compile(fn, backend=backend)
    compiled([0.0, 1.0])  # traced where the power is (-2) ** 0
    for args in ([-1.5, 1.0], [2.0665311091502883, 1.0]):
        expected = outcome(eager_call(fn, args))
        assert expected[0] == "error" and "non-integer power" in expected[2]
        assert outcome(lambda args=args: compiled(args)) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backward_error_message_shows_eagers_numbers(backend, replay, layout_in):
    def fn(x):
        base = (x[0] * x[1]).tanh() - 1.0  # negative: x ** 2 is fine, its slope in 2 is not
        return base ** (x[1] + 1.0)

    compiled = chainrule.compile(fn, backend=backend)
    for args in ([-1.5, 1.0], [2.0665311091502883, 1.0]):
        eager = fn([Value(x) for x in args])
        expected = outcome(lambda eager=eager: eager.backward())
        assert expected[0] == "error" and "needs x > 0" in expected[2]
        result = compiled(args)
        assert outcome(lambda result=result: result.backward()) == expected
