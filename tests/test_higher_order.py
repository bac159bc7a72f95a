"""Higher-order derivatives: grad of grad, Value.backward(create_graph=True), Hessians and
Hessian-vector products.

Oracles: sympy differentiates the same random expressions exactly (evaluated at 40 digits by mpmath);
PyTorch float64 (``torch.autograd.grad(..., create_graph=True)``) when it is installed; hand
calculus, written out in comments, for the small cases.

The random expressions are built by hypothesis as a list of steps. Each step applies one op to
operands taken from a growing pool (the inputs, then every node built so far), so subexpressions
are reused. The same steps are replayed on four "backends": plain floats (only to keep every op
inside its domain at the chosen point), chainrule Values, sympy expressions and torch tensors.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import mpmath
import pytest
import sympy
from hypothesis import example, given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, autograd, engine, topological_order

# ---------------------------------------------------------------------------------------------
# Random expression graphs as data: a point, and a list of steps.


@dataclass(frozen=True)
class Const:
    """A number operand (a constant leaf in chainrule, an exact Rational in sympy)."""

    value: float


@dataclass(frozen=True)
class Step:
    """One op applied to operands: ints index the pool of nodes, Consts are numbers."""

    op: str
    operands: tuple


@dataclass(frozen=True)
class Graph:
    point: tuple  # the inputs' values
    steps: tuple  # the output is the last step's node


ARITHMETIC = ("+", "-", "*", "/")
UNARY = ("neg", "exp", "log", "tanh", "sigmoid", "relu", "softplus")
POWER_EXPONENTS = (2.0, 3.0, -1.0, -2.0, 0.5, 1.5, -0.5)  # for Value ** number
POWER_BASES = (0.5, 2.0, 3.0)  # for number ** Value
CONSTANTS = (-3.0, -1.5, -0.5, 0.25, 1.0, 2.0, 2.5)  # exact in binary, so sympy sees the same numbers
OPS = (*ARITHMETIC, *UNARY, "**c", "c**", "pow", "sum", "dot", "logsumexp")

LARGEST = 100.0  # nodes bigger than this are dropped, so derivatives stay in a sane range


def _pool_index(size):
    return st.integers(0, size - 1)


def _operand(size):
    """A node of the pool, or now and then a number."""
    return st.one_of(_pool_index(size), _pool_index(size), st.sampled_from(CONSTANTS).map(Const))


@st.composite
def _steps(draw, size):
    """One random step whose operands come from a pool of ``size`` nodes."""
    op = draw(st.sampled_from(OPS))
    node = draw(_pool_index(size))
    if op in ARITHMETIC:  # a number may sit on either side, which exercises __radd__ and friends
        pair = draw(st.sampled_from(["nodes", "number right", "number left"]))
        other = draw(_pool_index(size)) if pair == "nodes" else Const(draw(st.sampled_from(CONSTANTS)))
        return Step(op, (other, node) if pair == "number left" else (node, other))
    if op == "**c":
        return Step(op, (node, Const(draw(st.sampled_from(POWER_EXPONENTS)))))
    if op == "c**":
        return Step(op, (Const(draw(st.sampled_from(POWER_BASES))), node))
    if op == "pow":
        return Step(op, (node, draw(_pool_index(size))))
    if op == "sum":
        return Step(op, (node, *draw(st.lists(_operand(size), min_size=1, max_size=3))))
    if op == "dot":  # weights, inputs, bias; the first weight is a node so the result is never constant
        n = draw(st.integers(1, 3))
        rest = draw(st.lists(_operand(size), min_size=2 * n, max_size=2 * n))
        return Step(op, (node, *rest))
    if op == "logsumexp":
        return Step(op, (node, *draw(st.lists(_pool_index(size), max_size=2))))
    return Step(op, (node,))


def _inside_domain(step, args):
    """Whether ``step`` on these float operands is defined, smooth and far enough from trouble."""
    op, a = step.op, args[0]
    if op == "/":
        return abs(args[1]) >= 0.25
    if op == "log":
        return a >= 0.1
    if op == "exp":
        return a <= 5.0
    if op == "relu":  # away from the kink, where the derivatives are 1 and 0 (or 0 and 0)
        return abs(a) >= 0.05
    if op == "**c":
        c = args[1]
        if c.is_integer():  # any base for a positive power, 0 included; none near 0 for a negative one
            return c > 0 or abs(a) >= 0.25
        return a >= 0.25  # a fractional power needs a positive base
    if op == "pow":  # Value ** Value: a positive base, so d/dy x**y = x**y log x exists
        return a >= 0.25
    return True


def _draw_graph(draw, n_inputs, max_steps):
    point = tuple(draw(st.lists(st.floats(-2.0, 2.0), min_size=n_inputs, max_size=n_inputs)))
    values = list(point)  # every node's float value, to keep the next step inside its domain
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        step = draw(_steps(len(values)))
        args = [values[r] if isinstance(r, int) else r.value for r in step.operands]
        if not _inside_domain(step, args):
            continue
        value = FLOATS.apply(step, args)
        if abs(value) > LARGEST:
            continue
        steps.append(step)
        values.append(value)
    if not steps:  # every drawn step was outside its domain: x0 * x0 is defined everywhere
        steps.append(Step("*", (0, 0)))
    return Graph(point, tuple(steps))


@st.composite
def graphs(draw, n_inputs=1, max_steps=6):
    """A random expression graph of ``n_inputs`` inputs (an int, or a (low, high) range)."""
    if isinstance(n_inputs, tuple):
        n_inputs = draw(st.integers(*n_inputs))
    return _draw_graph(draw, n_inputs, max_steps)


# ---------------------------------------------------------------------------------------------
# Backends: the same steps on floats, chainrule Values, sympy expressions and torch tensors.
# + - * / ** are Python operators that every backend overloads; the rest differs.


class Backend:
    def const(self, value):
        return value

    def apply(self, step, args):
        op = step.op
        if op in ARITHMETIC:
            a, b = args
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            return a * b if op == "*" else a / b
        if op in ("**c", "c**", "pow"):
            return args[0] ** args[1]
        if op == "neg":
            return -args[0]
        if op == "sum":
            return self.sum(args)
        if op == "dot":
            n = (len(args) - 1) // 2
            return self.dot(args[:n], args[n : 2 * n], args[-1])
        if op == "logsumexp":
            return self.logsumexp(args)
        return getattr(self, op)(args[0])

    def build(self, graph, inputs):
        """Replay the graph's steps on ``inputs``; return the output node."""
        pool = list(inputs)
        for step in graph.steps:
            args = [pool[r] if isinstance(r, int) else self.const(r.value) for r in step.operands]
            pool.append(self.apply(step, args))
        return pool[-1]

    def function(self, graph):
        """The graph as a Python function of its inputs."""
        return lambda *inputs: self.build(graph, inputs)


