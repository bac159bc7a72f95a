"""The compiler's IR (compiler/ir.py) and its backends (compiler/backends/).

- a Program is what the layout made: the same groups, rows and positions, and it prints;
- every backend, prepared from the same random Programs, gives the numpy backend's numbers
  (the reference) forward and backward, or leaves the call to it (False), or raises its error;
- ``backends.select`` picks the backend the README describes for each name and shape.
"""

import importlib.util
import math
import random
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value
from chainrule.compiler import native, tracing

np = pytest.importorskip("numpy")
from chainrule.compiler import backends  # noqa: E402
from chainrule.compiler.backends import generated_c, scalar, table  # noqa: E402
from chainrule.compiler.backends import numpy as numpy_backend  # noqa: E402
from chainrule.compiler.ir import Group, Program  # noqa: E402


def traced(fn, *args, backend="numpy"):
    """The compiled function, called once, and the Program its trace's layout made."""
    made = []

    def keep(*parts):
        made.append(real(*parts))
        return made[-1]

    real = tracing.program
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracing, "program", keep)
        f = chainrule.compile(fn, backend=backend)
        f(*args)
    return f, made[0]


UNARY = {  # each kept inside its domain
    "tanh": Value.tanh,
    "exp": lambda x: x.tanh().exp(),
    "relu": Value.relu,
    "sigmoid": Value.sigmoid,
    "neg": Value.__neg__,
    "log": lambda x: (x * x + 1.0).log(),
    "pow": lambda x: x.tanh() ** 2,
}


def random_function(seed):
    """A random scalar function of a list of inputs and a few parameters, the same graph for the
    same seed: unary ops, binary ops, sums and sums of products (dot nodes), one to three
    results. Every op is kept inside its domain, so no call fails."""
    rng = random.Random(seed)
    params = [Value(rng.uniform(-1, 1)) for _ in range(rng.randint(1, 4))]
    n_inputs = rng.randint(2, 6)
    plan = []
    for _ in range(rng.randint(1, 25)):
        kind = rng.choice(["unary", "binary", "sum", "dot"])
        if kind == "unary":
            plan.append((kind, rng.choice(list(UNARY)), rng.random()))
        elif kind == "binary":
            plan.append((kind, rng.choice("+-*/"), (rng.random(), rng.random())))
        else:
            plan.append((kind, None, [rng.random() for _ in range(2 * rng.randint(1, 4))]))
    n_outputs = rng.randint(1, 3)

    def fn(xs):
        nodes = list(xs) + params

        def pick(u):  # the node at this fraction of those made so far
            return nodes[int(u * len(nodes))]

        for kind, op, picks in plan:
            if kind == "unary":
                y = UNARY[op](pick(picks))
            elif kind == "binary":
                a, b = pick(picks[0]), pick(picks[1])
                y = {"+": a + b, "-": a - b, "*": a * b, "/": a / (b * b + 1.0)}[op]
            elif kind == "sum":
                y = sum(pick(u) for u in picks)
            else:
                half = len(picks) // 2
                y = sum((pick(u) * pick(v) for u, v in zip(picks[:half], picks[half:])), pick(picks[0]))
            nodes.append(y)
        outputs = nodes[-n_outputs:]
        return outputs[0] if n_outputs == 1 else outputs

    return fn, n_inputs


def layer_function(U, V, n):
    """U neurons applied to V input vectors of n numbers: a dot group the backends run as one
    matrix product."""
    rng = random.Random(U * 100 + V * 10 + n)
    weights = [[Value(rng.uniform(-1, 1)) for _ in range(n)] for _ in range(U)]
    biases = [Value(rng.uniform(-1, 1)) for _ in range(U)]

    def fn(xs):
        rows = [xs[v * n : (v + 1) * n] for v in range(V)]
        outs = [sum((w * x for w, x in zip(ws, row)), b) for row in rows for ws, b in zip(weights, biases)]
        return sum(o.tanh() for o in outs)

    return fn, V * n


def leaf_data(program, numbers):
    """A data array with the leaves in place: the inputs, the constants, the externals."""
    data = np.full(program.size, np.nan)
    data[: program.n_inputs] = numbers
    data[program.n_inputs : program.n_fixed] = [v.data for v in program.constants]
    data[program.n_fixed : program.n_leaves] = [v.data for v in program.externals]
    return data


def _table(program):
    return table.prepare(program)


def _generated(program):
    return generated_c.prepare(program)


PREPARERS = {
    "numpy": numpy_backend.prepare,
    "numpy without layers": lambda program: numpy_backend.prepare(program, layers=False),
    "C table": _table,
    "C table from the layout": table.prepare_thin,
    "generated C": _generated,
    "scalar": scalar.prepare,
}


