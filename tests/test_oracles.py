"""Random expression graphs, differentiated by chainrule and by independent oracles.

Hypothesis draws a *program*: 1-3 inputs and a list of steps, each applying one op to nodes
picked from the pool of everything built so far (inputs first), so subexpressions are reused
and gradients must add up over many paths. One small interpreter runs the program on three
number systems:

- chainrule Values, whose ``backward`` is under test;
- sympy expressions over exact rational constants, differentiated symbolically with
  ``sympy.diff`` and evaluated at 40 digits with mpmath;
- PyTorch float64 tensors (when torch is importable), differentiated by ``torch.autograd``.

Every op appears: ``+ - * /``, negation, ``Value ** number``, ``number ** Value``,
``Value ** Value``, exp, log, tanh, sigmoid, relu, sum_values and dot. Domains are guarded by
construction (a log, a fractional power or a Value ** Value gets ``x*x + c`` with c > 0, a
division gets ``x*x + c`` below), so almost every drawn program is defined.
"""

import math

import mpmath
import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chainrule import Value, dot, sum_values, topological_order

# Relative agreement required, with an absolute floor for results that are zero up to rounding
REL = 1e-9
ABS = 1e-9
# Points where some intermediate is larger than this are skipped: there, rounding in float64
# legitimately costs more than REL.
HUGE = 1e6

# ---------------------------------------------------------------------------------------------
# Programs


OPS = [
    "+",
    "-",
    "*",
    "/",
    "neg",
    "**int",
    "**frac",
    "rpow",
    "pow",
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "relu",
    "sum",
    "dot",
]
SHIFTS = [0.25, 0.5, 1.0, 2.0]  # the c in x*x + c, exactly representable, so sympy sees the same number


@st.composite
def programs(draw, max_steps=8):
    """(point, steps): input values and a list of steps over a growing pool of nodes."""
    n_inputs = draw(st.integers(1, 3))
    point = draw(st.lists(st.floats(-2.5, 2.5), min_size=n_inputs, max_size=n_inputs))
    steps = []
    size = n_inputs

    def node():
        # counted back from the newest node, so shrinking moves toward a plain chain
        return size - 1 - draw(st.integers(0, size - 1))

    def nodes(most):
        return [node() for _ in range(draw(st.integers(1, most)))]

    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from(OPS))
        if op in ("+", "-", "*"):
            step = (op, node(), node())
        elif op in ("/", "pow"):
            step = (op, node(), node(), draw(st.sampled_from(SHIFTS)))
        elif op == "**int":
            step = (op, node(), draw(st.sampled_from([1.0, 2.0, 3.0])))
        elif op == "**frac":
            step = (op, node(), draw(st.sampled_from([-1.5, -0.5, 0.5, 1.5])), draw(st.sampled_from(SHIFTS)))
        elif op == "rpow":
            step = (op, draw(st.sampled_from([0.5, 2.0, 3.0])), node())
        elif op == "log":
            step = (op, node(), draw(st.sampled_from(SHIFTS)))
        elif op == "sum":
            step = (op, nodes(4))
        elif op == "dot":
            weights = nodes(3)
            step = (op, weights, [node() for _ in weights], node())
        else:  # neg, exp, tanh, sigmoid, relu
            step = (op, node())
        steps.append(step)
        size += 1
    return point, steps


# One program that uses every op, run as a plain test as well.
EVERY_OP_PROGRAM = (
    [0.7, -1.3, 0.4],
    [
        ("*", 0, 1),  # 3
        ("+", 3, 0),  # 4
        ("-", 4, 2),  # 5
        ("/", 5, 3, 0.5),  # 6
        ("neg", 6),  # 7
        ("**int", 5, 3.0),  # 8
        ("**frac", 7, -1.5, 1.0),  # 9
        ("rpow", 2.0, 4),  # 10
        ("pow", 3, 6, 0.25),  # 11
        ("exp", 8),  # 12
        ("log", 12, 0.5),  # 13
        ("tanh", 11),  # 14
        ("sigmoid", 9),  # 15
        ("relu", 4),  # 16
        ("sum", [16, 15, 14, 16, 0]),  # 17
        ("dot", [17, 13, 10], [0, 17, 12], 1),  # 18
    ],
)


# ---------------------------------------------------------------------------------------------
# One interpreter, three number systems


class ChainruleOps:
    constant = staticmethod(float)
    exp = staticmethod(lambda x: x.exp())
    log = staticmethod(lambda x: x.log())
    tanh = staticmethod(lambda x: x.tanh())
    sigmoid = staticmethod(lambda x: x.sigmoid())
    relu = staticmethod(lambda x: x.relu())
    sum = staticmethod(sum_values)
    dot = staticmethod(dot)


class SympyOps:
    constant = staticmethod(sympy.Rational)  # the exact value of the float
    exp = staticmethod(sympy.exp)
    log = staticmethod(sympy.log)
    tanh = staticmethod(sympy.tanh)
    sigmoid = staticmethod(lambda x: 1 / (1 + sympy.exp(-x)))
    relu = staticmethod(lambda x: sympy.Piecewise((x, x > 0), (0, True)))
    sum = staticmethod(lambda xs: sympy.Add(*xs))
    dot = staticmethod(lambda ws, xs, b: sympy.Add(*[w * x for w, x in zip(ws, xs)], b))