class FloatBackend(Backend):
    """Plain floats, with the textbook formulas written to avoid overflow."""

    exp = staticmethod(math.exp)
    log = staticmethod(math.log)
    tanh = staticmethod(math.tanh)

    def sigmoid(self, a):
        return 1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a))

    def relu(self, a):
        return max(a, 0.0)

    def softplus(self, a):
        return max(a, 0.0) + math.log1p(math.exp(-abs(a)))

    def sum(self, args):
        return math.fsum(args)

    def dot(self, w, x, b):
        return math.fsum(wi * xi for wi, xi in zip(w, x)) + b

    def logsumexp(self, args):
        m = max(args)
        return m + math.log(math.fsum(math.exp(a - m) for a in args))


class ChainruleBackend(Backend):
    def exp(self, a):
        return a.exp()

    def log(self, a):
        return a.log()

    def tanh(self, a):
        return a.tanh()

    def sigmoid(self, a):
        return a.sigmoid()

    def relu(self, a):
        return a.relu()

    def softplus(self, a):
        return a.softplus()

    def sum(self, args):
        return chainrule.sum_values(args)

    def dot(self, w, x, b):
        return chainrule.dot(w, x, b)

    def logsumexp(self, args):
        return chainrule.logsumexp(args)


class SympyBackend(Backend):
    """Exact: numbers become Rationals, and every op is its textbook formula."""

    def const(self, value):
        return sympy.Rational(value)

    exp = staticmethod(sympy.exp)
    log = staticmethod(sympy.log)
    tanh = staticmethod(sympy.tanh)

    def sigmoid(self, a):
        return 1 / (1 + sympy.exp(-a))

    def relu(self, a):
        return sympy.Piecewise((a, a > 0), (0, True))

    def softplus(self, a):
        return sympy.log(1 + sympy.exp(a))

    def sum(self, args):
        return sympy.Add(*args)

    def dot(self, w, x, b):
        return sympy.Add(*[wi * xi for wi, xi in zip(w, x)]) + b

    def logsumexp(self, args):
        return sympy.log(sympy.Add(*[sympy.exp(a) for a in args]))


