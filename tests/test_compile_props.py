"""Property test for chainrule.compile: random graphs, compiled versus eager.

The oracle is eager chainrule itself, built again on the same numbers: a compiled function must
give the same forward values and the same parameter gradients (within 1e-9 relative; the
absolute floor scales with the size of the numbers in the graph, so that a sum whose terms
cancel is judged by the rounding of its terms, not of its tiny result).

A graph is a *program*: a list of steps, each an op applied to nodes already in a growing
pool (inputs, parameters, then every node built so far), so nodes are reused freely. Every op
of the engine appears, including the builtin ``sum()`` over Values (a chain of ``+``, which
the compiler folds into one sum) and ``sum(w * x for ...)`` (which it turns into a dot product),
and so do ``detach()`` and ops under ``no_grad`` (with ``enable_grad`` inside), which a trace
records behind a stop_gradient: their numbers replay, their gradients stay zero, as in eager.

To keep every number finite for *any* inputs in the drawn range (replays use new numbers, so
a graph must be safe everywhere, not only where it was traced), each node carries a static
bound on its size. When an op would make a node bigger than LIMIT, its operands first go
through ``tanh``; ops with a restricted domain get arguments that are positive by construction
(``log(a * a + 0.5)``, ``(sigmoid(a) + 0.5) ** b``, ...).
"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, enable_grad, no_grad, topological_order

LIMIT = 20.0  # no node may exceed this in size, whatever the inputs (|input|, |parameter| <= 2)
INPUT_RANGE = 2.0
MAX_ROWS, MAX_INPUTS = 3, 4
CONSTANTS = (-1.5, 0.5, 2.0)
POWERS = (2, 3, 0.5, 1.5, -1, -1.5)
BASES = (2.0, 0.5, 3.0)


# ---------------------------------------------------------------------------------------------
# The ops: how many operands each takes, how to build it, and a bound on its result's size
# given bounds on its operands' sizes.


def _pow_constant(a, e):
    if isinstance(e, int) and e > 0:
        return a**e
    return (a * a + 0.25) ** e  # a positive base: fractional and negative powers are defined


def _pow_constant_bound(bounds, e):
    (a,) = bounds
    if isinstance(e, int) and e > 0:
        return a**e
    return (a * a + 0.25) ** e if e > 0 else 0.25**e


def _const(a, choice):
    form, c = choice
    return [a + c, c - a, a * c, c * a][form]


def _const_bound(bounds, choice):
    form, c = choice
    return bounds[0] + abs(c) if form < 2 else bounds[0] * abs(c)


def _pairs(operands):
    half = len(operands) // 2
    return operands[:half], operands[half : 2 * half]


def _dot_bound(bounds):
    ws, xs = _pairs(bounds[:-1])
    return sum(w * x for w, x in zip(ws, xs)) + bounds[-1]


def _sum_products(operands):
    ws, xs = _pairs(operands)
    return sum(w * x for w, x in zip(ws, xs))  # the builtin sum: 0 + w1*x1 + w2*x2 + ...


def _sum_products_bound(bounds):
    ws, xs = _pairs(bounds)
    return sum(w * x for w, x in zip(ws, xs))


# name -> (operand count: an int, or "n" / "pairs" / "pairs+1", extra-argument strategy,
#          build(operands, extra), bound(operand bounds, extra))
OPS = {
    "add": (2, None, lambda v, _: v[0] + v[1], lambda b, _: b[0] + b[1]),
    "sub": (2, None, lambda v, _: v[0] - v[1], lambda b, _: b[0] + b[1]),
    "mul": (2, None, lambda v, _: v[0] * v[1], lambda b, _: b[0] * b[1]),
    "div": (2, None, lambda v, _: v[0] / (v[1] * v[1] + 0.5), lambda b, _: b[0] / 0.5),
    "number/value": (1, None, lambda v, _: 1.5 / (v[0] * v[0] + 0.5), lambda b, _: 3.0),
    "neg": (1, None, lambda v, _: -v[0], lambda b, _: b[0]),
    "number op value": (
        1,
        st.tuples(st.integers(0, 3), st.sampled_from(CONSTANTS)),
        lambda v, choice: _const(v[0], choice),
        _const_bound,
    ),
    "value**number": (
        1,
        st.sampled_from(POWERS),
        lambda v, e: _pow_constant(v[0], e),
        _pow_constant_bound,
    ),
    "number**value": (
        1,
        st.sampled_from(BASES),
        lambda v, c: c ** v[0],
        lambda b, c: max(c, 1.0 / c) ** b[0],
    ),
    # base in (0.5, 1.5), so base ** y <= 2 ** |y|
    "value**value": (2, None, lambda v, _: (v[0].sigmoid() + 0.5) ** v[1], lambda b, _: 2.0 ** b[1]),
    "exp": (1, None, lambda v, _: v[0].exp(), lambda b, _: math.exp(b[0])),
    "log": (
        1,
        None,
        lambda v, _: (v[0] * v[0] + 0.5).log(),
        lambda b, _: max(math.log(2.0), math.log(b[0] ** 2 + 0.5)),
    ),
    "tanh": (1, None, lambda v, _: v[0].tanh(), lambda b, _: 1.0),
    "sigmoid": (1, None, lambda v, _: v[0].sigmoid(), lambda b, _: 1.0),
    "relu": (1, None, lambda v, _: v[0].relu(), lambda b, _: b[0]),
    "softplus": (1, None, lambda v, _: v[0].softplus(), lambda b, _: b[0] + math.log(2.0)),
    "sum_values": ("n", None, lambda v, _: chainrule.sum_values(v), lambda b, _: sum(b)),
    "logsumexp": ("n", None, lambda v, _: chainrule.logsumexp(v), lambda b, _: max(b) + math.log(len(b))),
    "builtin sum": ("n", None, lambda v, _: sum(v), lambda b, _: sum(b)),
    "dot": (
        "pairs+1",
        None,
        lambda v, _: chainrule.dot(*_pairs(v[:-1]), v[-1]),
        lambda b, _: _dot_bound(b),
    ),
    "sum(w*x)": ("pairs", None, lambda v, _: _sum_products(v), lambda b, _: _sum_products_bound(b)),
    "detach": (1, None, lambda v, _: v[0].detach(), lambda b, _: b[0]),
    "enable_grad inside no_grad": (
        2,
        None,
        lambda v, _: _enable_grad_inside_no_grad(*v),
        lambda b, _: b[0] * b[1] + b[0] * b[1] * b[0],
    ),
}


def _under_no_grad(build):
    """``build`` run under no_grad: a result that replays but passes no gradient back."""

    def built(values, extra):
        with no_grad():
            return build(values, extra)

    return built


def _enable_grad_inside_no_grad(a, b):
    with no_grad():
        stopped = a * b
        with enable_grad():
            recorded = stopped * a  # a gradient reaches a through this factor, not through stopped
        return stopped + recorded


for _name in ("mul", "exp", "relu", "logsumexp", "dot", "sum(w*x)"):
    _count, _extra, _build, _bound = OPS[_name]
    OPS[f"{_name} under no_grad"] = (_count, _extra, _under_no_grad(_build), _bound)


@st.composite
def programs(draw):
    """(rows, n_inputs, n_params, steps, outputs): steps are (op name, operand indices, extra).

    The program runs on each of ``rows`` rows of inputs, as a loss runs on each example of a
    minibatch, so the tape has groups of several nodes, shared parameters and matrix products.
    """
    rows = draw(st.integers(1, MAX_ROWS))
    n_inputs = draw(st.integers(1, MAX_INPUTS))
    n_params = draw(st.integers(1, 3))
    pool = n_inputs + n_params
    steps = []
    for _ in range(draw(st.integers(2, 14))):
        name = draw(st.sampled_from(sorted(OPS)))
        count, extra_strategy, _, _ = OPS[name]
        if count == "n":
            count = draw(st.integers(1, 6))  # more than 4 inputs take the compiler's gather path
        elif count in ("pairs", "pairs+1"):
            count = 2 * draw(st.integers(1, 4)) + (count == "pairs+1")
        operands = draw(st.lists(st.integers(0, pool - 1), min_size=count, max_size=count))
        extra = draw(extra_strategy) if extra_strategy is not None else None
        steps.append((name, operands, extra))
        pool += 1
    # The last node, and sometimes a second output anywhere in the pool (maybe the same node again)
    outputs = [pool - 1] + draw(st.lists(st.integers(0, pool - 1), max_size=1))
    return rows, n_inputs, n_params, steps, outputs


def run_program(steps, outputs, xs, params):
    """Build the program's graph on one row of inputs ``xs`` and the parameters; return its outputs."""
    pool = [(x, INPUT_RANGE) for x in xs] + [(p, INPUT_RANGE) for p in params]
    for name, operands, extra in steps:
        _, _, build, bound = OPS[name]
        values = [pool[i][0] for i in operands]
        bounds = [pool[i][1] for i in operands]
        size = bound(bounds, extra)
        if size > LIMIT:  # squash the operands: with every operand in [-1, 1] no op exceeds LIMIT
            values = [v.tanh() for v in values]
            bounds = [1.0] * len(values)
            size = bound(bounds, extra)
            assert size <= LIMIT
        pool.append((build(values, extra), size))
    return [pool[i][0] for i in outputs]


