"""The C backend of chainrule.compile (native.py): the same numbers and errors as numpy and eager.

The oracles are eager chainrule (whose rules the sympy and finite-difference tests check) and
the numpy backend; the whole compile test suite runs under the default backend ("auto", the
same kernels from a table) and again under "c" and under "numpy".
"""

import math
import random
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, nn
from chainrule.compiler import native
from chainrule.compiler.backends.table import CProgram

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(native.c_compiler() is None, reason="no C compiler")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE", str(tmp_path / "cache"))


def _every_op(x, w):
    """A graph with every op the C backend has a kernel for, finite for x, w in [-1, 1]."""
    a, b = x[0] * w[0] + x[1], (x[1] - w[1]) / (w[0] * w[0] + 1.0)
    terms = [
        (-a).exp(),
        (a * a + 0.5).log(),
        a.tanh() * b.sigmoid(),
        (a - 0.1).relu() + b.softplus(),
        (a * a + 0.25) ** 1.5,
        (b * b + 0.5) ** (a.tanh()),
        2.0**a,
        chainrule.logsumexp([a, b, a * b]),
        chainrule.dot([w[0], w[1]], [a, b], w[1]),
        chainrule.sum_values([a, b, a]),
        a / (b * b + 1.0),
        a.detach() * b,
    ]
    return sum(terms)


@pytest.mark.parametrize("seed", range(5))
def test_every_op_gives_the_numbers_of_numpy_and_eager(seed, loss_and_grads, monkeypatch):
    rng = random.Random(seed)
    w = [Value(rng.uniform(-1, 1)), Value(rng.uniform(-1, 1))]
    c = chainrule.compile(lambda x: _every_op(x, w), backend="c")
    numpy_backend = chainrule.compile(lambda x: _every_op(x, w), backend="numpy")
    monkeypatch.setenv("CHAINRULE_SCALAR_REPLAY", "0")  # numpy's groups, not a thin tape's C table
    for _ in range(4):  # the first call traces, the others replay on new numbers
        x = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
        eager_out = _every_op([Value(v) for v in x], w)
        for p in w:
            p.grad = 0.0
        eager_out.backward()
        eager = (eager_out.data, [p.grad for p in w])
        for result in (loss_and_grads(c, w, x), loss_and_grads(numpy_backend, w, x)):
            assert result[0] == pytest.approx(eager[0], rel=1e-12)
            assert result[1] == pytest.approx(eager[1], rel=1e-12)
    assert isinstance(c.last_tape.fast, CProgram)
    assert not isinstance(numpy_backend.last_tape.fast, CProgram)


def test_a_training_step_matches_numpy_to_1e_12():
    random.seed(3)
    model = nn.MLP(2, [8, 8, 1])
    X = [[random.uniform(-1, 1), random.uniform(-1, 1)] for _ in range(20)]
    y = [random.choice([-1.0, 1.0]) for _ in range(20)]

    def loss(X, y):
        return sum((1 + -yi * model(x)).relu() for x, yi in zip(X, y)) / len(y)

    grads = {}
    for backend in ("numpy", "c"):
        f = chainrule.compile(loss, backend=backend)
        f(X, y)  # trace
        model.zero_grad()
        out = f(X, y)
        out.backward()
        grads[backend] = (out.data, [p.grad for p in model.parameters()])
    assert grads["c"][0] == pytest.approx(grads["numpy"][0], rel=1e-12)
    assert grads["c"][1] == pytest.approx(grads["numpy"][1], rel=1e-12, abs=1e-15)


def test_a_long_chain_walks_a_table_of_groups_and_matches_eager():
    c = Value(0.999)

    def chain(x):
        y = x[0]
        for _ in range(native.STRAIGHT_LINE_GROUPS + 500):  # one group per node: past the cap
            y = y * c + 0.001
        return y

    f = chainrule.compile(chain, backend="c")
    out = f([1.5])
    assert "switch (t[0])" in f.source()  # the table-walking form, not one line per group
    c.grad = 0.0
    out = f([0.5])
    out.backward()
    got = (out.data, c.grad)
    c.grad = 0.0
    eager = chain([Value(0.5)])
    eager.backward()
    assert got[0] == pytest.approx(eager.data, rel=1e-12) and got[1] == pytest.approx(c.grad, rel=1e-12)