class TorchBackend(Backend):
    def __init__(self, torch):
        self.torch = torch

    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def tanh(self, a):
        return self.torch.tanh(a)

    def sigmoid(self, a):
        return self.torch.sigmoid(a)

    def relu(self, a):
        return self.torch.relu(a)

    def softplus(self, a):
        return self.torch.nn.functional.softplus(a)

    def sum(self, args):
        return sum(args[1:], args[0])

    def dot(self, w, x, b):
        return sum((wi * xi for wi, xi in zip(w, x)), b)

    def logsumexp(self, args):
        return self.torch.logsumexp(self.torch.stack(args), 0)


FLOATS, CHAINRULE, SYMPY = FloatBackend(), ChainruleBackend(), SympyBackend()


# ---------------------------------------------------------------------------------------------
# Exact derivatives from sympy, and the comparison.


def symbols(n):
    return sympy.symbols(f"x0:{n}", real=True)


def _heaviside(x, at_zero=None):
    return mpmath.nan if x == 0 else mpmath.mpf(x > 0)


def _dirac_delta(x, order=0):
    return mpmath.nan if x == 0 else mpmath.mpf(0)


# With real symbols sympy writes some powers with abs(x) (for example (x^2)^y as |x|^(2y)), whose
# derivatives bring in sign, Heaviside and DiracDelta. mpmath knows sign; these are the other two,
# defined away from 0, which is the only place our points ever evaluate them.
STEP_FUNCTIONS = {"Heaviside": _heaviside, "DiracDelta": _dirac_delta}


def at_point(expr, xs, point):
    """The exact expression evaluated at the point with 40-digit arithmetic, rounded to a float.

    mpmath does the evaluation: substituting exact numbers into sympy instead can send sympy off
    proving algebraic identities between radicals, which may take minutes.
    """
    # In relu's Piecewise, an op after relu can be infinite on the branch not taken (log 0 where
    # relu gives 0). mpmath has no name for sympy's complex infinity, and that branch is never
    # evaluated at our point (the domain checks saw to that), so it becomes nan.
    expr = sympy.sympify(expr).xreplace({sympy.zoo: sympy.nan})
    evaluate = sympy.lambdify(xs, expr, modules=[STEP_FUNCTIONS, "mpmath"])
    with mpmath.workdps(40):
        return float(evaluate(*[mpmath.mpf(p) for p in point]))


def sympy_derivative(graph, *wrt):
    """d^k f / d x_wrt[0] ... d x_wrt[-1] of the graph's function at its point, from sympy."""
    xs = symbols(len(graph.point))
    expr = SYMPY.build(graph, xs)
    return at_point(sympy.diff(expr, *[xs[i] for i in wrt]), xs, graph.point)


