"""gradcheck on every op (finite differences are the oracle), gradcheck's own failure report, and
detect_anomaly in forward and backward.
"""

import math

import pytest

import chainrule
from chainrule import (
    AnomalyError,
    GradcheckError,
    Value,
    detect_anomaly,
    dot,
    gradcheck,
    no_grad,
    sum_values,
)

# (name, function of Values, a point inside the op's domain and away from any kink)
EVERY_OP = [
    ("add", lambda a, b: a + b, [0.3, -1.2]),
    ("add number", lambda a: 2.5 + a + 1.5, [0.3]),
    ("sub", lambda a, b: a - b, [0.3, -1.2]),
    ("sub number", lambda a: 2.0 - a - 0.5, [0.3]),
    ("mul", lambda a, b: a * b, [0.3, -1.2]),
    ("mul number", lambda a: 3.0 * a * -0.5, [0.3]),
    ("div", lambda a, b: a / b, [0.7, -1.3]),
    ("rdiv", lambda a: 2.0 / a, [0.7]),
    ("neg", lambda a: -a, [0.7]),
    ("pow integer", lambda a: a**3, [-0.8]),
    ("pow negative integer", lambda a: a**-2, [-0.8]),
    ("pow fraction", lambda a: a**0.5, [1.7]),
    ("pow negative fraction", lambda a: a**-1.5, [1.7]),
    ("pow Value", lambda a, b: a**b, [1.3, 0.7]),
    ("rpow", lambda a: 2.0**a, [0.7]),
    ("rpow fraction base", lambda a: 0.3**a, [-1.1]),
    ("exp", lambda a: a.exp(), [0.4]),
    ("log", lambda a: a.log(), [0.4]),
    ("tanh", lambda a: a.tanh(), [0.4]),
    ("sigmoid", lambda a: a.sigmoid(), [-0.4]),
    ("relu positive", lambda a: a.relu(), [0.4]),
    ("relu negative", lambda a: a.relu(), [-0.4]),
    ("sum_values", lambda a, b: sum_values([a, b, a, 1.5]), [0.3, -1.2]),
    ("dot", lambda a, b, c: dot([a, b], [c, a], b), [0.3, -1.2, 0.8]),
    ("dot with numbers", lambda a, b: dot([a, 2.0], [0.5, b], 1.0), [0.3, -1.2]),
    ("reuse", lambda a, b: (a * b + a).tanh() * (a - b).exp() / (b * b + 1).log(), [0.3, -1.2]),
]


@pytest.mark.parametrize("fn, point", [c[1:] for c in EVERY_OP], ids=[c[0] for c in EVERY_OP])
def test_gradcheck_passes_on_every_op(fn, point):
    assert gradcheck(fn, point) is True


def test_gradcheck_accepts_values_as_inputs_and_leaves_them_alone():
    a = Value(0.5)
    assert gradcheck(lambda x: x * x, [a])
    assert a.grad == 0.0 and a.data == 0.5


def test_gradcheck_names_the_input_whose_gradient_is_wrong():
    # f(a, b) = a * b, but b is detached, so backward never reaches b: it reports 0 for b while
    # finite differences give df/db = a = 2. The gradient for a (b = 3) is right.
    def wrong(a, b):
        return a * b.detach()

    with pytest.raises(GradcheckError) as raised:
        gradcheck(wrong, [2.0, 3.0])
    message = str(raised.value)
    assert "input 1" in message
    assert "input 0" not in message
    assert "off by 2" in message  # the size of the disagreement, |0 - 2|


def test_gradcheck_reports_every_bad_input():
    # Both inputs detached: backward gives 0, 0; the true gradient is (b, a) = (3, 2).
    with pytest.raises(GradcheckError) as raised:
        gradcheck(lambda a, b: a.detach() * b.detach() + 0 * a, [2.0, 3.0])
    assert "input 0" in str(raised.value) and "input 1" in str(raised.value)


def test_gradcheck_wants_a_single_value():
    with pytest.raises(TypeError, match="Value"):
        gradcheck(lambda a: [a, a], [1.0])


# ---------------------------------------------------------------------------------------------
# detect_anomaly


def _anomaly_message(make):
    with detect_anomaly():
        with pytest.raises(AnomalyError) as raised:
            make()
    return str(raised.value)


def test_anomaly_in_forward_names_the_op_and_its_inputs():
    message = _anomaly_message(lambda: Value(1000.0, label="x").exp())
    assert "exp" in message and "inf" in message and "1000.0" in message and "'x'" in message


def test_anomaly_for_nan_from_infinities():
    # inf is fine as data; inf - inf = nan is the first anomaly
    def make():
        p, q = Value(math.inf, label="p"), Value(math.inf, label="q")
        return p - q

    message = _anomaly_message(make)
    assert "-" in message and "nan" in message and "'p'" in message and "'q'" in message


def test_anomaly_for_overflowing_multiplication():
    message = _anomaly_message(lambda: Value(1e308, label="big") * 10)
    assert "*" in message and "'big'" in message and "10.0" in message


def test_anomaly_in_backward_names_the_op():
    # d/dx log x = 1/x = 1/1e-320 overflows to inf, while log(1e-320) = -736.8 is finite.
    def make():
        x = Value(1e-320, label="tiny")
        x.log().backward()

    message = _anomaly_message(make)
    assert "backward" in message and "log" in message and "'tiny'" in message and "inf" in message


def test_anomaly_in_backward_through_a_power():
    # d/dx (1e300 * x ** 0.5) = 1e300 * 0.5 * x ** -0.5 = 0.5e400 at x = 1e-200: inf.
    def make():
        x = Value(1e-200, label="x")
        (x**0.5 * 1e300).backward()

    message = _anomaly_message(make)
    assert "backward" in message and "**" in message and "'x'" in message


def test_anomaly_error_leaves_gradients_untouched():
    x = Value(1e-320, label="tiny")
    y = x.log()
    with detect_anomaly():
        with pytest.raises(AnomalyError):
            y.backward()
    assert x.grad == 0.0 and y.grad == 0.0


def test_outside_detect_anomaly_nothing_raises():
    with detect_anomaly():
        assert (Value(2.0) * 3).data == 6.0  # finite results pass through
        assert Value(math.inf).data == math.inf  # and inf is allowed as data
    assert Value(1000.0).exp().data == math.inf
    assert math.isnan((Value(math.inf) - Value(math.inf)).data)
    x = Value(1e-320)
    x.log().backward()
    assert x.grad == math.inf


def test_detect_anomaly_ends_with_its_block_even_after_an_error():
    with pytest.raises(AnomalyError):
        with detect_anomaly():
            Value(1000.0).exp()
    assert Value(1000.0).exp().data == math.inf


def test_detect_anomaly_also_checks_inside_no_grad():
    with detect_anomaly(), no_grad():
        with pytest.raises(AnomalyError):
            Value(1000.0).exp()


def test_anomaly_error_is_a_floating_point_error():
    assert issubclass(chainrule.AnomalyError, FloatingPointError)
    assert issubclass(chainrule.GradcheckError, AssertionError)