def test_the_table_form_gives_the_straight_line_forms_numbers(monkeypatch, loss_and_grads):
    w = [Value(0.3), Value(-0.7)]
    x = [0.4, -0.9]
    straight = loss_and_grads(chainrule.compile(lambda x: _every_op(x, w), backend="c"), w, x)
    monkeypatch.setattr(native, "STRAIGHT_LINE_GROUPS", 0)
    f = chainrule.compile(lambda x: _every_op(x, w), backend="c")
    table = loss_and_grads(f, w, x)
    assert "switch (t[0])" in f.source()
    assert table == straight


def test_the_source_is_c_a_learner_can_read():
    w = Value(2.0)
    f = chainrule.compile(lambda x: (w * x[0]).tanh(), backend="c")
    with pytest.raises(ValueError, match="call the compiled function once"):
        f.source()
    f([1.0])
    source = f.source()
    assert "int forward(double *d" in source and "int backward(" in source
    assert "f_mul(" in source and "f_tanh(" in source and "b_tanh(" in source
    # Whichever backend runs it, source() is the program the C backend builds for the trace.
    for backend in ("numpy", "auto"):
        other = chainrule.compile(lambda x: (w * x[0]).tanh(), backend=backend)
        other([1.0])
        assert other.source() == source
    cube = chainrule.ops.Op(
        "cube", lambda x: x**3, lambda g, out, x: (3 * g * x * x,), lambda np, X: X[0] ** 3
    )
    no_kernel = chainrule.compile(lambda x: chainrule.engine.apply(cube, x[0]), backend="numpy")
    no_kernel([1.0])
    with pytest.raises(ValueError, match="no kernel for the op 'cube'"):
        no_kernel.source()


def test_domain_errors_are_eagers_errors():
    w = Value(1.0)
    f = chainrule.compile(lambda x: (x[0] * w).log(), backend="c")
    assert f([2.0]).data == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match="log is defined only for positive numbers"):
        f([-2.0])
    with pytest.raises(ValueError, match="log is defined only for positive numbers"):
        (Value(-2.0) * w).log()
    g = chainrule.compile(lambda x: x[0] / (x[1] * w), backend="c")
    assert g([1.0, 2.0]).data == 0.5
    with pytest.raises(ZeroDivisionError):
        g([1.0, 0.0])


def test_an_out_of_range_take_is_eagers_index_error():
    rows = [Value(1.0), Value(2.0), Value(3.0)]
    f = chainrule.compile(lambda i: chainrule.take(rows, i) * 2.0, backend="c")
    assert f(1).data == 4.0
    assert f(-1).data == 6.0
    with pytest.raises(IndexError, match="out of range for 3 rows"):
        f(3)
    out = f(0)
    out.backward()
    assert [r.grad for r in rows] == [2.0, 0.0, 0.0]


def test_overflow_gives_inf_as_eager_does():
    w = Value(1.0)
    f = chainrule.compile(lambda x: (x[0] * w).exp(), backend="c")
    assert f([1.0]).data == pytest.approx(math.e)
    out = f([1000.0])
    assert out.data == math.inf == (Value(1000.0) * w).exp().data
    out.backward()
    assert w.grad == math.inf


def test_nan_passes_through_as_in_eager():
    w = Value(1.0)
    f = chainrule.compile(lambda x: (x[0] * w).relu() + 1.0, backend="c")
    f([1.0])
    out = f([math.nan])
    assert math.isnan(out.data)
    out.backward()
    assert math.isnan(w.grad)


