"""compile(fn, backend="jax"): the tape as one jax.jit function, checked against eager chainrule.

The oracles are eager chainrule on the same numbers (its results, gradients and exceptions),
central finite differences for the smooth ops, and one device for the sharded runs. Every test
but the one without jax skips where jax is not installed (``pip install "chainrule[jax]"``).
"""

import math
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, map_rows, nn, no_grad, take

np = pytest.importorskip("numpy")


@pytest.fixture
def jax():
    return pytest.importorskip("jax")


def close(a, b, tol=1e-10):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def mlp_and_data(batch=20, sizes=(8, 8, 1), seed=1):
    random.seed(seed)
    model = nn.MLP(2, list(sizes))
    X = [[random.uniform(-1.5, 1.5), random.uniform(-1.5, 1.5)] for _ in range(batch)]
    y = [1.0 if a * b > 0 else -1.0 for a, b in X]
    return model, np.array(X), np.array(y)


def hinge_loss(model):
    def loss(X, y):
        scores = map_rows(model, X)
        return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))

    return loss


def loss_and_grads(f, params, *args):
    for p in params:
        p.grad = 0.0
    out = f(*args)
    out.backward()
    return out.data, [p.grad for p in params]


def eager(fn, params, *args):
    as_values = [
        [[Value(x) for x in row] for row in a] if a.ndim == 2 else [Value(x) for x in a] for a in args
    ]
    return loss_and_grads(fn, params, *as_values)


# ---------------------------------------------------------------------------------------------
# The contract: eager's numbers, parameters read afresh, gradients added into .grad


def test_an_mlp_step_gives_eager_loss_and_gradients(jax):
    model, X, y = mlp_and_data()
    params, loss = model.parameters(), hinge_loss(model)
    f = chainrule.compile(loss, backend="jax")
    for _ in range(3):  # the trace, then replays; the parameters move between calls
        expected, got = eager(loss, params, X, y), loss_and_grads(f, params, X, y)
        assert close(got[0], expected[0])
        assert all(close(g, e) for g, e in zip(got[1], expected[1]))
        for p in params:
            p.data -= 0.1 * p.grad  # read afresh at the next call
    assert type(f.last_tape.backend).__name__ == "JaxProgram"


def test_the_users_jax_settings_are_left_as_they_were(jax):
    model, X, y = mlp_and_data(batch=5)
    before = jax.config.jax_enable_x64
    f = chainrule.compile(hinge_loss(model), backend="jax")
    f(X, y).backward()
    f(X, y).backward()
    assert jax.config.jax_enable_x64 == before
    if not before:
        assert jax.numpy.zeros(1).dtype == jax.numpy.float32  # the user's default dtype still


def test_gradients_add_up_in_grad_and_over_backward_calls(jax):
    w = Value(0.5)
    f = chainrule.compile(lambda xs: sum(w * x for x in xs).tanh(), backend="jax")
    w.grad = 1.0
    out = f([1.0, 2.0])
    out.backward()
    slope = 3.0 * (1.0 - math.tanh(1.5) ** 2)
    assert close(w.grad, 1.0 + slope)
    out.backward(2.0)  # again, with another seed: adds twice as much
    assert close(w.grad, 1.0 + 3.0 * slope)


def test_several_outputs_and_the_backward_of_each(jax):
    a, b = Value(0.3), Value(-1.2)

    def fn(x):
        return [(a * x[0]).exp(), (b * x[0] + a).sigmoid(), a]  # (a parameter as an output too)

    f = chainrule.compile(fn, backend="jax")
    for which in range(3):
        got, want = f([0.7]), fn([Value(0.7)])
        assert all(close(g.data, e.data) for g, e in zip(got, want))
        for results in (got, want):
            a.grad = b.grad = 0.0
            results[which].backward()
            results.append((a.grad, b.grad))
        assert all(close(g, e) for g, e in zip(got[-1], want[-1]))


def test_no_grad_call_gives_numbers_only(jax):
    w = Value(2.0)
    f = chainrule.compile(lambda x: (w * x[0]).log(), backend="jax")
    f([1.0])
    with no_grad():
        out = f([3.0])
    assert close(out.data, math.log(6.0)) and out.children == ()