def run_batch(program, rows, params):
    """The traced function: the program on every row; one row returns its outputs as they are,
    several return each output summed over the rows (the builtin sum, as a loss would)."""
    _, _, _, steps, outputs = program
    per_row = [run_program(steps, outputs, row, params) for row in rows]
    results = per_row[0] if len(rows) == 1 else [sum(column) for column in zip(*per_row)]
    return results[0] if len(results) == 1 else tuple(results)


# ---------------------------------------------------------------------------------------------
# Comparison


def graph_scales(outputs):
    """The largest |data| and |grad| in the eager graph: what rounding errors are relative to."""
    nodes = topological_order(*outputs)
    data_scale = max([1.0] + [abs(n.data) for n in nodes])
    grad_scale = max([1.0] + [abs(n.grad) for n in nodes])
    return data_scale, grad_scale


def assert_close(compiled, eager, floor, what):
    assert math.isclose(compiled, eager, rel_tol=1e-9, abs_tol=floor), (
        f"{what}: compiled {compiled!r} != eager {eager!r}"
    )


def as_list(result):
    return list(result) if isinstance(result, tuple) else [result]


def check_call(compiled_fn, program, rows, params):
    """One compiled call against one eager build on the same numbers: values, then gradients."""
    for p in params:
        p.grad = 0.0
    eager = as_list(run_batch(program, [[Value(x) for x in row] for row in rows], params))
    eager_grads = []
    for out in eager:  # backward from each output in turn: gradients accumulate
        out.backward()
        eager_grads.append([p.grad for p in params])
    data_scale, grad_scale = graph_scales(eager)

    for p in params:
        p.grad = 0.0
    result = compiled_fn(rows)
    assert isinstance(result, tuple) == (len(eager) > 1)  # the result mirrors what fn returned
    compiled = as_list(result)
    for i, (c, e) in enumerate(zip(compiled, eager, strict=True)):
        assert_close(c.data, e.data, 1e-12 * data_scale, f"output {i}")
    for i, c in enumerate(compiled):
        c.backward()
        for j, p in enumerate(params):
            floor = 1e-12 * grad_scale * data_scale  # a gradient term is a gradient times a value
            assert_close(p.grad, eager_grads[i][j], floor, f"param {j} grad after backward of output {i}")


def batch(numbers, n_rows, n_inputs):
    return [numbers[r * n_inputs : (r + 1) * n_inputs] for r in range(n_rows)]


@settings(max_examples=80, deadline=None)
@given(
    program=programs(),
    numbers=st.lists(
        st.lists(
            st.floats(-INPUT_RANGE, INPUT_RANGE),
            min_size=MAX_ROWS * MAX_INPUTS,
            max_size=MAX_ROWS * MAX_INPUTS,
        ),
        min_size=5,
        max_size=5,
    ),
)
def test_random_graphs_compiled_equal_eager(program, numbers):
    n_rows, n_inputs, n_params = program[:3]
    first_params, second_params, *input_numbers = numbers
    params = [Value(x) for x in first_params[:n_params]]
    batches = [batch(xs, n_rows, n_inputs) for xs in input_numbers]
    fast = chainrule.compile(lambda rows: run_batch(program, rows, params))

    check_call(fast, program, batches[0], params)  # traces
    for rows in batches[1:]:  # replays on new numbers
        check_call(fast, program, rows, params)
    for p, x in zip(params, second_params):  # an optimizer step would do this between calls
        p.data = x
    check_call(fast, program, batches[0], params)
    assert len(fast.tapes) == 1  # one structure, one trace