def test_without_a_compiler_c_falls_back_to_numpy_with_one_warning(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    w = Value(3.0)
    f = chainrule.compile(lambda x: w * x[0], backend="c")
    with pytest.warns(RuntimeWarning, match="no C compiler found.*using the numpy backend"):
        out = f([2.0])
    assert out.data == 6.0 and not list(native.cache_dir().glob("tape-*.so"))  # nothing built
    auto = chainrule.compile(lambda x: w * x[0], backend="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back quietly
        assert auto([2.0]).data == 6.0


def test_a_failing_compiler_falls_back_and_says_why(monkeypatch):
    monkeypatch.setenv("CC", "false")
    f = chainrule.compile(lambda x: x[0] * 2.0, backend="c")
    with pytest.warns(RuntimeWarning, match="the C compiler failed"):
        assert f([2.0]).data == 4.0


def test_an_op_without_a_kernel_falls_back(monkeypatch):
    cube = chainrule.ops.Op(
        "cube", lambda x: x**3, lambda g, out, x: (3 * g * x * x,), lambda np, X: X[0] ** 3
    )
    w = Value(2.0)
    f = chainrule.compile(lambda x: chainrule.engine.apply(cube, x[0] * w), backend="c")
    with pytest.warns(RuntimeWarning, match="no kernel for the op 'cube'"):
        out = f([1.5])
    out.backward()
    assert out.data == pytest.approx(27.0) and w.grad == pytest.approx(3 * 9.0 * 1.5)


def test_a_built_program_is_reused_from_the_cache(monkeypatch):
    w = Value(1.5)
    chainrule.compile(lambda x: (w * x[0]).tanh(), backend="c")([1.0])
    built = list(native.cache_dir().glob("tape-*.so"))
    assert len(built) == 1

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    again = chainrule.compile(lambda x: (w * x[0]).tanh(), backend="c")
    assert again([0.5]).data == pytest.approx(math.tanh(0.75))
    assert isinstance(again.last_tape.fast, CProgram)


@pytest.mark.parametrize("with_the_prebuilt_program", [False, True])
def test_every_long_tape_runs_the_one_table_program_built_once(monkeypatch, with_the_prebuilt_program):
    # The table-walking program takes the tape's sizes as arguments, so its source is the same
    # for every tape: a second long tape, of another shape and size, needs no compiler. When pip
    # built it with chainrule (compiler/_tables.c), even the first one needs none.
    if not with_the_prebuilt_program:
        monkeypatch.setattr(native, "prebuilt_tables", lambda: None)
    elif native.prebuilt_tables() is None:
        pytest.skip("compiler/_tables.c was not built here")
    c, w = Value(0.999), Value(0.5)

    def chain(x):
        y = x[0]
        for _ in range(native.STRAIGHT_LINE_GROUPS + 100):
            y = y * c
        return y

    def rnn(xs):
        h = Value(0.0)
        for x in xs:
            h = (w * h + x).tanh()
        return h * h

    chainrule.compile(chain, backend="c")([1.0])
    assert len(list(native.cache_dir().glob("tape-*.so"))) == (0 if with_the_prebuilt_program else 1)

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    f = chainrule.compile(rnn, backend="c")
    xs = [0.1 * (i % 7) - 0.3 for i in range(native.STRAIGHT_LINE_GROUPS + 300)]
    w.grad = 0.0
    out = f(xs)
    out.backward()
    assert isinstance(f.last_tape.fast, CProgram)
    got, w.grad = (out.data, w.grad), 0.0
    eager = rnn([Value(x) for x in xs])
    eager.backward()
    assert got == pytest.approx((eager.data, w.grad), rel=1e-12)


def test_the_prebuilt_table_program_is_the_one_native_py_builds():
    # pip builds compiler/_tables.c, which includes table.c, the program native.py builds
    # where pip did not; the ops' arithmetic in both comes from ops_kernels.h, written from
    # ops.py (tests/test_op_table.py checks it is current).
    assert '#include "table.c"' in native.TABLES_MODULE.read_text()
    program = native.table_program()
    assert '#include "' not in program  # one text: every local file in its place
    assert "op_tanh_grad" in program and "int forward(" in program and "int backward(" in program


def test_a_damaged_library_in_the_cache_is_rebuilt():
    source = "int answer(void) { return 42; }\n"
    library = native.library_path(native.c_compiler(), source)
    library.parent.mkdir(parents=True)
    library.write_bytes(b"not a library")  # as a full disk or a killed copy might leave it
    assert native.build(source, symbols=("answer",)).answer() == 42  # built afresh at once
    assert library.read_bytes().startswith(b"\x7fELF")  # (tests/test_native_cache.py: more)


def test_an_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend must be one of numpy, c, auto, jax, got 'cuda'"):
        chainrule.compile(lambda x: x, backend="cuda")


@pytest.mark.slow  # a child pytest
@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_the_whole_compile_suite_passes_under_each_backend(backend, tmp_path, run_test_files):
    # The default, "auto", is what the rest of the suite runs.
    files = [
        "test_compile.py",
        "test_compile_hardening.py",
        "test_compile_props.py",
        "test_take.py",
        "test_gpt.py",
    ]
    files += ["test_threads.py", "test_numpy_arguments.py", "test_optim_vectorized.py", "test_map_rows.py"]
    # RuntimeWarning as an error: a quiet fallback to numpy would fail the run.
    run_test_files(
        files, {"CHAINRULE_BACKEND": backend, "CHAINRULE_CACHE": str(tmp_path)}, "-W", "error::RuntimeWarning"
    )


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_one_output_of_a_layer_over_a_batch_sends_gradients_only_along_its_own_graph(backend):
    random.seed(0)
    model = nn.MLP(2, [4, 3])
    X = [[random.uniform(-1, 1), random.uniform(-1, 1)] for _ in range(5)]
    f = chainrule.compile(lambda X: [model(x)[1] for x in X], backend=backend)
    outs = f(X)
    assert any(hasattr(group, "weights") for group in f.last_tape.groups)  # a layer over the batch
    for k in (2, 4):
        model.zero_grad()
        outs[k].backward()  # only the nodes on the way to output k: the layer's masked backward
        got = [p.grad for p in model.parameters()]
        model.zero_grad()
        model([Value(v) for v in X[k]])[1].backward()
        assert got == pytest.approx([p.grad for p in model.parameters()], rel=1e-12, abs=1e-15)


@pytest.mark.slow  # about 13 s
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    U=st.integers(1, 20),
    V=st.integers(1, 14),
    m=st.integers(1, 14),
    seed=st.integers(0, 2**16),
    activation=st.sampled_from(["relu", "tanh"]),
    scrambled=st.booleans(),
)
def test_layers_of_every_small_shape_match_eager_and_numpy(
    U, V, m, seed, activation, scrambled, loss_and_grads
):
    # (loss_and_grads holds no state, so one for every example is right)
    # The C layer is matrix products done six rows by eight columns at a time, with the
    # remainders two rows and two columns at a time, then one: forward the product is V x U
    # over m, backward m x U over V and V x m over U, so these sizes take every mix. Its weights,
    # inputs and biases lie in a pattern in the tape (read in place) or, scrambled, not (listed).
    rng = random.Random(seed)
    pool = [Value(rng.uniform(-1, 1)) for _ in range(U * (m + 1))]
    if scrambled:
        rng.shuffle(pool)
    W = [pool[u * m : (u + 1) * m] for u in range(U)]
    b = pool[U * m :]
    params = pool
    X = [[rng.uniform(-2, 2) for _ in range(m)] for _ in range(V)]
    order = [(v, k) for v in range(V) for k in range(m)]
    if scrambled:  # the inputs are computed, in another order than the layer reads them
        rng.shuffle(order)

    def layer(X):
        made = {vk: X[vk[0]][vk[1]] * 1.5 for vk in order}
        X = [[made[v, k] for k in range(m)] for v in range(V)]
        outs = [getattr(chainrule.dot(W[u], x, b[u]), activation)() for x in X for u in range(U)]
        return chainrule.sum_values([o * (k + 1.0) for k, o in enumerate(outs)])

    eager, eager_grads = loss_and_grads(layer, params, [[Value(x) for x in row] for row in X])
    for backend in ("c", "auto", "numpy"):
        f = chainrule.compile(layer, backend=backend)
        loss_and_grads(f, params, X)  # the trace
        got, grads = loss_and_grads(f, params, X)
        assert [got, *grads] == pytest.approx([eager, *eager_grads], rel=1e-12, abs=1e-12), backend


@pytest.mark.parametrize("with_the_prebuilt_program", [True, False])
def test_auto_runs_every_tape_on_the_one_table_program(
    monkeypatch, with_the_prebuilt_program, loss_and_grads
):
    # "auto", the default, never runs the C compiler per tape: a network's tape (layers and
    # all) walks the table program that pip built; without it, that program is built once.
    if not with_the_prebuilt_program:
        monkeypatch.setattr(native, "prebuilt_tables", lambda: None)
    random.seed(1)
    model = nn.MLP(2, [6, 5, 1])
    X = [[random.uniform(-1, 1), random.uniform(-1, 1)] for _ in range(7)]
    params = model.parameters()

    def loss(X):
        return sum((1.0 + -model(x)).relu() for x in X) * (1.0 / len(X))

    eager = loss_and_grads(loss, params, [[Value(v) for v in x] for x in X])
    builds = []
    real_run = native.subprocess.run
    monkeypatch.setattr(native.subprocess, "run", lambda *a, **k: builds.append(a) or real_run(*a, **k))
    assert chainrule.compile(loss).backend == "auto"
    for f in (chainrule.compile(loss), chainrule.compile(lambda X: loss(X) * 2.0)):
        f(X)
        assert isinstance(f.last_tape.fast, CProgram)
        assert "switch (t[0])" in f.last_tape.fast.source  # the table program, not a tape's own
        assert any(hasattr(g, "weights") for g in f.last_tape.groups)  # with its layers as such
    got = loss_and_grads(f, params, X)
    assert got[0] == pytest.approx(2.0 * eager[0], rel=1e-12)
    assert got[1] == pytest.approx([2.0 * g for g in eager[1]], rel=1e-12, abs=1e-15)
    assert len(builds) == (0 if with_the_prebuilt_program else 1)


def test_auto_without_the_table_program_or_a_compiler_runs_numpy_quietly(monkeypatch):
    monkeypatch.setattr(native, "prebuilt_tables", lambda: None)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    w = Value(3.0)
    f = chainrule.compile(lambda x: sum(w * v for v in x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f([1.0, 2.0, 3.0]).data == 18.0
    assert not isinstance(f.last_tape.fast, CProgram)


def test_a_block_of_positions_is_a_pattern_only_when_every_position_fits_it():
    positions = 7 + 3 * np.arange(4)[:, None] + 10 * np.arange(5)  # (4, 5)
    assert native._pattern(np, positions) == (7, 3, 10)
    assert native._pattern(np, positions[:1]) == (7, 0, 10)
    assert native._pattern(np, np.full((3, 2), 5)) == (5, 0, 0)
    broken = positions.copy()
    broken[3, 4] += 1
    assert native._pattern(np, broken) is None
    assert native._pattern(np, positions[:, [0, 2, 1]]) is None


@pytest.mark.parametrize("op", ["neg", "exp", "log", "tanh", "sigmoid", "relu", "softplus"])
@pytest.mark.parametrize("backend", ["c", "auto"])
def test_ops_of_one_input_in_a_run_match_eager(op, backend, loss_and_grads):
    # Nodes whose inputs lie one after the other (an activation after a layer) run as fr_/br_
    # loops with no positions to read: the same numbers, and the same masked gradients.
    w = Value(0.7)
    xs = [0.3 * k - 1.1 for k in range(9)]  # with negatives and a zero: relu's both sides

    def fn(xs):
        inputs = [(w * x + 2.0) if op == "log" else w * x for x in xs]  # log's stay positive
        outs = [getattr(v, "__neg__" if op == "neg" else op)() for v in inputs]
        return [chainrule.sum_values([o * (k + 1.0) for k, o in enumerate(outs)]), outs[3]]

    f = chainrule.compile(fn, backend=backend)
    f(xs)
    source = f.source()
    assert f"fr_{op}(" in source and f"br_{op}(" in source  # a run, both ways
    for output in (0, 1):  # the whole sum, then one node of the run (a masked pass)
        eager, (eager_grad,) = loss_and_grads(
            lambda xs, output=output: fn(xs)[output], [w], [Value(x) for x in xs]
        )
        got, (grad,) = loss_and_grads(lambda xs, output=output: f(xs)[output], [w], xs)
        assert (got, grad) == pytest.approx((eager, eager_grad), rel=1e-12, abs=1e-15)


def test_a_domain_error_in_a_run_is_eagers_error():
    w = Value(1.0)
    f = chainrule.compile(lambda xs: sum((w * x).log() for x in xs), backend="c")
    assert f([1.0, 2.0, 3.0]).data == pytest.approx(math.log(6.0))
    assert "fr_log(" in f.source()
    with pytest.raises(ValueError, match="log"):
        f([1.0, -2.0, 3.0])


def test_the_prebuilt_programs_python_entry_points_refuse_wrong_arrays():
    # forward() and backward() of _tables take the tape's arrays straight from native.py; arrays
    # of the wrong kind or size are a clear error, never a read past their end.
    module = native.prebuilt_tables()
    if module is None:
        pytest.skip("compiler/_tables.c was not built here")
    data, grad = np.zeros(4), np.zeros(4)
    idx, table = np.zeros(1, dtype=np.int32), np.zeros((0, native.ROW), dtype=np.int64)
    assert module.forward(data, idx, table, 0) == 0  # an empty table: nothing to do
    assert module.backward(data, grad, idx, None, table, 0) == 0
    with pytest.raises(ValueError, match="wrong size"):
        module.backward(data, np.zeros(3), idx, None, table, 0)  # grad shorter than data
    with pytest.raises(ValueError, match="wrong size"):
        module.backward(data, grad, idx, np.zeros(3, dtype=bool), table, 0)  # the mask too
    with pytest.raises(ValueError, match="wrong size"):
        module.forward(data, idx, np.zeros(5, dtype=np.int64), 0)  # not whole rows
    with pytest.raises(TypeError):
        module.forward(data, idx, table)
    with pytest.raises(TypeError):
        module.forward([0.0], idx, table, 0)  # not a buffer
    with pytest.raises(ValueError, match="wrong size"):
        module.forward(data, np.zeros(3, dtype=np.int8), table, 0)  # not int32 positions
    readonly = np.zeros(4)
    readonly.flags.writeable = False
    with pytest.raises((ValueError, BufferError, TypeError)):
        module.forward(readonly, idx, table, 0)


def test_the_one_call_replay_refuses_wrong_arrays():
    # replay() copies the leaves' numbers in and runs forward. Wrong arrays are a clear error.
    module = native.prebuilt_tables()
    if module is None:
        pytest.skip("compiler/_tables.c was not built here")
    idx, table = np.zeros(1, dtype=np.int32), np.zeros((0, native.ROW), dtype=np.int64)
    data = np.full(5, -1.0)
    assert module.replay(data, (np.array([1.0, 2.0]), np.array([3.0])), idx, table, 0) == 0
    assert data.tolist() == [1.0, 2.0, 3.0, -1.0, -1.0]  # copied one after the other, the rest left
    with pytest.raises(TypeError, match="not of float64"):
        module.replay(data, (np.array([1, 2]),), idx, table, 0)  # int64: copied bit for bit, wrongly
    with pytest.raises(ValueError, match="longer than data"):
        module.replay(data, (np.zeros(6),), idx, table, 0)
    with pytest.raises(TypeError):
        module.replay(data, [np.zeros(1)], idx, table, 0)  # not a tuple


@pytest.mark.parametrize("backend", ["auto", "numpy", "c"])
def test_a_models_backward_in_one_call_matches_the_general_path_and_eager(backend):
    random.seed(3)
    model = nn.MLP(3, [5, 4, 1])
    params = model.parameters()
    X = [[random.uniform(-1, 1) for _ in range(3)] for _ in range(6)]
    f = chainrule.compile(lambda X: chainrule.sum_values([model(x).tanh() for x in X]), backend=backend)
    for p in params:
        p.grad = 0.25  # the gradients add to what is there
    out = f(X)
    out.backward()
    out.backward(2.0)  # a second pass with another seed
    got = [p.grad for p in params] + [out.grad]
    for p in params:
        p.grad = 0.25
    eager = chainrule.sum_values([model([Value(v) for v in x]).tanh() for x in X])
    eager.backward()
    eager.backward(2.0)
    want = [p.grad for p in params] + [eager.grad]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert f.last_tape.in_one_call == (backend == "auto" and native.prebuilt_tables() is not None)


def test_a_backward_in_one_call_that_meets_a_domain_error_raises_eagers_and_stores_nothing():
    random.seed(5)
    model = nn.MLP(2, [4, 1])
    X = [[0.5, -0.2], [0.1, 0.3]]

    def loss(X):
        s = chainrule.sum_values([model(x) for x in X])
        return (s * 0.0) ** 0.5 + s  # the gradient of x ** 0.5 at 0: a ZeroDivisionError in eager

    model.zero_grad()
    with pytest.raises(ZeroDivisionError) as eager:
        loss([[Value(a) for a in x] for x in X]).backward()
    f = chainrule.compile(loss)
    out = f(X)
    for p in model.parameters():
        p.grad = 0.5
    with pytest.raises(ZeroDivisionError) as compiled:
        out.backward()
    assert str(compiled.value) == str(eager.value)
    assert [p.grad for p in model.parameters()] == [0.5] * len(model.parameters()) and out.grad == 0.0