def test_detach_and_no_grad_stop_gradients_as_eagerly(jax):
    w, v = Value(0.8), Value(-0.4)

    def fn(x):
        with no_grad():
            scale = (v * x[0]).tanh()
        return w * x[0] * w.detach() + scale * w + (v * x[0]).detach() * v

    f = chainrule.compile(fn, backend="jax")
    for x in (0.5, -2.0):
        got, want = loss_and_grads(f, [w, v], [x]), loss_and_grads(fn, [w, v], [Value(x)])
        assert close(got[0], want[0]) and all(close(g, e) for g, e in zip(got[1], want[1]))


def test_take_picks_by_the_new_index_and_sends_the_gradient_to_that_row(jax):
    rows = [Value(float(i) - 1.5) for i in range(4)]

    def fn(x):
        return take(rows, x[0]) * x[1]

    f = chainrule.compile(fn, backend="jax")
    for index in (0.0, 3.0, -1.0, 2.0):
        got, want = (
            loss_and_grads(f, rows, [index, 2.5]),
            loss_and_grads(fn, rows, [Value(index), Value(2.5)]),
        )
        assert got == want


# ---------------------------------------------------------------------------------------------
# Eager's errors on replay


def test_a_domain_error_on_replay_is_eagers_value_error(jax):
    w = Value(1.0)
    f = chainrule.compile(lambda x: (w * x[0]).log() + x[1], backend="jax")
    f([2.0, 1.0])
    with pytest.raises(ValueError) as compiled:
        f([-3.0, 1.0])
    with pytest.raises(ValueError) as eagerly:
        (w * Value(-3.0)).log() + Value(1.0)
    assert str(compiled.value) == str(eagerly.value)


def test_take_out_of_range_on_replay_is_eagers_index_error(jax):
    rows = [Value(1.0), Value(2.0)]
    f = chainrule.compile(lambda x: take(rows, x[0]), backend="jax")
    f([1.0])
    with pytest.raises(IndexError, match="take: index 5 is out of range for 2 rows"):
        f([5.0])
    with pytest.raises(TypeError, match="must be an integer"):
        f([0.5])


def test_a_backward_domain_error_is_eagers(jax):
    # (-2) ** 2 is fine forward; its slope in the exponent needs a positive base, and eager
    # raises when backward reaches it, even through a relu that would drop the nan.
    def fn(x):
        return (x[0] ** x[1]).relu() * x[2]

    f = chainrule.compile(fn, backend="jax")
    f([2.0, 2.0, 1.0]).backward()
    with pytest.raises(ValueError) as compiled:
        f([-2.0, 2.0, 1.0]).backward()
    with pytest.raises(ValueError) as eagerly:
        fn([Value(-2.0), Value(2.0), Value(1.0)]).backward()
    assert str(compiled.value) == str(eagerly.value)


def test_nan_and_subnormal_numbers_come_out_as_eagerly(jax):
    w = Value(1.0)

    def fn(x):
        return (w * x[0]) * x[1]

    f = chainrule.compile(fn, backend="jax")
    f([1.0, 1.0])
    for numbers in ([math.inf, 5e-324], [math.nan, 1.0], [1e-310, 3.0]):
        got, want = loss_and_grads(f, [w], numbers), loss_and_grads(fn, [w], [Value(x) for x in numbers])
        assert repr(got) == repr(want)


# ---------------------------------------------------------------------------------------------
# Property tests: random graphs against eager, smooth ones against finite differences

UNARY = ("tanh", "exp", "sigmoid", "relu", "neg", "softplus", "log")
BINARY = ("+", "-", "*", "/")


@st.composite
def graphs(draw, ops=UNARY + BINARY):
    n_steps = draw(st.integers(1, 10))
    steps = []
    for i in range(n_steps):
        pool = 4 + i  # two inputs, two parameters, then each step
        steps.append(
            (draw(st.sampled_from(ops)), draw(st.integers(0, pool - 1)), draw(st.integers(0, pool - 1)))
        )
    return steps


PARAMS = [Value(0.7), Value(-0.3)]


