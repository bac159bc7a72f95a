"""Every op of ops.py on every path: one record each, and these checks walk them all.

An op's record (ops.defop) holds its scalar rules, its numpy rules, its C pieces, its
explorer hint and its names in the expression language. The rest of chainrule reads them
from there: ops_kernels.h (written from the C pieces, included by the compiler's kernels
and by _graph.c's backward loop), the explorer, the expression language and the drawing.
These tests check that every path has every op, and that the C of each op gives the numbers
of its Python rules, bit for bit, or hands the call to numpy (as the C backend does when a
number is not finite), on random inputs with nan, inf, 0, -0 and subnormals among them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, c_kernels, engine, explorer, expression, ops
from chainrule.compiler import native

np = pytest.importorskip("numpy")

ROOT = Path(__file__).parents[1]
RECORDS = ops.BUILT_IN
IDS = [op.name for op in RECORDS]

# How many inputs to give each op in these tests (n-ary ops take any number)
ARITY = {"unary": 1, "binary": 2, "each": 3, "pairs": 5}
ARITY_OF_NODES = {"take": 4, "stop_gradient": 1}  # take: the index, then three rows

# The ops whose backward _graph.c's loop runs itself (engine.py hands them to _graph.setup)
KNOWN_TO_GRAPH = (
    ops.ADD,
    ops.SUB,
    ops.MUL,
    ops.DIV,
    ops.NEG,
    ops.EXP,
    ops.LOG,
    ops.TANH,
    ops.SIGMOID,
    ops.RELU,
    ops.SUM,
    ops.DOT,
    ops.POW_CONSTANT,
)


def _arity(op) -> int:
    return ARITY_OF_NODES[op.name] if op.c.shape == "nodes" else ARITY[op.c.shape]


def _bits(x: float) -> bytes:
    """The float's bits, zeros' signs included; every nan the same (a nan's sign and payload
    depend on the arithmetic that made it: CPython 3.10 and C can differ there)."""
    return b"nan" if math.isnan(x) else struct.pack("<d", x)


# Numbers that find the edges: zeros of both signs, subnormals, the largest, infinities, nan
EDGES = [0.0, -0.0, 5e-324, -5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308, 1e300]
EDGES += [-1e300, math.inf, -math.inf, math.nan, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0, -2.0, 710.0, -745.5]
NUMBERS = st.one_of(st.sampled_from(EDGES), st.floats(-20.0, 20.0), st.integers(-3, 3).map(float))


# ---------------------------------------------------------------------------------------------
# The table itself


def test_every_op_of_chainrule_has_a_full_record():
    # BUILT_IN is every op ops.py defines, each registered under its name
    assert {v for v in vars(ops).values() if isinstance(v, ops.Op)} == set(RECORDS)
    assert all(ops.OPS[op.name] is op for op in RECORDS)
    for op in RECORDS:
        assert callable(op.forward) and callable(op.backward), op
        assert callable(op.vforward) and callable(op.vbackward), op
        assert isinstance(op.hint, str) and op.hint.strip(), op
        assert isinstance(op.c, ops.C) and op.c.shape in ("unary", "binary", "each", "pairs", "nodes"), op
        if op.c.forward_of is not None:
            assert op.c.value is None and op.c.forward_of in {o.c.kernel for o in RECORDS}, op


def test_the_header_is_written_from_the_records_and_is_current():
    assert c_kernels.HEADER.read_text() == c_kernels.header_source(), (
        "src/chainrule/ops_kernels.h is out of date: python -m chainrule.c_kernels"
    )


@pytest.mark.parametrize("op", RECORDS, ids=IDS)
def test_every_op_has_its_c_functions_and_kernels(op):
    header = c_kernels.HEADER.read_text()
    k = op.c.kernel
    grads = {
        "unary": ["grad"],
        "binary": ["grad_x", "grad_y"],
        "each": ["grad"],
        "pairs": ["grad_w", "grad_x", "grad_b"],
        "nodes": ["backward"],
    }[op.c.shape]
    for name in grads:
        assert f" op_{k}_{name}(" in header
    if op.c.forward_of is None:
        assert f" op_{k}_{'forward' if op.c.shape == 'nodes' else 'value'}(" in header
    # in the table program's lists, under the number native.py gives it
    forward, backward = native._kernels_for(op)
    assert f"({native._FORWARD_KERNELS.index(forward)}, {forward})" in header
    assert f"({native._BACKWARD_KERNELS.index(backward)}, {backward})" in header
    if op in KNOWN_TO_GRAPH:  # _graph.c's backward loop calls the same functions
        graph = (ROOT / "src/chainrule/_graph.c").read_text()
        assert f"op_{k}_grad" in graph or f"ONE({k})" in graph or f"TWO({k})" in graph


def test_no_c_program_is_kept_in_a_python_string():
    # The C lives in .c and .h files; native.py reads them (and assembles a tape's own calls).
    source = (ROOT / "src/chainrule/compiler/native.py").read_text()
    assert "#include <" not in source and "static int f_" not in source and "PyInit" not in source


def test_the_c_read_at_run_time_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11 and later)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in ("ops_kernels.h", "ops_math.h"):
        assert path in data["chainrule"]
    for path in ("kernels.c", "table.c", "self_test.c"):
        assert path in data["chainrule.compiler"]
    # and every file a program includes is found in place
    assert '#include "' not in native.table_program() and '#include "' not in native.KERNELS


# ---------------------------------------------------------------------------------------------
# The C of each op against its Python rules


def _python_forward(op, xs):
    """The op's number from its scalar rule, or None when the rule raises (a domain error)."""
    try:
        return op.forward(*xs)
    except (ValueError, ZeroDivisionError, TypeError, IndexError):
        return None


