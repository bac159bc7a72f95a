"""Numbers and errors: float64 extremes, out-of-domain ops, bad data, and graphs that survive a failed op.

Oracles: mpmath at 50 digits for tanh and sigmoid, Python's own floats for IEEE overflow, and hand
calculus (in comments) for the gradients checked after a failed op.
"""

import fractions
import math

import mpmath
import pytest

from chainrule import Value, topological_order

# ---------------------------------------------------------------------------------------------
# 5a. tanh and sigmoid stay finite and correct far out.

EXTREMES = [-1e6, -1000.0, -40.0, -20.0, 20.0, 40.0, 1000.0, 1e6]


def _exact(f, x):
    """f(x) evaluated by mpmath at 50 digits and rounded once to a float."""
    with mpmath.workdps(50):
        return float(f(mpmath.mpf(x)))


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _dsigmoid(x):
    # d/dx 1/(1 + e^-x) = e^-x / (1 + e^-x)^2
    return mpmath.exp(-x) / (1 + mpmath.exp(-x)) ** 2


def _dtanh(x):
    # d/dx tanh x = 1 / cosh^2 x
    return 1 / mpmath.cosh(x) ** 2


@pytest.mark.parametrize("x", EXTREMES)
def test_tanh_is_finite_and_correct_far_out(x):
    v = Value(x)
    y = v.tanh()
    y.backward()
    assert math.isfinite(y.data) and math.isfinite(v.grad)
    assert y.data == pytest.approx(_exact(mpmath.tanh, x), rel=1e-15)
    # The true slope is below 1.7e-17 here; only an absolute comparison means anything.
    assert v.grad == pytest.approx(_exact(_dtanh, x), abs=1e-16)


@pytest.mark.parametrize("x", EXTREMES)
def test_sigmoid_is_finite_and_correct_far_out(x):
    v = Value(x)
    y = v.sigmoid()
    y.backward()
    assert math.isfinite(y.data) and math.isfinite(v.grad)
    assert y.data == pytest.approx(_exact(_sigmoid, x), rel=1e-15, abs=1e-300)
    assert v.grad == pytest.approx(_exact(_dsigmoid, x), abs=1e-16)


@pytest.mark.parametrize("x", [-1e6, -1000.0, 1000.0, 1e6])
def test_tanh_and_sigmoid_saturate_exactly(x):
    # At |x| >= 1000 the exact answers round to these floats: tanh -> +-1, sigmoid -> 1 or 0, and
    # every slope (below e^-1000 ~ 1e-435) rounds to 0.
    a, b = Value(x), Value(x)
    t, s = a.tanh(), b.sigmoid()
    t.backward()
    s.backward()
    assert t.data == math.copysign(1.0, x)
    assert s.data == (1.0 if x > 0 else 0.0)
    assert a.grad == 0.0 and b.grad == 0.0


# ---------------------------------------------------------------------------------------------
# 5b. IEEE overflow in + and * behaves like Python floats.


def test_add_and_mul_overflow_to_infinity_like_floats():
    assert (Value(1e308) * 10).data == 1e308 * 10 == math.inf
    assert (Value(-1e308) * 10).data == -1e308 * 10 == -math.inf
    assert (Value(1e308) + Value(1e308)).data == 1e308 + 1e308 == math.inf
    assert (10 * Value(1e308)).data == math.inf
    assert math.isnan((Value(math.inf) - Value(math.inf)).data)


def test_exp_and_pow_overflow_to_infinity():
    # math.exp(1000) and 10.0 ** 400 raise OverflowError; the engine gives IEEE's inf instead.
    assert Value(1000.0).exp().data == math.inf
    assert (Value(10.0) ** 400).data == math.inf
    assert (Value(-10.0) ** 401).data == -math.inf
    assert (2.0 ** Value(5000.0)).data == math.inf


def test_pow_gradients_overflow_to_infinity_instead_of_raising():
    # d/dx x**3 = 3 x**2 at 1e200 is 3e400: past the float range, so IEEE says inf.
    a = Value(1e200)
    (a**3).backward()
    assert a.grad == math.inf
    # d/dx x**y = y x**(y-1) = -x**-2 at x = 7.5e-160 also leaves the range, with y's sign.
    x, y = Value(7.5e-160), Value(-1.0)
    (x**y).backward()
    assert x.grad == -math.inf
    assert y.grad == pytest.approx((7.5e-160) ** -1.0 * math.log(7.5e-160), rel=1e-12)


def test_infinity_and_nan_are_allowed_as_data():
    assert Value(math.inf).data == math.inf
    assert math.isnan(Value(math.nan).data)


# ---------------------------------------------------------------------------------------------
# 5c. Out-of-domain ops and bad data raise the right error, naming the op and the operand, and
# leave the graph as it was.


def _graph(x):
    """y = x * x + 3x with x labelled 'x'; dy/dx = 2x + 3."""
    v = Value(x, label="x")
    return v, v * v + 3 * v