def sympy_hessian(graph):
    xs = symbols(len(graph.point))
    matrix = sympy.hessian(SYMPY.build(graph, xs), xs)
    return [[at_point(matrix[i, j], xs, graph.point) for j in range(len(xs))] for i in range(len(xs))]


def assert_close(got, want, scale=0.0, what=""):
    """Relative 1e-8, with a small absolute floor for answers that are (nearly) 0.

    ``scale`` is the size of the terms that were added up to ``want`` (a dot product's terms),
    so a sum that cancels to nearly 0 is judged against the numbers it came from.
    """
    if isinstance(got, Value):
        got = got.data
    assert math.isfinite(got), f"{what}: got {got!r}, want {want!r}"
    tolerance = 1e-8 * max(abs(want), scale) + 1e-9
    assert abs(got - want) <= tolerance, f"{what}: got {got!r}, want {want!r}"


def number(x):
    """A derivative as a float: a Value's data, or the 0.0 given for an input the output ignores."""
    return x.data if isinstance(x, Value) else x


# ---------------------------------------------------------------------------------------------
# 1. Second and third derivatives of random graphs against sympy.


@settings(max_examples=40)
@given(graph=graphs(n_inputs=1, max_steps=6))
# x ** x at x = 1, always tried: the exponent x - 1 of a power inside f' passes through 0 there.
@example(graph=Graph(point=(1.0,), steps=(Step("pow", (0, 0)),)))
def test_grad_of_grad_matches_sympy(graph):
    f = CHAINRULE.function(graph)
    (x,) = graph.point
    assert_close(chainrule.grad(f)(x), sympy_derivative(graph, 0), what="f'")
    assert_close(chainrule.grad(chainrule.grad(f))(x), sympy_derivative(graph, 0, 0), what="f''")
    third = chainrule.grad(chainrule.grad(chainrule.grad(f)))(x)
    assert_close(third, sympy_derivative(graph, 0, 0, 0), what="f'''")
    assert type(third) is float  # called with a number, grad answers with a number


@settings(max_examples=25)
@given(graph=graphs(n_inputs=2, max_steps=5))
def test_mixed_partials_of_two_inputs_match_sympy(graph):
    f = CHAINRULE.function(graph)
    g = chainrule.grad
    assert_close(g(g(f, 0), 1)(*graph.point), sympy_derivative(graph, 0, 1), what="d2f/dx0dx1")
    assert_close(g(g(f, 1), 1)(*graph.point), sympy_derivative(graph, 1, 1), what="d2f/dx1dx1")
    assert_close(g(g(g(f, 1), 0), 0)(*graph.point), sympy_derivative(graph, 1, 0, 0), what="d3f/dx1dx0dx0")


@settings(max_examples=25)
@given(graph=graphs(n_inputs=(1, 2), max_steps=5))
def test_backward_with_create_graph_gives_differentiable_grads(graph):
    xs = [Value(p) for p in graph.point]
    CHAINRULE.build(graph, xs).backward(create_graph=True)
    n = len(xs)
    for i, x in enumerate(xs):
        first = x.grad  # a Value with a graph of its own (or 0.0 if the output ignores x)
        assert_close(number(first), sympy_derivative(graph, i), what=f"df/dx{i}")
        if not isinstance(first, Value):
            continue
        second = autograd.grad(first, xs)
        for j in range(n):
            assert_close(second[j], sympy_derivative(graph, i, j), what=f"d2f/dx{i}dx{j}")
        (second_with_graph,) = autograd.grad(first, [x], create_graph=True)
        third = autograd.grad(second_with_graph, [x])[0] if isinstance(second_with_graph, Value) else 0.0
        assert_close(third, sympy_derivative(graph, i, i, i), what=f"d3f/dx{i}^3")