def run(prepared, program, numbers):
    """Forward, then backward from each output: the outputs' numbers and each pass's leaf
    gradients; None where the backend left the call to the reference."""
    data = leaf_data(program, numbers)
    if not prepared.forward(data):
        return None
    reference = prepared.reference
    results, grads = data[list(prepared.outputs)].tolist(), []
    for position in prepared.outputs:
        grad = np.zeros(program.size)
        grad[position] = 1.0
        needed = reference.reached_from(position, data, program.size)
        if not prepared.backward(data, grad, needed):
            return None
        grads.append(grad[: program.n_leaves].tolist())
    return results, grads


def prepared_or_skip(name, program):
    try:
        return PREPARERS[name](program)
    except native.Unavailable as reason:
        pytest.skip(f"{name}: {reason}")


# ---------------------------------------------------------------------------------------------
# The Program


@pytest.mark.parametrize("shape", ["thin", "a layer"])
def test_a_program_is_what_the_layout_made_and_every_backend_gives_it_back(shape):
    fn, n = random_function(7) if shape == "thin" else layer_function(3, 4, 2)
    numbers = [0.1 * (i + 1) for i in range(n)]
    f, program = traced(fn, numbers)
    assert program.size == program.n_leaves + sum(g.count for g in program.groups)
    assert program.n_leaves == n + len(program.constants) + len(program.externals)
    starts = program.starts()
    for group, start, row in zip(program.groups, starts, program.layout):
        assert isinstance(group, Group) and tuple(group) == tuple(row)
        positions = group.positions(np)
        assert positions.shape == (group.count, group.width)
        assert (positions < start).all()  # a node reads only what comes before its group
    # A backend that keeps every node where the layout put it gives the same groups back.
    for name in ("numpy without layers", "C table from the layout"):
        try:
            prepared = PREPARERS[name](program)
        except native.Unavailable:
            continue
        assert prepared.outputs == program.outputs and list(prepared.checked) == list(program.checked)
        same_groups(prepared.layout(), program.layout)
    # So does the compiled function's (its constants as numbers: the tape keeps no Value the
    # trace made): on a thin tape, read back from the table program's table; on a layer, from
    # the numpy backend's matrix product (its nodes already in the order it runs them).
    back = f.program
    assert back.outputs == program.outputs and list(back.checked) == list(program.checked)
    assert (back.n_inputs, back.externals) == (program.n_inputs, program.externals)
    assert list(back.constants) == [v.data for v in program.constants]
    same_groups(back.layout, program.layout)


def same_groups(given_back, laid_out):
    assert len(given_back) == len(laid_out)
    for mine, theirs in zip(map(Group._make, given_back), map(Group._make, laid_out)):
        assert mine[:3] == theirs[:3]  # op, count, width
        assert mine.positions(np).tolist() == theirs.positions(np).tolist()


def test_print_shows_the_program_ops_counts_and_positions():
    w = Value(0.5)
    f, program = traced(lambda xs: sum((w * x).tanh() for x in xs), [1.0, 2.0, 3.0, 4.0])
    text = str(f.program)
    lines = text.splitlines()
    assert lines[0] == (
        "Program: 4 inputs, 1 constant, 1 external -> 9 nodes in 3 groups, 1 output"
    )  # 4 products, 4 tanh, one sum (from the constant 0 that sum() starts with)
    assert "4 x *" in lines[1] and "2 inputs each" in lines[1] and lines[1].lstrip().startswith("6..9")
    assert "4 x tanh" in lines[2] and "reading 6..9" in lines[2]
    assert "1 x sum" in lines[3]
    assert lines[-1] == f"  outputs: {f.last_tape.output_positions[0]}"
    assert repr(f.program).startswith("<Program: 6 leaves, 9 nodes in 3 groups")


def test_a_long_program_prints_its_ends_only():
    def chain(xs):
        y = xs[0]
        for _ in range(1000):
            y = (y * 0.5).tanh()
        return y

    f, program = traced(chain, [0.3])
    lines = str(program).splitlines()
    assert len(lines) < 50
    assert any(line.strip() == "... 1,960 groups ..." for line in lines)
    assert "2,000 nodes in 2,000 groups" in lines[0]


def test_compiled_program_before_a_call_is_an_error():
    f = chainrule.compile(lambda x: x[0] * 2.0)
    with pytest.raises(ValueError, match="call the compiled function once"):
        print(f.program)


