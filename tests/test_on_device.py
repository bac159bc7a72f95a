"""chainrule.on_device: parameters kept on JAX's device between steps.

The oracle for every number is eager chainrule (no compile, no device), itself checked against
sympy, finite differences and PyTorch elsewhere: a run inside on_device must give its numbers.
"""

import math
import random
import warnings

import pytest

jax = pytest.importorskip("jax")
np = pytest.importorskip("numpy")

import chainrule  # noqa: E402
from chainrule import Parameter, Value, map_rows, nn  # noqa: E402
from chainrule.optim import SGD, Adam, linear_decay  # noqa: E402


def make(seed=0, rows=12):
    random.seed(seed)
    model = nn.MLP(2, [5, 4, 1])
    rng = random.Random(seed + 1)
    X = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(rows)]
    y = [1.0 if a * b > 0 else -1.0 for a, b in X]

    def loss(X, y):
        scores = map_rows(model, X)
        return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))

    return model, np.array(X), np.array(y), loss


def eager_loss(model, X, y):
    scores = [model([Value(a), Value(b)]) for a, b in X.tolist()]
    return sum((1 + -yi * s).relu() for yi, s in zip(y.tolist(), scores)) * (1.0 / len(y))


def train(optimizer_class, options, steps, device, compiled=True):
    model, X, y, loss = make()
    optimizer = optimizer_class(model.parameters(), **options)
    fast = chainrule.compile(loss, backend="jax") if compiled else None
    losses = []
    block = chainrule.on_device(model, optimizer) if device else _nothing()
    with block:
        for _ in range(steps):
            optimizer.zero_grad()
            out = fast(X, y) if compiled else eager_loss(model, X, y)
            out.backward()
            losses.append(out.data)
            optimizer.step()
    return model, optimizer, losses


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


OPTIMIZERS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    (Adam, {"lr": 0.02}),
    (Adam, {"lr": lambda k: 0.02 / (k + 1), "betas": (0.8, 0.99), "weight_decay": 0.001}),
]


@pytest.mark.parametrize("optimizer_class, options", OPTIMIZERS)
def test_training_on_the_device_gives_eagers_numbers(optimizer_class, options):
    model, optimizer, losses = train(optimizer_class, options, 8, device=True)
    eager_model, eager_optimizer, eager_losses = train(
        optimizer_class, options, 8, device=False, compiled=False
    )
    assert losses == pytest.approx(eager_losses, rel=1e-10, abs=1e-12)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert type(p) is Parameter  # home again, in its own class
        assert p.data == pytest.approx(q.data, rel=1e-10, abs=1e-12)
        assert p.grad == pytest.approx(q.grad, rel=1e-10, abs=1e-12)
    state = "buffers" if optimizer_class is SGD else "m"
    ours, theirs = getattr(optimizer, state), getattr(eager_optimizer, state)
    for a, b in zip(ours, theirs):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert optimizer._device is None and optimizer.step_count == 8


def test_the_optimizers_state_reads_current_inside_the_block():
    model, X, y, loss = make()
    optimizer = Adam(model.parameters(), lr=0.01)
    fast = chainrule.compile(loss, backend="jax")
    with chainrule.on_device(model, optimizer):
        for _ in range(3):
            optimizer.zero_grad()
            fast(X, y).backward()
            optimizer.step()
        assert optimizer.t == [3] * len(model.parameters())
        inside = optimizer.m
    assert optimizer.m == inside and any(inside)