def test_differentiating_x_grad_by_backward_accumulates_into_x_grad():
    # y = x^3 at x = 2: after y.backward(create_graph=True), x.grad = 3x^2 = 12, a Value.
    # x.grad.backward() then adds d(3x^2)/dx = 6x = 12 into x.grad, as PyTorch does: 12 + 12 = 24.
    x = Value(2.0)
    (x * x * x).backward(create_graph=True)
    first = x.grad
    assert isinstance(first, Value) and first.data == 12.0
    first.backward()
    assert number(x.grad) == 24.0


# ---------------------------------------------------------------------------------------------
# 2. Full Hessians, their symmetry, and Hessian-vector products.


@settings(max_examples=20)
@given(
    graph=graphs(n_inputs=(2, 4), max_steps=6),
    vector=st.lists(st.floats(-2.0, 2.0), min_size=4, max_size=4),
)
def test_hessian_and_hvp_match_sympy(graph, vector):
    f = CHAINRULE.function(graph)
    n = len(graph.point)
    v = vector[:n]
    hessian = chainrule.hessian(f)(*graph.point)
    exact = sympy_hessian(graph)
    assert len(hessian) == n and all(len(row) == n for row in hessian)
    for i in range(n):
        for j in range(n):
            assert_close(hessian[i][j], exact[i][j], what=f"H[{i}][{j}]")
            # d/dxj (df/dxi) and d/dxi (df/dxj) run through different graphs but must agree
            assert_close(hessian[i][j], hessian[j][i], what=f"H[{i}][{j}] vs H[{j}][{i}]")

    product = chainrule.hvp(f, graph.point, v)
    assert len(product) == n
    for i in range(n):
        terms = [exact[i][j] * v[j] for j in range(n)]
        scale = sum(abs(t) for t in terms)
        assert_close(product[i], math.fsum(terms), scale, what=f"(H v)[{i}] vs sympy")
        ours = math.fsum(hessian[i][j] * v[j] for j in range(n))
        assert_close(product[i], ours, scale, what=f"(H v)[{i}] vs hessian @ v")


def test_hessian_by_hand():
    # f = x^2 y + y^3.  H = [[2y, 2x], [2x, 6y]] = [[4, 2], [2, 12]] at (1, 2).
    # Hv with v = (1, -1): (4 - 2, 2 - 12) = (2, -10).
    f = lambda x, y: x * x * y + y**3  # noqa: E731
    assert chainrule.hessian(f)(1.0, 2.0) == [[4.0, 2.0], [2.0, 12.0]]
    assert chainrule.hvp(f, [1.0, 2.0], [1.0, -1.0]) == [2.0, -10.0]


# ---------------------------------------------------------------------------------------------
# 3. relu, argnums, and errors.


@pytest.mark.parametrize("x", [-2.0, -0.3, 0.4, 3.0])
def test_relu_second_derivative_is_zero_away_from_the_kink(x):
    # relu(x) is x or 0 near any x != 0: the first derivative is 1 or 0, the second 0.
    relu = lambda v: v.relu()  # noqa: E731
    assert chainrule.grad(relu)(x) == (1.0 if x > 0 else 0.0)
    assert chainrule.grad(chainrule.grad(relu))(x) == 0.0
    # x * relu(x) is x^2 or 0: second derivative 2 or 0, third 0.
    square_ish = lambda v: v * v.relu()  # noqa: E731
    assert chainrule.grad(chainrule.grad(square_ish))(x) == (2.0 if x > 0 else 0.0)
    assert chainrule.grad(chainrule.grad(chainrule.grad(square_ish)))(x) == 0.0


def test_derivatives_of_powers_at_zero():
    # d/dx x^0 = 0;  d2/dx2 x^1 = 0;  d3/dx3 x^2 = 0;  d3/dx3 x^3 = 6 -- everywhere, x = 0 included.
    # PyTorch gives exactly these; a rule that computes c * x**(c - 1) with c = 0 divides by zero.
    g = chainrule.grad
    assert g(lambda x: x**0)(0.0) == 0.0
    assert g(g(lambda x: x**1))(0.0) == 0.0
    assert g(g(g(lambda x: x**2)))(0.0) == 0.0
    assert g(g(g(lambda x: x**3)))(0.0) == 6.0