def run_graph(steps, x):
    nodes = [x[0], x[1], *PARAMS]
    for op, i, j in steps:
        a, b = nodes[i], nodes[j]
        if op in BINARY:
            nodes.append({"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a / b)
        elif op == "neg":
            nodes.append(-a)
        else:
            nodes.append(getattr(a, op)())
    return nodes[-1] * 1.0


def outcome(run):
    try:
        out = run()
        for p in PARAMS:
            p.grad = 0.0
        out.backward()
        return "ok", out.data, [p.grad for p in PARAMS]
    except (ValueError, ZeroDivisionError, OverflowError) as error:
        return "error", type(error), str(error)


def same(a, b):
    if a[0] != b[0] or a[0] == "error":
        return a == b
    numbers = [(a[1], b[1]), *zip(a[2], b[2])]
    return all((math.isnan(x) and math.isnan(y)) or x == y or close(x, y) for x, y in numbers)


@settings(max_examples=40)
@given(steps=graphs(), x=st.lists(st.sampled_from([0.5, -1.5, 2.0, 0.0, -0.25]), min_size=2, max_size=2))
def test_random_graphs_give_eagers_numbers_gradients_and_errors(steps, x):
    pytest.importorskip("jax")
    f = chainrule.compile(lambda x: run_graph(steps, x), backend="jax")
    if outcome(lambda: f([1.25, 0.75]))[0] != "ok":  # (the trace runs eagerly: a failing one is eager's)
        return
    assert same(outcome(lambda: f(x)), outcome(lambda: run_graph(steps, [Value(v) for v in x])))


@settings(max_examples=25)
@given(
    steps=graphs(ops=("tanh", "sigmoid", "softplus", "+", "-", "*")),
    x=st.lists(st.floats(-1.5, 1.5), min_size=2, max_size=2),
)
def test_gradients_of_smooth_graphs_match_finite_differences(steps, x):
    pytest.importorskip("jax")
    f = chainrule.compile(lambda x: run_graph(steps, x), backend="jax")
    _, value, grads = outcome(lambda: f(x))
    h = 1e-6
    for p, g in zip(PARAMS, grads):
        start = p.data
        p.data = start + h
        up = f(x).data
        p.data = start - h
        down = f(x).data
        p.data = start
        assert abs((up - down) / (2 * h) - g) <= 1e-5 * max(1.0, abs(g))


def test_an_op_of_your_own_that_jax_cannot_trace_runs_on_numpy_after_a_warning(jax):
    from chainrule import engine, ops

    # vforward calls numpy itself: a JAX tracer cannot go through it
    cube = ops.defop(
        "cube_with_numpy",
        lambda x: x**3,
        lambda g, out, x: (3 * g * x * x,),
        lambda np_, X: np.power(X[0], 3),
    )
    try:
        w = Value(2.0)
        f = chainrule.compile(lambda x: engine.apply(cube, w * x[0]), backend="jax")
        with pytest.warns(RuntimeWarning, match="could not compile the op.s. cube_with_numpy"):
            out = f([1.5])
        out.backward()
        assert (out.data, w.grad) == (27.0, 40.5)  # eager's: (2 * 1.5) ** 3 and 3 * 3 ** 2 * 1.5
    finally:
        del ops.OPS["cube_with_numpy"]  # the table is the package's: later tests walk every op in it


# ---------------------------------------------------------------------------------------------
# map_rows as jax.vmap


def test_two_map_rows_calls_with_constants_and_several_results_per_row(jax):
    w, b = Value(0.3), Value(-0.7)

    def row(x, y):
        h = (w * x + b * y + 0.5).tanh()  # a constant inside the row's function
        return h * 2.0, (h - y).sigmoid()

    def fn(X, Y):
        first = map_rows(row, X, Y)
        second = map_rows(lambda pair: (pair[0] * pair[1] * w).exp(), first)
        return sum(second) + sum(a - c for a, c in first) * b

    f = chainrule.compile(fn, backend="jax")
    rng = random.Random(4)
    for _ in range(3):
        X, Y = [rng.uniform(-2, 2) for _ in range(7)], [rng.uniform(-2, 2) for _ in range(7)]
        got = loss_and_grads(f, [w, b], X, Y)
        want = loss_and_grads(fn, [w, b], [Value(x) for x in X], [Value(y) for y in Y])
        assert close(got[0], want[0]) and all(close(g, e) for g, e in zip(got[1], want[1]))
    assert f.last_tape.backend.program.mapped  # (the rows did run under vmap)


def test_the_xla_program_does_not_grow_with_the_batch(jax):
    sizes = []
    for batch in (10, 1000):
        model, X, y = mlp_and_data(batch=batch)
        f = chainrule.compile(hinge_loss(model), backend="jax")
        text = f.lower(X, y).as_text()
        sizes.append((text.count("dot_general"), text.count("\n")))
    assert sizes[0][0] == sizes[1][0] > 0  # the same matrix products: a layer over the rows each
    assert sizes[1][1] < 1.2 * sizes[0][1]


def test_lower_is_for_the_jax_backend_only():
    f = chainrule.compile(lambda x: x[0] * 2.0, backend="numpy")
    with pytest.raises(ValueError, match='backend="jax"'):
        f.lower([1.0])


def test_devices_are_checked(jax):
    with pytest.raises(ValueError, match="devices=99, but JAX sees"):
        chainrule.compile(lambda x: x[0], backend="jax", devices=99)
    with pytest.raises(TypeError, match="a count or a list of jax devices"):
        chainrule.compile(lambda x: x[0], backend="jax", devices=["cpu"])
    with pytest.raises(ValueError, match='devices= is for backend="jax"'):
        chainrule.compile(lambda x: x[0], backend="numpy", devices=2)


SHARDED = """
import json, random, numpy as np, jax, chainrule
from chainrule import map_rows, nn
random.seed(3)
model = nn.MLP(2, [8, 8, 1])
X = np.array([[random.uniform(-1.5, 1.5), random.uniform(-1.5, 1.5)] for _ in range({batch})])
y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)
def loss(X, y):
    scores = map_rows(model, X)
    return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))
def run(f):
    for p in model.parameters(): p.grad = 0.0
    out = f(X, y); out.backward()
    return [out.data] + [p.grad for p in model.parameters()]
one = run(chainrule.compile(loss, backend="jax"))
results = {{"devices": len(jax.devices()), "one": one}}
for devices in (4, jax.devices()):
    f = chainrule.compile(loss, backend="jax", devices=devices)
    results[str(devices)[:10]] = run(f)
    results["text"] = f.lower(X, y).as_text()
print(json.dumps(results))
"""


@pytest.mark.slow  # a child process with four XLA devices
@pytest.mark.parametrize("batch", [64, 103])  # (103: rows padded to split evenly)
def test_four_devices_give_one_devices_loss_and_gradients(jax, batch):
    import json

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", SHARDED.format(batch=batch)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["devices"] == 4
    assert "num_partitions = 4" in results.pop("text")
    one = results.pop("one")
    for key in ("4", "[CpuDevice"):
        assert all(close(a, b) for a, b in zip(results[key], one)), key


# ---------------------------------------------------------------------------------------------
# Without jax, and from the command line


def test_without_jax_the_error_says_how_to_install_it():
    code = (
        "import sys; sys.modules['jax'] = None\n"  # (an import of jax now fails)
        "import chainrule\n"
        "try:\n"
        "    chainrule.compile(lambda x: x[0], backend='jax')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "chainrule[jax]"' in done.stdout


def train_moons(backend, tmp_path, steps=5):
    args = ["train", "moons", "--steps", str(steps), "--out", str(tmp_path / (backend or "default"))]
    args += ["--backend", backend] if backend else []
    done = subprocess.run(
        [sys.executable, "-m", "chainrule", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # two training runs in child processes
def test_train_moons_with_jax_gives_the_default_backends_results(jax, tmp_path):
    import json

    with_jax, default = train_moons("jax", tmp_path), train_moons(None, tmp_path)
    assert "compiled, jax" in with_jax
    accuracy = [line for line in with_jax.splitlines() if line.startswith("train accuracy")]
    assert accuracy and accuracy[0] in default
    jax_state, default_state = (
        json.loads((tmp_path / name / "model.json").read_text())["state"] for name in ("jax", "default")
    )
    assert jax_state.keys() == default_state.keys()
    for key, weights in jax_state.items():  # the trained weights, to 1e-10
        pairs = (
            zip(weights, default_state[key]) if isinstance(weights, list) else [(weights, default_state[key])]
        )
        assert all(close(a, b) for a, b in pairs), key


def test_train_refuses_devices_without_jax_backend(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "chainrule", "train", "moons", "--devices", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "--devices N is for --backend jax" in done.stderr