def test_reading_and_writing_a_parameter_inside_the_block():
    model, X, y, loss = make()
    params = model.parameters()
    optimizer = SGD(params, lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    with chainrule.on_device(model, optimizer):
        optimizer.zero_grad()
        fast(X, y).backward()
        optimizer.step()
        # Reads see the device's numbers: the eager loss, the compiled loss and a by-hand
        # update all agree with the same run on the host (below).
        seen = [p.data for p in params]
        grads = [p.grad for p in params]
        assert float(params[0]) == seen[0] and repr(params[0]).startswith("Value(data=")
        eager_now = eager_loss(model, X, y).data
        assert fast(X, y).data == pytest.approx(eager_now, rel=1e-12)
        # A write is seen by the next compiled call, the optimizer and eager ops alike.
        params[0].data = 0.5
        params[1].data -= 0.25
        assert params[0].data == 0.5
        assert fast(X, y).data == pytest.approx(eager_loss(model, X, y).data, rel=1e-12)
        state = model.state_dict()
    host_model, _, _, _ = make()
    host_optimizer = SGD(host_model.parameters(), lr=0.1)
    host_optimizer.zero_grad()
    eager_loss(host_model, X, y).backward()
    host_optimizer.step()
    assert seen == pytest.approx([p.data for p in host_model.parameters()], rel=1e-12, abs=1e-15)
    assert grads == pytest.approx([p.grad for p in host_model.parameters()], rel=1e-10, abs=1e-14)
    assert params[0].data == 0.5 and state == model.state_dict()


def test_eager_backward_and_micrograds_update_loop_inside_the_block():
    model, X, y, _ = make()
    params = model.parameters()
    host_model, _, _, _ = make()
    with chainrule.on_device(model):
        for p in params:
            p.grad = 0.0
        eager_loss(model, X, y).backward()  # the C loops leave these parameters to the Python
        for p in params:
            p.data -= 0.1 * p.grad
    for p in host_model.parameters():
        p.grad = 0.0
    eager_loss(host_model, X, y).backward()
    for p in host_model.parameters():
        p.data -= 0.1 * p.grad
    assert [p.data for p in params] == [p.data for p in host_model.parameters()]
    assert [p.grad for p in params] == [p.grad for p in host_model.parameters()]


def test_a_module_zero_grad_and_another_backend_inside_the_block():
    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    on_jax = chainrule.compile(loss, backend="jax")
    on_auto = chainrule.compile(loss)  # reads the parameters through their properties
    with chainrule.on_device(model, optimizer):
        on_jax(X, y).backward()
        optimizer.step()
        model.zero_grad()  # engine.zero_grads: its C loop leaves them to the Python
        assert all(p.grad == 0.0 for p in model.parameters())
        on_auto(X, y).backward()
        from_auto = [p.grad for p in model.parameters()]
        model.zero_grad()
        on_jax(X, y).backward()
        from_jax = [p.grad for p in model.parameters()]
    assert from_jax == pytest.approx(from_auto, rel=1e-10, abs=1e-14)


def test_an_optimizer_over_some_of_the_parameters():
    model, X, y, loss = make()
    params = model.parameters()
    first = params[: len(params) // 2]
    optimizer = SGD(first, lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    before = [p.data for p in params]
    with chainrule.on_device(model, optimizer):
        for p in params:
            p.grad = 3.0
        optimizer.zero_grad()
        assert [p.grad for p in params] == [0.0] * len(first) + [3.0] * (len(params) - len(first))
        fast(X, y).backward()
        grads = [p.grad for p in params]
        optimizer.step()
    after = [p.data for p in params]
    assert after[len(first) :] == before[len(first) :]
    n = len(first)
    assert after[:n] == pytest.approx([b - 0.1 * g for b, g in zip(before[:n], grads[:n])], rel=1e-12)


def test_a_gradient_the_device_cannot_hold_sends_the_parameters_home():
    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    params = model.parameters()
    with chainrule.on_device(model, optimizer):
        fast(X, y).backward()
        with pytest.warns(RuntimeWarning, match="back on the host"):
            params[0].grad = None
        assert type(params[0]) is Parameter and optimizer._device is None
        optimizer.step()  # PyTorch's rule: a parameter whose grad is None is not moved
    assert params[0].grad is None


def test_domain_errors_are_eagers_on_the_device():
    w = Value(2.0)
    fast = chainrule.compile(lambda x: (w * x[0]).log(), backend="jax")
    assert fast([1.0]).data == pytest.approx(math.log(2.0))
    with chainrule.on_device([w]):
        w.data = -1.0
        with pytest.raises(ValueError) as raised:
            fast([1.0])
        with pytest.raises(ValueError) as eager:
            (w * Value(1.0)).log()
    assert str(raised.value) == str(eager.value)
    assert w.data == -1.0 and type(w) is Value


def test_the_block_ends_cleanly_after_an_error():
    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyError), chainrule.on_device(model, optimizer):
        optimizer.zero_grad()
        chainrule.compile(loss, backend="jax")(X, y).backward()
        optimizer.step()
        raise KeyError("stop")
    assert all(type(p) is Parameter for p in model.parameters())
    assert optimizer._device is None
    assert all(p.grad != 0.0 for p in model.parameters()[:3])


def test_what_on_device_refuses():
    model, *_ = make()
    with pytest.raises(TypeError, match="modules, optimizers or lists"):
        with chainrule.on_device(3):
            pass
    with pytest.raises(ValueError, match="no parameters"):
        with chainrule.on_device([]):
            pass
    a = Value(1.0)
    with pytest.raises(ValueError, match="computed Value"):
        with chainrule.on_device([a * 2]):
            pass

    class Mine(Value):
        pass

    with pytest.raises(TypeError, match="a Value or a Parameter, got Mine"):
        with chainrule.on_device([Mine(1.0)]):
            pass
    with chainrule.on_device(model):
        with pytest.raises(ValueError, match="on a device already"):
            with chainrule.on_device(model):
                pass
    assert all(type(p) is Parameter for p in model.parameters())


def test_no_warning_in_a_plain_training_block():
    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with chainrule.on_device(model, optimizer):
            for _ in range(2):
                optimizer.zero_grad()
                fast(X, y).backward()
                optimizer.step()


def test_changing_an_optimizers_settings_inside_the_block():
    # The compiled update reads the momentum when it is made: a new momentum makes a new one,
    # and the state it needs, as the same steps on the host do.
    runs = []
    for device in (True, False):
        model, X, y, loss = make()
        optimizer = SGD(model.parameters(), lr=0.1)
        fast = chainrule.compile(loss, backend="jax")
        block = chainrule.on_device(model, optimizer) if device else _nothing()
        with block:
            for step in range(4):
                if step == 2:
                    optimizer.momentum = 0.5
                optimizer.zero_grad()
                fast(X, y).backward()
                optimizer.step()
        runs.append(([p.data for p in model.parameters()], optimizer.buffers))
    (ours, our_buffers), (host, host_buffers) = runs
    assert ours == pytest.approx(host, rel=1e-12, abs=1e-15)
    assert our_buffers == pytest.approx(host_buffers, rel=1e-12, abs=1e-15)


def test_gradients_that_change_between_a_call_and_its_backward():
    # A call computes .grad plus its gradients ahead of backward(); a .grad changed in between
    # (by hand, or by another call's backward) must still get exactly its own gradients added.
    results = []
    for device in (True, False):
        model, X, y, loss = make()
        params = model.parameters()
        fast = chainrule.compile(loss, backend="jax")
        block = chainrule.on_device(model) if device else _nothing()
        with block:
            for p in params:
                p.grad = 0.0
            first, second = fast(X, y), fast(X[:6] * 2.0, y[:6])
            params[0].grad = 1.5
            second.backward()
            first.backward()
            first2 = fast(X, y)
            first2.backward(2.0)  # (another seed: its gradients are computed on their own)
        results.append([p.grad for p in params])
    assert results[0] == pytest.approx(results[1], rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# The next step, worked out by the call (devices._Plan): a training step is one XLA call.


@pytest.mark.parametrize(
    "optimizer_class, options",
    [*OPTIMIZERS[:3], (SGD, {"lr": linear_decay(0.2, 0.02, 5), "momentum": 0.5})],
)
def test_a_training_steps_update_is_worked_out_by_its_call(optimizer_class, options):
    model, X, y, loss = make()
    optimizer = optimizer_class(model.parameters(), **options)
    assert _steps_taken_in_the_calls(model, optimizer, chainrule.compile(loss, backend="jax"), X, y, 6)
    eager_model, _, _ = train(optimizer_class, options, 6, device=False, compiled=False)
    _assert_same_numbers(model, eager_model)


def _steps_taken_in_the_calls(model, optimizer, fast, X, y, steps):
    """Train inside on_device; whether every step took its call's numbers (the optimizer's own
    update was then never compiled)."""
    with chainrule.on_device(model, optimizer):
        placement = optimizer._device
        for _ in range(steps):
            optimizer.zero_grad()
            fast(X, y).backward()
            optimizer.step()
        return placement.steps == {}


def _assert_same_numbers(model, eager_model):
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert p.data == pytest.approx(q.data, rel=1e-10, abs=1e-12)
        assert p.grad == pytest.approx(q.grad, rel=1e-10, abs=1e-12)


def _count_steps_taken_in_calls(monkeypatch):
    """A list that gets a True for each optimizer step that takes its call's numbers."""
    from chainrule.compiler import devices

    taken, fits = [], devices._Plan.fits

    def counted(plan, *args):
        took = fits(plan, *args)
        taken.append(took)
        return took

    monkeypatch.setattr(devices._Plan, "fits", counted)
    return taken


@pytest.mark.parametrize("adam", [False, True], ids=["SGD", "Adam"])
def test_micrograds_order_zero_grad_after_the_call_also_steps_in_its_calls(monkeypatch, adam):
    # micrograd's demo (and chainrule train) call the model first, then zero_grad, backward and
    # step: from the second step on, the call must expect .grad to be zeroed before its backward.
    taken = _count_steps_taken_in_calls(monkeypatch)
    optimizer_class, options = (Adam, {"lr": 0.02}) if adam else (SGD, {"lr": 0.1, "momentum": 0.9})
    model, X, y, loss = make()
    optimizer = optimizer_class(model.parameters(), **options)
    fast = chainrule.compile(loss, backend="jax")
    with chainrule.on_device(model, optimizer):
        for _ in range(5):
            out = fast(X, y)
            optimizer.zero_grad()
            out.backward()
            optimizer.step()
    assert taken[1:] == [True] * 4
    eager_model, _, _ = train(optimizer_class, options, 5, device=False, compiled=False)
    _assert_same_numbers(model, eager_model)


def test_chainrule_train_with_the_jax_backend_steps_in_its_calls(monkeypatch):
    from chainrule.training import train as train_a_recipe

    taken = _count_steps_taken_in_calls(monkeypatch)
    ours = train_a_recipe("moons", steps=6, backend="jax", compile=True)
    assert taken[1:] == [True] * 5
    theirs = train_a_recipe("moons", steps=6)
    assert ours.losses == pytest.approx(theirs.losses, rel=1e-10)


def test_a_sweep_of_optimizers_over_one_compiled_function_steps_in_its_calls():
    # Each optimizer (and each of its settings) compiles its own step into the call: a sweep of
    # more of them than the backend keeps still gets one, and the numbers of eager training.
    model, X, y, loss = make()
    fast = chainrule.compile(loss, backend="jax")
    start = [p.data for p in model.parameters()]
    for momentum in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        for p, x in zip(model.parameters(), start):
            p.data, p.grad = x, 0.0
        optimizer = SGD(model.parameters(), lr=0.1, momentum=momentum)
        assert _steps_taken_in_the_calls(model, optimizer, fast, X, y, 2)
        eager_model, _, _ = train(SGD, {"lr": 0.1, "momentum": momentum}, 2, device=False, compiled=False)
        _assert_same_numbers(model, eager_model)
    assert len(fast.last_tape.backend.stepping) == 4


def test_a_schedule_of_the_users_is_called_by_the_steps_alone():
    calls = []

    def schedule(k):
        calls.append(k)
        return 0.1 / (k + 1)

    model, optimizer, _ = train(SGD, {"lr": schedule}, 5, device=True)
    assert calls == [0, 1, 2, 3, 4]
    eager_model, _, _ = train(SGD, {"lr": lambda k: 0.1 / (k + 1)}, 5, device=False, compiled=False)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert p.data == pytest.approx(q.data, rel=1e-10, abs=1e-12)


# What can happen between a training step's call and its optimizer step, each a reason for the
# step not to take the call's numbers (or, for reads, no reason): the same numbers as the same
# sequence on the host, read along the way and left at the end.
BETWEEN = {
    "nothing": [],
    "a read of .grad": [("read grad", 3)],
    "a read of .data": [("read", 5)],
    "a write of .data": [("write", 2, 0.25)],
    "a write of .grad": [("write grad", 4, -1.5)],
    "a new learning rate": [("lr", 0.3)],
    "a new momentum": [("momentum", 0.5)],
    "zero_grad": [("zero_grad",)],
    "a second backward": [("backward",)],
    "another call": [("call",)],
    "another call and its backward": [("call",), ("backward",)],
    "an eager backward": [("eager",)],
}


@pytest.mark.parametrize("between", list(BETWEEN), ids=list(BETWEEN))
@pytest.mark.parametrize("adam", [False, True], ids=["SGD", "Adam"])
def test_what_happens_between_a_call_and_its_step(between, adam):
    step = [("zero_grad",), ("call",), ("backward",)]
    actions = [*step, ("step",), *step, *BETWEEN[between], ("step",), ("read", 0), ("read grad", 1)]
    _assert_as_on_the_host(actions, Adam if adam else SGD)


def _one_step(fn, x, numbers, lr, device):
    """Parameters with these numbers, and one SGD step of the compiled ``fn(x, *parameters)``,
    inside on_device or not: (the loss, then each parameter's data and grad)."""
    params = [Parameter(n) for n in numbers]
    optimizer = SGD(params, lr=lr)
    fast = chainrule.compile(lambda x: fn(x, *params), backend="jax")
    with chainrule.on_device(params, optimizer) if device else _nothing():
        optimizer.zero_grad()
        out = fast(x)
        out.backward()
        optimizer.step()
    return out.data, *[(p.data, p.grad) for p in params]


LOOPS = {
    "micrograd's order": [("call",), ("zero_grad",), ("backward",), ("step",)] * 3,
    "no zero_grad at all": [("call",), ("backward",), ("step",)] * 3,  # (the call guesses wrong)
    "two calls a step": [("zero_grad",), ("call",), ("backward",), ("call",), ("backward",), ("step",)] * 2,
}


@pytest.mark.parametrize("loop", list(LOOPS), ids=list(LOOPS))
@pytest.mark.parametrize("adam", [False, True], ids=["SGD", "Adam"])
def test_training_loops_in_any_order_match_the_host(loop, adam):
    actions = [*LOOPS[loop], ("read", 0), ("read grad", 1)]
    _assert_as_on_the_host(actions, Adam if adam else SGD)


def test_a_gradient_of_negative_zero_is_added_to_zero_as_eager_adds_it():
    # .grad starts at 0.0, and 0.0 + -0.0 is 0.0: the step then leaves a parameter of -0.0 at
    # -0.0 (x - lr * 0.0), where adding the gradient as it is would give 0.0.
    def signs(result):
        (w, w_grad), (b, _) = result[1:]
        return math.copysign(1.0, w), math.copysign(1.0, w_grad), b

    runs = [
        _one_step(lambda x, w, b: -(w * x) + b, 0.0, [-0.0, 1.0], 0.5, device) for device in (True, False)
    ]
    assert signs(runs[0]) == signs(runs[1]) == (-1.0, 1.0, 0.5)


def test_a_gradient_that_is_not_finite_steps_as_on_the_host():
    def fn(x, a, b):
        return a * 1e200 * 1e200 * x + b * x

    ours, host = (_one_step(fn, 1.0, [1.0, 2.0], 0.1, device) for device in (True, False))
    assert ours == host
    loss, (a, a_grad), (b, _) = host
    assert loss == math.inf and a_grad == math.inf and a == -math.inf and b == pytest.approx(1.9)


def test_a_calls_numbers_are_let_go_after_its_step():
    # The call's gradients, computed only if something reads them, keep the call's arguments:
    # not its numbers, which would otherwise stay in the backend's pending calls for good.
    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    with chainrule.on_device(model, optimizer):
        for _ in range(6):
            optimizer.zero_grad()
            fast(X, y).backward()
            optimizer.step()
        assert len(fast.last_tape.backend.pending) <= 1


def test_copies_and_pickles_inside_the_block_are_plain_values_with_current_numbers():
    import copy
    import pickle

    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    w = model.parameters()[0]
    with chainrule.on_device(model, optimizer):
        fast(X, y).backward()
        optimizer.step()
        now = w.data
        for twin in (copy.deepcopy(w), pickle.loads(pickle.dumps(w)), w.detach()):
            assert twin.data == now and type(twin) in (Value, Parameter)
            twin.data = 123.0  # a copy's own number: the parameter's stays
        assert w.data == now


def test_a_subnormal_parameter_is_computed_as_eager_computes_it():
    # XLA on CPU reads a subnormal number as 0: such a call is left to numpy, as off the device.
    w, b = Value(5e-324), Value(1.0)
    fast = chainrule.compile(lambda x: w * x[0] + b, backend="jax")
    with chainrule.on_device([w, b]):
        out = fast([2.0])
        out.backward()
        inside = (out.data, w.grad, b.grad)
    w2, b2 = Value(5e-324), Value(1.0)
    eager = w2 * 2.0 + b2
    eager.backward()
    assert inside == (eager.data, w2.grad, b2.grad)


def test_create_graph_inside_the_block_brings_the_parameters_home():
    x = Value(3.0)
    with chainrule.on_device([x]):
        y = x * x * x
        with pytest.warns(RuntimeWarning, match="back on the host"):
            y.backward(create_graph=True)
        assert isinstance(x.grad, Value) and x.grad.data == 27.0  # 3x^2, a Value to differentiate again
    assert type(x) is Value and x.grad.data == 27.0


def test_another_thread_reads_current_numbers_while_the_block_trains():
    import threading

    model, X, y, loss = make()
    optimizer = SGD(model.parameters(), lr=0.1)
    fast = chainrule.compile(loss, backend="jax")
    w = model.parameters()[0]
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(w.data)

    thread = threading.Thread(target=reader)
    with chainrule.on_device(model, optimizer):
        thread.start()
        for _ in range(20):
            optimizer.zero_grad()
            fast(X, y).backward()
            optimizer.step()
        stop.set()
        thread.join()
        final = w.data
    assert seen and all(isinstance(v, float) and math.isfinite(v) for v in seen)
    assert w.data == final and type(w) is Parameter


# ---------------------------------------------------------------------------------------------
# Any sequence of what a training loop and its user do, inside the block and outside it: the
# same numbers read along the way and left at the end.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ACTIONS = st.lists(
    st.one_of(
        st.just(("zero_grad",)),
        st.just(("call",)),
        st.just(("backward",)),
        st.just(("step",)),
        st.tuples(st.just("lr"), st.floats(0, 0.2)),
        st.just(("eager",)),
        st.tuples(st.just("read"), st.integers(0, 10**6)),
        st.tuples(st.just("read grad"), st.integers(0, 10**6)),
        st.tuples(st.just("write"), st.integers(0, 10**6), st.floats(-2, 2)),
        st.tuples(st.just("write grad"), st.integers(0, 10**6), st.floats(-2, 2)),
    ),
    max_size=12,
)


def _run(actions, device, optimizer_class):
    model, X, y, loss = make(rows=6)
    params = model.parameters()
    optimizer = optimizer_class(params, lr=0.05)
    fast = chainrule.compile(loss, backend="jax")
    seen = []
    out = None
    block = chainrule.on_device(model, optimizer) if device else _nothing()
    with block:
        for action in actions:
            kind = action[0]
            if kind == "zero_grad":
                optimizer.zero_grad()
            elif kind == "call":
                out = fast(X, y)
                seen.append(out.data)
            elif kind == "backward":
                if out is not None:
                    out.backward()
            elif kind == "step":
                optimizer.step()
            elif kind in ("lr", "momentum"):
                if hasattr(optimizer, kind):
                    setattr(optimizer, kind, action[1])
            elif kind == "eager":
                out = eager_loss(model, X[:3], y[:3])
                out.backward()
                seen.append(out.data)
            elif kind == "read":
                seen.append(params[action[1] % len(params)].data)
            elif kind == "read grad":
                seen.append(params[action[1] % len(params)].grad)
            elif kind == "write":
                params[action[1] % len(params)].data = action[2]
            else:
                params[action[1] % len(params)].grad = action[2]
    return seen, [p.data for p in params], [p.grad for p in params]


@settings(max_examples=25, deadline=None)
@given(actions=ACTIONS, adam=st.booleans())
def test_any_sequence_of_steps_reads_and_writes_matches_the_host(actions, adam):
    _assert_as_on_the_host(actions, Adam if adam else SGD)


def _assert_as_on_the_host(actions, optimizer_class):
    """The actions (see _run) inside on_device read and leave the numbers they do on the host."""
    on_device, on_host = _run(actions, True, optimizer_class), _run(actions, False, optimizer_class)
    for ours, theirs in zip(on_device, on_host):
        assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-13)