def _python_grads(op, g, out, xs):
    """Each input's gradient added to 0.0 (as the C kernels add), or None when the rule raises."""
    try:
        grads = op.backward(g, out, *xs)
    except (ValueError, ZeroDivisionError, TypeError, IndexError):
        return None
    return [0.0 + (0.0 if grad is None else grad) for grad in grads]


def _run_table_kernel(module, op, xs, g):
    """One node of ``op`` on the inputs ``xs`` through the built table program: (forward's
    status, its number, backward's status, the inputs' gradients)."""
    n = len(xs)
    data = np.array([*xs, 0.0])
    idx = np.arange(n, dtype=np.int32)
    forward, backward = native._kernels_for(op)
    row = (native._FORWARD_KERNELS.index(forward), n, 1, n, 0, native._BACKWARD_KERNELS.index(backward), 0)
    table = np.array([row], dtype=np.int64)
    bad_forward = module.forward(data, idx, table, n)
    grad = np.zeros(n + 1)
    grad[n] = g
    bad_backward = module.backward(data, grad, idx, None, table, n)
    return bad_forward, float(data[n]), bad_backward, [float(v) for v in grad[:n]]


def _check_against_python(op, xs, g, run):
    bad_forward, out, bad_backward, grads = run(op, xs, g)
    expected = _python_forward(op, xs)
    if expected is not None and math.isfinite(expected):
        assert not bad_forward and _bits(out) == _bits(expected), (op, xs, out, expected)
    elif not bad_forward:  # the C said nothing was wrong: then its number is the rule's
        assert expected is not None and _bits(out) == _bits(expected), (op, xs, out, expected)
    if bad_forward:
        return  # numpy redoes the call, forward and backward
    want = _python_grads(op, g, out, xs)
    if want is not None and all(map(math.isfinite, [*want, g])):  # (the check reads g's place too)
        assert not bad_backward, (op, xs, g, grads, want)
    if not bad_backward:
        assert want is not None and list(map(_bits, grads)) == list(map(_bits, want)), (
            op,
            xs,
            g,
            grads,
            want,
        )