# (name, data of x, the failing op on x, error type, substrings the message must contain)
FAILING_OPS = [
    ("log(0)", 0.0, lambda x: x.log(), ValueError, ["log", "0.0", "'x'"]),
    ("log(-1)", -1.0, lambda x: x.log(), ValueError, ["log", "-1.0", "'x'"]),
    ("x / 0", 1.0, lambda x: x / 0, ZeroDivisionError, ["/", "1.0", "0.0"]),
    ("x / Value(0)", 1.0, lambda x: x / Value(0.0), ZeroDivisionError, ["/", "1.0", "0.0"]),
    ("1 / x at 0", 0.0, lambda x: 1 / x, ZeroDivisionError, ["/", "0.0", "'x'"]),
    ("x ** -1 at 0", 0.0, lambda x: x**-1, ZeroDivisionError, ["**", "0.0", "-1"]),
    ("x ** Value(-2) at 0", 0.0, lambda x: x ** Value(-2.0), ZeroDivisionError, ["pow", "0.0", "-2.0"]),
    ("(-8) ** (1/3)", -8.0, lambda x: x ** (1 / 3), ValueError, ["**", "-8.0", "0.333"]),
    ("x ** Value(0.5) at -8", -8.0, lambda x: x ** Value(0.5), ValueError, ["pow", "-8.0", "0.5"]),
    ("(-2) ** x at 0.5", 0.5, lambda x: (-2) ** x, ValueError, ["pow", "-2.0", "0.5", "'x'"]),
    ("0 ** x at -1", -1.0, lambda x: 0**x, ZeroDivisionError, ["pow", "0.0", "-1.0", "'x'"]),
    ("x + 'x'", 1.0, lambda x: x + "x", TypeError, ["str", "Value"]),
    ("'x' * x", 1.0, lambda x: "x" * x, TypeError, ["Value"]),
    ("x - None", 1.0, lambda x: x - None, TypeError, ["NoneType", "Value"]),
    ("[1] / x", 1.0, lambda x: [1] / x, TypeError, ["list", "Value"]),
    ("x ** 'a'", 1.0, lambda x: x ** "a", TypeError, ["str", "Value"]),
]


@pytest.mark.parametrize(
    "data, failing_op, error, words", [case[1:] for case in FAILING_OPS], ids=[c[0] for c in FAILING_OPS]
)
def test_failed_op_raises_a_named_error_and_leaves_the_graph_usable(data, failing_op, error, words):
    x, y = _graph(data)
    before = topological_order(y)
    children_before = [node.children for node in before]
    with pytest.raises(error) as raised:
        failing_op(x)
    message = str(raised.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # The graph is exactly what it was: same nodes, same children, nothing new attached.
    after = topological_order(y)
    assert after == before
    assert [node.children for node in after] == children_before
    assert all(node.grad == 0.0 for node in after)
    # And it still works: dy/dx = 2x + 3
    y.backward()
    assert x.grad == 2 * data + 3
    # The same op on good data works afterwards.
    assert (x + 1).data == data + 1


@pytest.mark.parametrize(
    "data, type_name",
    [("abc", "str"), (None, "NoneType"), ([1], "list"), (1 + 2j, "complex"), ({}, "dict"), (b"1", "bytes")],
)
def test_value_of_something_not_a_real_number_is_a_type_error_naming_the_type(data, type_name):
    with pytest.raises(TypeError, match=type_name):
        Value(data)


def test_real_numbers_of_any_type_become_floats():
    for data, expected in [(3, 3.0), (True, 1.0), (fractions.Fraction(1, 4), 0.25), (-0.0, -0.0)]:
        v = Value(data)
        assert type(v.data) is float
        assert v.data == expected


def test_an_integer_too_large_for_a_float_is_an_overflow_error():
    with pytest.raises(OverflowError, match="too large"):
        Value(10**400)


def test_errors_name_the_labels_of_both_operands():
    a, b = Value(2.0, label="numerator"), Value(0.0, label="denominator")
    with pytest.raises(ZeroDivisionError) as raised:
        a / b
    assert "numerator" in str(raised.value) and "denominator" in str(raised.value)


# ---------------------------------------------------------------------------------------------
# Gradients at the edge of a domain: the value is defined and so is its derivative.


def test_zero_to_a_value_power_has_zero_gradient_in_the_exponent():
    # f(y) = 0 ** y = 0 for every y > 0, so df/dy = 0. The base is a constant, so nothing else
    # needs a gradient.
    y = Value(0.5, label="y")
    f = 0**y
    assert f.data == 0.0
    f.backward()
    assert y.grad == 0.0


def test_x_to_the_zero_has_zero_gradient_at_zero():
    # f(x) = x ** 0 = 1 for every x, so df/dx = 0, also at x = 0.
    x = Value(0.0)
    f = x**0
    assert f.data == 1.0
    f.backward()
    assert x.grad == 0.0


def test_a_failed_backward_leaves_gradients_unchanged():
    # d/dy of (-2) ** y has no real value (it needs log(-2)), so backward must raise; it must
    # not leave half a pass of gradients behind.
    y = Value(2.0, label="y")
    x = Value(3.0, label="x")
    root = x * ((-2.0) ** y)
    with pytest.raises(ValueError, match="pow"):
        root.backward()
    assert [n.grad for n in topological_order(root)] == [0.0] * len(topological_order(root))