def torch_ops(torch):
    class TorchOps:
        constant = staticmethod(float)
        exp = staticmethod(torch.exp)
        log = staticmethod(torch.log)
        tanh = staticmethod(torch.tanh)
        sigmoid = staticmethod(torch.sigmoid)
        relu = staticmethod(torch.relu)
        sum = staticmethod(lambda xs: torch.stack(xs).sum())
        dot = staticmethod(lambda ws, xs, b: torch.stack([w * x for w, x in zip(ws, xs)]).sum() + b)

    return TorchOps


def run_step(step, pool, lib):
    """The node made by one step, from nodes in the pool, using the number system ``lib``."""
    op, *args = step
    p, c = pool, lib.constant
    if op == "+":
        return p[args[0]] + p[args[1]]
    if op == "-":
        return p[args[0]] - p[args[1]]
    if op == "*":
        return p[args[0]] * p[args[1]]
    if op == "/":
        i, j, shift = args
        return p[i] / (p[j] * p[j] + c(shift))
    if op == "neg":
        return -p[args[0]]
    if op == "**int":
        return p[args[0]] ** c(args[1])
    if op == "**frac":
        i, exponent, shift = args
        return (p[i] * p[i] + c(shift)) ** c(exponent)
    if op == "rpow":
        return c(args[0]) ** p[args[1]]
    if op == "pow":
        i, j, shift = args
        return (p[i] * p[i] + c(shift)) ** p[j]
    if op == "log":
        i, shift = args
        return lib.log(p[i] * p[i] + c(shift))
    if op == "sum":
        return lib.sum([p[i] for i in args[0]])
    if op == "dot":
        weights, inputs, bias = args
        return lib.dot([p[i] for i in weights], [p[i] for i in inputs], p[bias])
    return getattr(lib, op)(p[args[0]])  # exp, tanh, sigmoid, relu


def run_program(steps, inputs, lib):
    """Every node of the program, inputs first; the last one is the root."""
    pool = list(inputs)
    for step in steps:
        pool.append(run_step(step, pool, lib))
    return pool


# ---------------------------------------------------------------------------------------------
# Running each side


def chainrule_side(point, steps):
    """(root value, gradient of each input) from chainrule, or None where the point is unusable."""
    inputs = [Value(x, label=f"x{i}") for i, x in enumerate(point)]
    pool = run_program(steps, inputs, ChainruleOps)
    root = pool[-1]
    reachable = topological_order(root)
    if not all(math.isfinite(v.data) and abs(v.data) <= HUGE for v in reachable):
        return None
    # relu has a kink at 0: with its input within rounding of 0 the two sides may take different branches
    if any(v.op == "relu" and abs(v.children[0].data) < 1e-6 for v in reachable):
        return None
    root.backward()
    if not all(math.isfinite(v.grad) and abs(v.grad) <= HUGE for v in reachable):
        return None
    return root.data, [x.grad for x in inputs]


def sympy_side(point, steps):
    """(root value, gradient of each input) from sympy's symbolic derivatives, at 40 digits."""
    symbols = sympy.symbols(f"x0:{len(point)}", real=True)
    root = run_program(steps, symbols, SympyOps)[-1]
    at = [mpmath.mpf(x) for x in point]  # exact: every float is an mpf

    def evaluate(expr):
        with mpmath.workdps(40):
            return float(sympy.lambdify(symbols, expr, modules="mpmath", cse=True)(*at))

    return evaluate(root), [evaluate(sympy.diff(root, s)) for s in symbols]


def torch_side(torch, point, steps):
    """(root value, gradient of each input) from PyTorch float64 autograd."""
    inputs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in point]
    root = run_program(steps, inputs, torch_ops(torch))[-1]
    if not root.requires_grad:  # the root is a constant: every gradient is zero
        return root.item(), [0.0 for _ in inputs]
    grads = torch.autograd.grad(root, inputs, allow_unused=True)
    return root.item(), [0.0 if g is None else g.item() for g in grads]


def assert_agree(ours, theirs):
    value, grads = ours
    expected_value, expected_grads = theirs
    assert value == pytest.approx(expected_value, rel=REL, abs=ABS)
    assert grads == pytest.approx(expected_grads, rel=REL, abs=ABS)


# ---------------------------------------------------------------------------------------------
# Tests


def test_every_op_program_matches_sympy():
    point, steps = EVERY_OP_PROGRAM
    assert {step[0] for step in steps} == set(OPS)
    ours = chainrule_side(point, steps)
    assert ours is not None
    assert_agree(ours, sympy_side(point, steps))


def test_every_op_program_matches_torch():
    torch = pytest.importorskip("torch")
    point, steps = EVERY_OP_PROGRAM
    ours = chainrule_side(point, steps)
    assert ours is not None
    assert_agree(ours, torch_side(torch, point, steps))


@settings(max_examples=120)
@given(programs())
def test_random_graphs_match_sympy(program):
    point, steps = program
    ours = chainrule_side(point, steps)
    assume(ours is not None)
    assert_agree(ours, sympy_side(point, steps))


@settings(max_examples=120)
@given(programs())
def test_random_graphs_match_torch(program):
    torch = pytest.importorskip("torch")
    point, steps = program
    ours = chainrule_side(point, steps)
    assume(ours is not None)
    assert_agree(ours, torch_side(torch, point, steps))