def _inputs(op):
    n = _arity(op)
    if op.name == "take":  # an index (often a good one), then the rows
        index = st.one_of(st.integers(-4, 4).map(float), NUMBERS)
        return st.tuples(index, *[NUMBERS] * (n - 1)).map(list)
    return st.lists(NUMBERS, min_size=n, max_size=n)


@pytest.mark.slow  # 300 examples an op
@pytest.mark.parametrize("op", RECORDS, ids=IDS)
def test_the_built_table_program_gives_each_rules_numbers_bit_for_bit(op):
    module = native.prebuilt_tables()
    if module is None:
        pytest.skip("compiler/_tables was not built here")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_inputs(op), NUMBERS)
    def check(xs, g):
        _check_against_python(op, xs, g, lambda op, xs, g: _run_table_kernel(module, op, xs, g))

    check()


@pytest.mark.slow  # 300 examples an op
@pytest.mark.parametrize("op", KNOWN_TO_GRAPH, ids=[op.name for op in KNOWN_TO_GRAPH])
def test_the_c_backward_loop_gives_each_rules_numbers_bit_for_bit(op):
    if engine._graph is None:
        pytest.skip("chainrule/_graph was not built here")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_inputs(op), NUMBERS)
    def check(xs, g):
        if op is ops.POW_CONSTANT:  # a Value ** a number
            xs[1] = float(round(xs[1])) if math.isfinite(xs[1]) else 2.0
        leaves = [Value(x) for x in xs]
        try:
            out = engine.apply(op, *leaves)
        except (ValueError, ZeroDivisionError):
            return  # eager raises before any graph exists
        want = _python_grads(op, g, out.data, xs)
        root = out * Value(g)  # its share to out is 1.0 * g: g exactly
        if want is None:
            with pytest.raises((ValueError, ZeroDivisionError)):
                root.backward()
            return
        root.backward()
        got = [leaf.grad for leaf in leaves]
        if op is ops.POW_CONSTANT:
            got, want = got[:1], want[:1]  # the constant exponent's gradient is not kept
        assert list(map(_bits, got)) == list(map(_bits, want)), (op, xs, g, got, want)

    check()


# ---------------------------------------------------------------------------------------------
# What users see of each op


def _made_eagerly(op) -> Value:
    """A node of ``op`` on inputs in its domain, made as any user code would make it."""
    xs = {"take": [1.0, 0.25, 0.5, 0.75], "**": [0.5, 2.0], "rpow": [2.0, 0.5]}.get(op.name)
    return engine.apply(op, *[Value(x) for x in (xs or [0.5] * _arity(op))])


@pytest.mark.parametrize("op", RECORDS, ids=IDS)
def test_the_explorer_shows_each_ops_hint(op):
    node = _made_eagerly(op)
    assert explorer._hint(node.op) == op.hint
    page = chainrule.explore(node, layout="layered").html
    in_the_page = json.dumps(op.hint, ensure_ascii=False)[1:-1].replace(
        ">", "\\u003e"
    )  # (as the page escapes)
    assert in_the_page in page


@pytest.mark.parametrize("op", RECORDS, ids=IDS)
def test_the_drawing_labels_each_op_by_its_name(op):
    graphviz = pytest.importorskip("graphviz")
    node = _made_eagerly(op)
    assert node.op == op.name
    source = chainrule.draw_dot(node).source
    assert isinstance(source, str) and graphviz is not None
    assert f'label="{op.name}" shape=ellipse' in source or f"label={op.name} shape=ellipse" in source


def test_the_expression_language_calls_the_ops_that_name_themselves():
    named = [(name, op) for op in RECORDS for name in op.names]
    assert expression.FUNCTIONS == tuple(name for name, _ in named)
    assert set(expression.FUNCTIONS) >= {"exp", "log", "tanh", "sigmoid", "relu"}  # the lecture's
    for name, op in named:
        result = expression.evaluate(f"{name}(x)", {"x": 0.75})
        assert result.output.op == op.name and result.output.data == op.forward(0.75)
        result.output.backward()
        (grad,) = op.backward(1.0, op.forward(0.75), 0.75)
        assert result.inputs["x"].grad == grad