def test_hessian_of_x_to_the_y_where_y_is_zero():
    # f = x^y.  f_x = y x^(y-1), f_y = x^y ln x;
    # f_xx = y (y-1) x^(y-2) = 0,  f_xy = f_yx = x^(y-1) + y x^(y-1) ln x = 1/x = 0.5,
    # f_yy = x^y (ln x)^2 = (ln 2)^2, all at (x, y) = (2, 0). y = 0 makes f_x vanish, not its slope in y.
    hessian = chainrule.hessian(lambda x, y: x**y)(2.0, 0.0)
    want = [[0.0, 0.5], [0.5, math.log(2.0) ** 2]]
    for i in range(2):
        for j in range(2):
            assert_close(hessian[i][j], want[i][j], what=f"H[{i}][{j}]")
    assert_close(chainrule.grad(chainrule.grad(lambda x, y: x**y, 0), 1)(2.0, 0.0), 0.5, what="f_xy")


@settings(max_examples=15)
@given(graph=graphs(n_inputs=3, max_steps=5))
def test_grad_with_an_argnums_tuple_matches_sympy(graph):
    f = CHAINRULE.function(graph)
    derivatives = chainrule.grad(f, argnums=(2, 0))(*graph.point)
    assert isinstance(derivatives, tuple) and len(derivatives) == 2
    assert_close(derivatives[0], sympy_derivative(graph, 2), what="df/dx2")
    assert_close(derivatives[1], sympy_derivative(graph, 0), what="df/dx0")
    # a negative index counts from the end, as in Python and JAX
    assert_close(chainrule.grad(f, argnums=-1)(*graph.point), sympy_derivative(graph, 2), what="argnums=-1")
    # and a tuple of derivatives composes: d/dx1 of (df/dx2, df/dx0)[0]
    mixed = chainrule.grad(lambda *xs: chainrule.grad(f, argnums=(2, 0))(*xs)[0], argnums=1)
    assert_close(mixed(*graph.point), sympy_derivative(graph, 2, 1), what="d2f/dx2dx1")


@pytest.mark.parametrize("argnums", [2, -3, (0, 2)])
def test_argnums_out_of_range_is_an_index_error(argnums):
    with pytest.raises(IndexError, match="argnums"):
        chainrule.grad(lambda x, y: x * y, argnums=argnums)(1.0, 2.0)


@pytest.mark.parametrize("bad", [1.0, "x", None])
def test_autograd_grad_needs_value_inputs(bad):
    x = Value(2.0)
    y = x * x
    with pytest.raises(TypeError, match="Value"):
        autograd.grad(y, [x, bad])
    # nothing was touched: the graph still differentiates correctly (d(x^2)/dx = 4 at 2)
    assert x.grad == 0.0 and y.grad == 0.0
    assert autograd.grad(y, [x]) == [4.0]


def test_autograd_grad_needs_a_value_output():
    with pytest.raises(TypeError, match="output"):
        autograd.grad("y", [Value(1.0)])


