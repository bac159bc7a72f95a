"""chainrule/_graph.c, engine.py's hottest loops in C, against engine.py's own Python versions.

The C module must do exactly what the Python functions do: the same nodes, the same order,
the same gradients bit for bit, the same errors; hand anything unusual back to Python; and
keep the garbage collector able to free every cycle the engine can make. The whole engine
suite also runs once more on the pure-Python engine (CHAINRULE_PURE_PYTHON=1).
"""

import ast
import gc
import math
import random
import warnings
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import Value, engine, logsumexp, sum_values
from chainrule.compiler import tracing  # imported here, before any test patches engine._graph

pytestmark = pytest.mark.skipif(engine._graph is None, reason="chainrule/_graph.c is not built here")


def python_node():
    """engine.py's own ``_node``, which the C version replaced when the engine loaded: its
    definition read from engine.py and run again, in a copy of the engine's namespace."""
    path = Path(engine.__file__)
    tree = ast.parse(path.read_text(), str(path))
    (definition,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_node"]
    namespace = dict(vars(engine))
    exec(compile(ast.Module([definition], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["_node"]


PYTHON_NODE = python_node()

# ---------------------------------------------------------------------------------------------
# Random graphs that use every kind of node backward meets


def random_graph(seed: int, size: int):
    """Leaves and a loss built from them by a random mix of ops: the fast ops (stored local
    gradients), ops through apply (a rule), micrograd-style hand-made nodes with a closure, the
    scripts' Value(data, children, local_grads), sums and logsumexps, with reuse everywhere."""
    rng = random.Random(seed)
    leaves = [Value(rng.uniform(-2, 2), label=f"x{i}") for i in range(4)]
    pool = list(leaves)
    for _ in range(size):
        a, b = rng.choice(pool), rng.choice(pool)
        kind = rng.randrange(12)
        if kind == 0:
            v = a + b
        elif kind == 1:
            v = a * b
        elif kind == 2:
            v = a - 1.5
        elif kind == 3:
            v = (a * 0.3).tanh()
        elif kind == 4:
            v = (a * 0.2).exp()
        elif kind == 5:
            v = a.relu() + 2.0 * b
        elif kind == 6:
            v = (a * a + 1.0) ** 0.5  # a positive base: the fast path with one local gradient
        elif kind == 7:
            v = a.softplus()  # through apply: a rule, no stored gradients
        elif kind == 8:
            v = logsumexp([a, b, a])
        elif kind == 9:
            v = Value(a.data * b.data, (a, b), (b.data, a.data))  # the GPT scripts' node
        elif kind == 10:
            v = Value(a.data + b.data, (a, b), "+")  # the lecture's node, with a closure

            def _backward(v=v, a=a, b=b):
                a.grad += v.grad
                b.grad += v.grad

            v._backward = _backward
        else:
            v = sum_values([a, b, 1.0])
        pool.append(v)
    loss = sum_values(pool[-6:]) * 0.5
    return leaves, loss


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    size=st.integers(1, 60),
    grads_before=st.lists(st.sampled_from([0.0, 0, 1.5, -2, 0.25]), min_size=4, max_size=4),
)
def test_c_and_python_give_the_same_order_and_the_same_gradients_bit_for_bit(seed, size, grads_before):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_graph", None)
        patch.setattr(engine, "_node", PYTHON_NODE)
        python = backward_of_random_graph(seed, size, grads_before)
    c = backward_of_random_graph(seed, size, grads_before)
    assert c == python  # every node's op and number in walk order, then every leaf's grad (nan-safe)
    assert [type(g) for g in c[1]] == [type(g) for g in python[1]]


def backward_of_random_graph(seed, size, grads_before):
    """The walk order (each node's op and number) and the leaves' grads after loss.backward()."""
    leaves, loss = random_graph(seed, size)
    for leaf, g in zip(leaves, grads_before):
        leaf.grad = g
    order = [(node.op, nan_safe(node.data)) for node in engine.topological_order(loss)]
    loss.backward()
    return order, [nan_safe(leaf.grad) for leaf in leaves]


def nan_safe(x):
    return "nan" if isinstance(x, float) and math.isnan(x) else x


def test_the_same_walk_order_as_python_on_shared_children_and_several_roots():
    a, b = Value(1.0, label="a"), Value(2.0, label="b")
    c = a * b
    d = c + a
    e = d * c + b
    roots = (e, d, Value(5.0, label="lonely"))
    assert engine._graph.depth_first(roots) == engine._depth_first(roots)
    assert engine._graph.depth_first(roots) == engine._depth_first_with_a_stack(roots)


def test_a_chain_deeper_than_the_recursion_limit():
    x = Value(1.0)
    y = x
    for _ in range(200_000):
        y = y * 1.0000001
    order = engine.topological_order(y)
    assert len(order) == 400_001 and order[0] is x and order[-1] is y
    y.backward()
    assert x.grad == pytest.approx(1.0000001**200_000, rel=1e-9)


def test_the_nodes_of_the_fast_ops_are_left_out_of_the_collector_and_read_the_same():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    python = PYTHON_NODE(c.data, c._rule, c.children)
    assert not gc.is_tracked(c) and not gc.is_tracked(c.children)
    assert gc.is_tracked(a)  # a Value made by its constructor is watched as usual
    for slot in ("data", "grad", "label", "children", "_rule", "_local"):
        assert getattr(c, slot) == getattr(python, slot)
    assert vars(c) == vars(python) == {}  # no instance dict until an attribute is set


def test_graph_nodes_are_freed_when_dropped():
    x = Value(0.5)
    y = (x * x).tanh() + x.exp()
    watcher = weakref.ref(y)
    del y
    assert watcher() is None  # reference counting frees them, as before


def test_create_graph_hands_the_graph_back_to_the_collector_so_its_cycles_are_freed():
    # d exp(x) / dx = exp(x): the gradient's graph points at the node exp(x), whose children
    # point back at x, whose grad holds the gradient's graph. A cycle through fast-op nodes,
    # which only the garbage collector can free, and only if it can see them.
    x = Value(0.7)
    y = x.exp() * x
    y.backward(create_graph=True)
    assert isinstance(x.grad, Value)
    watchers = [weakref.ref(v) for v in (x, y, *y.children)]
    del x, y
    gc.collect()
    assert [w() for w in watchers] == [None] * len(watchers)


def test_unusual_children_go_back_to_the_python_versions():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    c.children = [a, b]  # a list, not a tuple: the C walk declines, Python's walks it
    assert engine._graph.depth_first((c,)) is None
    assert engine.topological_order(c) == [a, b, c]
    assert engine._graph.propagate_numbers([a, b, c], 1.0, False) is None
    c.backward()
    assert (a.grad, b.grad) == (3.0, 2.0)


def test_an_error_inside_backward_leaves_every_grad_as_it_was():
    x = Value(-1.0)
    y = x * 2.0
    z = Value(y.data, (y,), "bad")

    def _backward():
        raise ValueError("this op's backward fails")

    z._backward = _backward
    w = z + x
    x.grad = 0.25
    with pytest.raises(ValueError, match="fails"):
        w.backward()
    assert (x.grad, y.grad, z.grad, w.grad) == (0.25, 0.0, 0.0, 0.0)


def test_a_grad_that_is_not_a_number_is_reported_as_in_python():
    x = Value(1.0)
    y = x * 3.0
    x.grad = "three"
    with pytest.raises(TypeError, match="must be a number"):
        y.backward()
    assert x.grad == "three"


ENGINE_FILES = [  # run again on the pure-Python engine
    "test_semantics.py",
    "test_oracles.py",
    "test_fast_paths.py",
    "test_errors.py",
    "test_backward_atomic.py",
    "test_higher_order.py",
    "test_lecture_compat.py",
    "test_gpt_script.py",
    "test_memory_depth.py",
    "test_create_graph_memory.py",
    "test_threads.py",
    "test_nan.py",
    "test_micrograd_compat.py",
    "test_copy.py",
    "test_stable_ops.py",
    "test_gradcheck_anomaly.py",
    "test_nn.py",
    "test_optim.py",
    "test_optim_vectorized.py",
    "test_compile.py",  # the compiled calls' parameter loops, in Python
    "test_compile_hardening.py",  # the trace through apply, watched by Python properties
    "test_take.py",
]


@pytest.mark.slow  # a child pytest
def test_the_engine_suite_passes_on_the_pure_python_engine(run_test_files):
    run_test_files(ENGINE_FILES, {"CHAINRULE_PURE_PYTHON": "1"})


# ---------------------------------------------------------------------------------------------
# chainrule.compile's two loops over parameters: reading their data, adding to their grads


def test_reading_numbers_declines_anything_but_floats_and_needs_the_right_buffer():
    import numpy as np

    values = [Value(1.5), Value(-2.0)]
    out = np.zeros(2)
    assert engine._graph.read_data(values, out) is True and out.tolist() == [1.5, -2.0]
    values[1].data = 3  # an int written by hand: Python reads it, as it always has
    assert engine._graph.read_data(values, out) is None
    with pytest.raises(ValueError, match="float64 buffer"):
        engine._graph.read_data(values, np.zeros(3))
    with pytest.raises(ValueError, match="float64 buffer"):
        engine._graph.read_data(values, np.zeros(2, dtype=np.float32))


def test_adding_to_grads_is_all_or_nothing():
    import numpy as np

    values = [Value(1.0), Value(2.0), Value(3.0)]
    values[0].grad, values[1].grad, values[2].grad = 0.5, 2, 0.0
    assert engine._graph.add_to_grads(values, np.array([1.0, 0.25, -1.0])) is True
    assert [v.grad for v in values] == [1.5, 2.25, -1.0]
    assert [type(v.grad) for v in values] == [float, float, float]
    for odd in (None, True, "x", 10**400, Value(1.0)):
        values[2].grad = odd
        assert engine._graph.add_to_grads(values, np.array([1.0, 1.0, 1.0])) is None
        assert [v.grad for v in values[:2]] == [1.5, 2.25]  # untouched
        assert values[2].grad is odd


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("int_data", [False, True])
def test_a_compiled_step_adds_the_same_grads_with_and_without_the_c_loops(backend, int_data, monkeypatch):
    pytest.importorskip("numpy")
    import chainrule

    def run():
        rng = random.Random(3)
        params = [Value(rng.uniform(-1, 1)) for _ in range(6)]
        if int_data:
            params[1].data = 2  # an int: read by Python
        params[2].grad = 1  # an int grad: added as Python adds it
        params[3].grad = None  # counts as zero
        f = chainrule.compile(
            lambda xs: sum((w * x).tanh() for w, x in zip(params, xs)) ** 2, backend=backend
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no C compiler: "c" runs on numpy
            for xs in ([0.5] * 6, [1.0, -2.0, 0.25, 3.0, -0.5, 1.5]):
                out = f(xs)
                out.backward()
        return out.data, [p.grad for p in params], [type(p.grad) for p in params]

    with_c = run()
    monkeypatch.setattr(engine, "_graph", None)
    assert run() == with_c


def test_a_bad_grad_on_one_parameter_leaves_every_grad_of_a_compiled_result_as_it_was():
    pytest.importorskip("numpy")
    import chainrule

    params = [Value(0.5), Value(-1.5), Value(2.0)]
    f = chainrule.compile(lambda x: params[0] * x + params[1] * params[2])
    out = f(3.0)
    params[0].grad, params[1].grad, params[2].grad = 1.0, 2.0, "oops"
    with pytest.raises(TypeError, match="must be a number"):
        out.backward()
    assert [p.grad for p in params] == [1.0, 2.0, "oops"] and out.grad == 0.0


def test_reading_grads_and_writing_data_for_the_optimizers():
    import numpy as np

    values = [Value(1.0), Value(2.0)]
    values[0].grad, values[1].grad = 0.5, -1.5
    out = np.zeros(2)
    assert engine._graph.read_grads(values, out) is True and out.tolist() == [0.5, -1.5]
    for odd in (None, 0, "x"):
        values[1].grad = odd
        assert engine._graph.read_grads(values, out) is None
    assert engine._graph.write_data(values, np.array([7.0, -0.25])) is True
    assert [(v.data, type(v.data)) for v in values] == [(7.0, float), (-0.25, float)]
    assert engine._graph.write_data([values[0], "not a Value"], np.array([1.0, 2.0])) is None
    assert values[0].data == 7.0  # nothing written


@pytest.mark.parametrize("odd_grad", [None, 1, 0.5])
def test_adam_and_sgd_step_the_same_with_and_without_the_c_loops(odd_grad, monkeypatch):
    pytest.importorskip("numpy")
    from chainrule.optim import SGD, Adam

    def run():
        params = [Value(x) for x in (0.5, -1.0, 2.0, 3)]  # an int data too
        optimizers = [Adam(params, lr=0.1), SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01)]
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = odd_grad if i == 1 and step == 1 else 0.25 * (i + 1) * (step + 1)
            for optimizer in optimizers:
                optimizer.step()
        return [(p.data, type(p.data)) for p in params], [list(o.__dict__.get("m", [])) for o in optimizers]

    with_c = run()
    monkeypatch.setattr(engine, "_graph", None)
    assert run() == with_c


def test_zero_grad_fills_every_grad_in_one_call_and_declines_what_is_not_a_value():
    from chainrule.nn import MLP

    model = MLP(2, [3, 1])
    for p in model.parameters():
        p.grad = 1.5
    model.zero_grad()
    assert [(p.grad, type(p.grad)) for p in model.parameters()] == [(0.0, float)] * 13
    values = [Value(1.0), "not a Value"]
    values[0].grad = 2.0
    assert engine._graph.fill_grads(values, 0.0) is None
    assert values[0].grad == 2.0  # nothing changed


# ---------------------------------------------------------------------------------------------
# chainrule.compile's trace on the fast ops: _graph.node records, _graph.watched checks .data


def random_traced_function(seed: int, size: int):
    """A function of a list of inputs mixing every way a trace meets an op: the fast ops (with
    constants and parameters on either side), ops through apply, sum_values and dot, take by a
    traced index, detach and no_grad, over parameters made outside it."""
    rng = random.Random(seed)
    params = [Value(rng.uniform(-1, 1), label=f"w{i}") for i in range(3)]
    plan = [(rng.randrange(14), rng.random(), rng.random()) for _ in range(size)]

    def fn(xs):
        pool = [*xs, *params]
        for kind, r, s in plan:
            a, b = pool[int(r * len(pool))], pool[int(s * len(pool))]
            if kind == 0:
                v = a + b
            elif kind == 1:
                v = b * a
            elif kind == 2:
                v = 1.5 - a
            elif kind == 3:
                v = (a * 0.3).tanh() / (b * b + 1.0)
            elif kind == 4:
                v = (a * 0.2).exp() - b
            elif kind == 5:
                v = a.relu() + 2.0 * b
            elif kind == 6:
                v = (a * a + 1.0) ** 0.5 + (-b).sigmoid()
            elif kind == 7:
                v = a.softplus()
            elif kind == 8:
                v = logsumexp([a, b, a])
            elif kind == 9:
                v = engine.dot([a, b], [b, 2.0], 0.5)
            elif kind == 10:
                v = engine.take([a, b, a * b], xs[0]) + a.detach()
            elif kind == 11:
                with engine.no_grad():
                    v = a * b + 1.0
            elif kind == 12:
                v = (a * a + 0.5).log() + (b * b + 1.0) ** b
            else:
                v = sum_values([a, b, 1.0])
            pool.append(v)
        return sum_values(pool[-5:]) * 0.5

    return fn, params


def tape_layout(tape):
    """Everything the replay reads from a tape: its slots, its groups and where they read."""
    groups = [(g.rule.name, g.start, g.end, g.children.tolist()) for g in tape.groups]
    return (
        tape.n_inputs,
        tape.n_fixed,
        tape.n_leaves,
        tape.constant_data.tolist(),
        [id(v) for v in tape.externals],
        tape.output_positions,
        groups,
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(1, 40))
def test_a_trace_on_the_fast_ops_records_the_tape_that_apply_records(seed, size):
    chainrule = pytest.importorskip("chainrule")
    np = pytest.importorskip("numpy")
    fn, params = random_traced_function(seed, size)
    xs = [1.0, 0.25, -0.5]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_graph", None)  # the trace as without _graph.c: every op through apply
        by_apply = chainrule.compile(fn, backend="numpy")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y_apply = by_apply(xs).data
    fast = chainrule.compile(fn, backend="numpy")
    y_fast = fast(xs).data
    assert tape_layout(fast.last_tape) == tape_layout(by_apply.last_tape)
    assert nan_safe(y_fast) == nan_safe(y_apply)


def test_a_trace_records_only_its_own_thread_and_stops_recording_when_it_raises():
    import threading

    chainrule = pytest.importorskip("chainrule")
    w = Value(2.0)
    made_elsewhere = []
    started, done = threading.Event(), threading.Event()

    def elsewhere():
        started.wait()
        made_elsewhere.append(w * 3.0 + 1.0)  # eager, in another thread, while the trace runs
        done.set()

    def fn(x):
        started.set()
        done.wait()
        x * w  # one node recorded, then the trace fails
        raise ArithmeticError("fails after one op")

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with pytest.raises(ArithmeticError):
        chainrule.compile(fn)(1.0)
    thread.join()
    assert engine._mode.get().hook is None and not engine._modes_open  # nothing was left hooked
    assert made_elsewhere[0].data == 7.0
    f = chainrule.compile(lambda x: x * w + 1.0)
    assert f(3.0).data == 7.0
    tape = f.last_tape
    assert (tape.size - tape.n_leaves, tape.n_leaves) == (2, 3)  # only this trace's nodes: x, w, 1.0


@pytest.mark.parametrize("kind", ["Value", "Parameter"])
def test_the_watch_warns_for_the_users_reads_only(kind):
    chainrule = pytest.importorskip("chainrule")
    cls = getattr(chainrule, kind)
    w = cls(2.0)

    def fn(x):
        y = x * w  # quiet: an op reading its inputs
        if y.data > 1.0:  # the user's code reading a number: warned
            y = y * 2.0
        w.grad  # noqa: B018
        return y

    with pytest.warns(chainrule.TraceWarning) as caught:
        f = chainrule.compile(fn)
        f(1.0)
    assert [str(c.message).split(" of ")[0] for c in caught] == [
        "chainrule.compile: the traced function read .data",
        "chainrule.compile: the traced function read .grad",
    ]
    assert all(c.filename == __file__ for c in caught)  # pointing at the reading line
    assert chainrule.Value.__dict__["data"] is tracing._PLAIN["data"]  # the slots are back
    x = cls(1.0)
    x.data = 5.0
    assert x.data == 5.0