# ---------------------------------------------------------------------------------------------
# Conformance: every backend against the numpy reference


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "generated C" else n for n in PREPARERS]
)  # (generated C compiles each program: about 5 s)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), scale=st.floats(-2, 2))
def test_every_backend_gives_the_references_numbers_on_random_programs(name, seed, scale):
    fn, n = random_function(seed)
    numbers = [scale * math.sin(i + seed) for i in range(n)]
    _, program = traced(fn, numbers)
    reference = run(numpy_backend.prepare(program), program, numbers)
    prepared = prepared_or_skip(name, program)
    got = run(prepared, program, numbers)
    if got is None:  # left to the reference: allowed, never wrong
        return
    # C's libm and numpy's loops may differ in the last bit of a tanh or an exp, and up to 25
    # ops compound it: to 1e-9 (as tests/test_replay_errors.py compares backends with eager).
    assert got[0] == pytest.approx(reference[0], rel=1e-9, abs=1e-12)
    for mine, theirs in zip(got[1], reference[1]):
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", list(PREPARERS))
@pytest.mark.parametrize("shape", [(3, 4, 2), (1, 5, 3), (4, 1, 1)])
def test_every_backend_gives_the_references_numbers_on_a_layer(name, shape):
    fn, n = layer_function(*shape)
    numbers = [math.cos(i) for i in range(n)]
    _, program = traced(fn, numbers)
    reference = run(numpy_backend.prepare(program), program, numbers)
    got = run(prepared_or_skip(name, program), program, numbers)
    assert got is not None
    assert got[0] == pytest.approx(reference[0], rel=1e-12)
    assert got[1][0] == pytest.approx(reference[1][0], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", list(PREPARERS))
def test_every_backend_leaves_a_domain_error_to_the_reference_or_raises_it(name):
    w = Value(1.0)
    _, program = traced(lambda xs: (xs[0] * w).log() + xs[1], [2.0, 1.0])
    numbers = [-3.0, 1.0]  # log(-3): eager raises
    with pytest.raises(ValueError) as expected:
        numpy_backend.prepare(program).forward(leaf_data(program, numbers))
    prepared = prepared_or_skip(name, program)
    try:
        ok = prepared.forward(leaf_data(program, numbers))
    except ValueError as error:
        assert str(error) == str(expected.value)
    else:
        assert ok is False


# ---------------------------------------------------------------------------------------------
# The selector


def small_program():
    fn, n = layer_function(3, 4, 2)
    return traced(fn, [0.5] * n)[1]


def thin_program():
    def chain(xs):
        y = xs[0]
        for _ in range(50):
            y = (y * 0.9).tanh()
        return y

    return traced(chain, [0.3])[1]


def test_the_selector_picks_numpy_for_numpy_on_a_wide_program():
    assert isinstance(backends.select("numpy", small_program()), numpy_backend.NumpyProgram)


def test_the_selector_picks_the_table_program_for_auto():
    program = small_program()
    try:
        table.prepare(program)
    except native.Unavailable:
        pytest.skip("no table program here")
    assert type(backends.select("auto", program)) is table.TableProgram


def test_the_selector_picks_the_programs_own_c_for_c_and_the_table_past_the_line_limit(monkeypatch):
    program = small_program()
    try:
        generated_c.prepare(program)
    except native.Unavailable:
        pytest.skip("no C compiler here")
    assert type(backends.select("c", program)) is generated_c.StraightLineProgram
    monkeypatch.setattr(native, "STRAIGHT_LINE_GROUPS", 2)
    assert type(backends.select("c", program)) is table.TableProgram


def test_the_selector_warns_and_picks_numpy_when_c_cannot_be_built(monkeypatch):
    def no_compiler(source, symbols=("forward", "backward")):
        raise native.Unavailable("no C compiler found (set CC, or install gcc or clang)")

    monkeypatch.setattr(native, "build", no_compiler)
    with pytest.warns(RuntimeWarning, match="no C compiler found.*using the numpy backend"):
        chosen = backends.select("c", small_program())
    assert isinstance(chosen, numpy_backend.NumpyProgram)


@pytest.mark.parametrize("name", ["numpy", "auto"])
def test_the_selector_runs_a_thin_program_on_the_prebuilt_table_else_node_by_node(monkeypatch, name):
    program = thin_program()
    if native.prebuilt_tables() is not None:
        chosen = backends.select(name, program)
        assert type(chosen) is table.TableProgram and chosen.in_one_call
    monkeypatch.setattr(native, "prebuilt_tables", lambda: None)
    monkeypatch.setattr(native, "build", _refuse_to_build)
    assert type(backends.select(name, program)) is scalar.ScalarReplay
    monkeypatch.setenv("CHAINRULE_SCALAR_REPLAY", "0")  # never node by node: the groups
    assert isinstance(backends.select(name, program), numpy_backend.NumpyProgram)


def _refuse_to_build(source, symbols=("forward", "backward")):
    raise native.Unavailable("no C compiler found")


def test_a_compiled_function_runs_on_the_backend_the_selector_picks():
    fn, n = layer_function(3, 4, 2)
    for name in backends.NAMES:
        if name == "jax" and importlib.util.find_spec("jax") is None:
            continue  # an optional extra (tests/test_jax_backend.py: it says how to get it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (c without a compiler)
            f, program = traced(fn, [0.5] * n, backend=name)
            assert type(f.last_tape.backend) is type(backends.select(name, program))


def test_program_is_immutable():
    program = small_program()
    with pytest.raises(AttributeError):
        program.n_inputs = 3
    assert isinstance(program, Program)