def test_hvp_vector_length_must_match():
    with pytest.raises(ValueError, match="hvp"):
        chainrule.hvp(lambda x, y: x * y, [1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------
# 4. create_graph=False builds no graph: not a single Value is made during the backward pass.


@contextlib.contextmanager
def counting_values():
    """Inside the block, count every Value made: through Value(...) and the engine's _node and _make."""
    count = {"values": 0}
    original_node, original_make, original_init = engine._node, engine._make, Value.__init__

    def counting(original):
        def made(*args):
            count["values"] += 1
            return original(*args)

        return made

    def counting_init(self, *args, **kwargs):
        count["values"] += 1
        original_init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(engine, "_node", counting(original_node))
        monkeypatch.setattr(engine, "_make", counting(original_make))
        monkeypatch.setattr(Value, "__init__", counting_init)
        yield count


@settings(max_examples=25)
@given(graph=graphs(n_inputs=(1, 3), max_steps=8))
def test_first_order_backward_creates_no_values(graph):
    with counting_values() as count:
        xs = [Value(p) for p in graph.point]
        y = CHAINRULE.build(graph, xs)
        built = count["values"]
        assert built >= len(graph.steps) + len(xs)  # the counter sees the forward pass

        y.backward()
        assert count["values"] == built, "a plain backward made Values"
        assert all(type(node.grad) is float for node in topological_order(y))

        derivatives = autograd.grad(y, xs, create_graph=False)
        assert count["values"] == built, "autograd.grad(create_graph=False) made Values"
        assert all(type(d) is float for d in derivatives)

        # The counter is live: the same call with create_graph=True does make Values.
        autograd.grad(y, xs, create_graph=True)
        assert count["values"] > built


def test_value_counter_counts_both_ways_of_making_a_value():
    original_make, original_init = engine._node, Value.__init__
    with counting_values() as count:
        x = Value(1.0)  # through __init__
        assert count["values"] == 1
        x.exp()  # through the engine's _node
        assert count["values"] == 2
    Value(2.0).exp()  # after the block nothing is counted: the originals are back
    assert count["values"] == 2
    assert engine._node is original_make and Value.__init__ is original_init


# ---------------------------------------------------------------------------------------------
# 5. autograd.grad leaves .grad alone; leaves keep accumulating with create_graph=True.


@settings(max_examples=20)
@given(graph=graphs(n_inputs=(1, 3), max_steps=6), create_graph=st.booleans())
def test_autograd_grad_touches_no_grad(graph, create_graph):
    xs = [Value(p) for p in graph.point]
    y = CHAINRULE.build(graph, xs)
    outsider = Value(5.0)  # not in y's graph
    derivatives = autograd.grad(y, [*xs, outsider], create_graph=create_graph)
    assert len(derivatives) == len(xs) + 1
    assert derivatives[-1] == 0.0
    for i, d in enumerate(derivatives[:-1]):
        assert_close(number(d), sympy_derivative(graph, i), what=f"df/dx{i}")
    assert all(node.grad == 0.0 and type(node.grad) is float for node in topological_order(y))
    assert outsider.grad == 0.0
    # Nothing is left half-done: a backward afterwards gives the plain first derivatives.
    y.backward()
    for i, x in enumerate(xs):
        assert_close(x.grad, sympy_derivative(graph, i), what=f"df/dx{i} after autograd.grad")


@settings(max_examples=20)
@given(graph=graphs(n_inputs=1, max_steps=6))
def test_leaves_accumulate_over_two_create_graph_backwards(graph):
    x = Value(graph.point[0])
    y = CHAINRULE.build(graph, [x])
    y.backward(create_graph=True)
    y.backward(create_graph=True)
    # x.grad = f'(x) + f'(x), and as a Value its own derivative is 2 f''(x)
    assert_close(number(x.grad), 2.0 * sympy_derivative(graph, 0), what="x.grad after two backwards")
    if isinstance(x.grad, Value):
        assert_close(autograd.grad(x.grad, [x])[0], 2.0 * sympy_derivative(graph, 0, 0), what="d(x.grad)/dx")


# ---------------------------------------------------------------------------------------------
# 6. Against PyTorch float64 (skipped when torch is not installed).


def torch_derivatives(graph):
    """PyTorch float64: the gradient and the Hessian of the graph's function at its point."""
    torch = pytest.importorskip("torch")
    xs = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in graph.point]
    y = TorchBackend(torch).build(graph, xs)
    first = torch.autograd.grad(y, xs, create_graph=True, allow_unused=True)
    hessian = []
    for d in first:
        if d is None or not d.requires_grad:  # f does not depend on this input, or is linear in it
            hessian.append([0.0] * len(xs))
            continue
        row = torch.autograd.grad(d, xs, retain_graph=True, allow_unused=True)
        hessian.append([0.0 if r is None else r.item() for r in row])
    return [0.0 if d is None else d.item() for d in first], hessian


@settings(max_examples=25)
@given(graph=graphs(n_inputs=1, max_steps=6))
def test_second_derivatives_match_pytorch(graph):
    f = CHAINRULE.function(graph)
    first, hessian = torch_derivatives(graph)
    assert_close(chainrule.grad(f)(*graph.point), first[0], what="f' vs torch")
    assert_close(chainrule.grad(chainrule.grad(f))(*graph.point), hessian[0][0], what="f'' vs torch")


@settings(max_examples=20)
@given(graph=graphs(n_inputs=(2, 4), max_steps=6))
@example(graph=Graph(point=(0.0, 1.0, 0.0, 0.0), steps=(Step(op="pow", operands=(1, 0)),)))  # x1 ** x0
def test_hessians_match_pytorch(graph):
    _, expected = torch_derivatives(graph)
    ours = chainrule.hessian(CHAINRULE.function(graph))(*graph.point)
    n = len(graph.point)
    exact = None
    for i in range(n):
        for j in range(n):
            if abs(expected[i][j] - expected[j][i]) <= 1e-8 * abs(expected[i][j]) + 1e-9:
                assert_close(ours[i][j], expected[i][j], what=f"H[{i}][{j}] vs torch")
                continue
            # PyTorch's own Hessian is not symmetric here, so one of its entries is wrong: its
            # gradient of x ** y in x is set to 0 where y == 0, a choice with no slope in y,
            # so d/dy (d/dx x**y) comes out 0 where it is x**-1 (1 at x = 1). sympy decides.
            exact = exact or sympy_hessian(graph)
            assert_close(ours[i][j], exact[i][j], what=f"H[{i}][{j}] vs sympy (torch's is asymmetric)")


# ---------------------------------------------------------------------------------------------
# 7. Repeated backward still adds up, at every node, when the gradients are Values.


def test_repeated_create_graph_backward_accumulates_at_intermediates():
    # b = 2a, c = 3b: dc/dc = 1, dc/db = 3, dc/da = 6; two backward passes double each.
    a = Value(1.0)
    b = a * 2
    c = b * 3
    c.backward(create_graph=True)
    c.backward(create_graph=True)
    assert (number(c.grad), number(b.grad), number(a.grad)) == (2.0, 6.0, 12.0)


def test_plain_then_create_graph_backward_adds_up():
    # y = x^2 at 3: dy/dx = 6 from each pass; the second pass's 6 is a Value with d/dx 6 = 2.
    x = Value(3.0)
    y = x * x
    y.backward()
    y.backward(create_graph=True)
    assert number(x.grad) == 12.0
    assert autograd.grad(x.grad, [x]) == [2.0]


@settings(max_examples=20)
@given(graph=graphs(n_inputs=(1, 2), max_steps=6))
def test_two_create_graph_backwards_give_twice_one_plain_backward_at_every_node(graph):
    # Build the same graph twice: one gets a plain backward, the other two create_graph backwards.
    plain = CHAINRULE.build(graph, [Value(p) for p in graph.point])
    plain.backward()
    twice = CHAINRULE.build(graph, [Value(p) for p in graph.point])
    twice.backward(create_graph=True)
    twice.backward(create_graph=True)
    plain_nodes, twice_nodes = topological_order(plain), topological_order(twice)
    assert len(plain_nodes) == len(twice_nodes)
    for once, doubled in zip(plain_nodes, twice_nodes):
        assert_close(number(doubled.grad), 2.0 * once.grad, what=f"node {doubled.op or 'leaf'}")
