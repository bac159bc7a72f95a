"""SGD and Adam's one vectorized pass (with numpy) against their loop over parameters (without).

Oracles: the scalar loop, run on the same gradients by hiding numpy from chainrule.optim, and
torch.optim in float64 when PyTorch is installed, including parameters whose gradient is None
on some steps (they skip the step: Adam's step count and SGD's momentum are per parameter).
"""

import math
import random
import warnings

import pytest

from chainrule import Value
from chainrule import optim as optim_module
from chainrule.optim import SGD, Adam, linear_decay

np = pytest.importorskip("numpy")  # the vectorized pass needs it

N = 40
STEPS = 6


def gradient_pattern(step, i):
    """The gradient of parameter ``i`` at ``step``: a number, or None (a skipped parameter)."""
    if (i + step) % 5 == 0 or (i < 3 and step < 2):  # some skip, some start late
        return None
    return math.sin(1.7 * i + 0.9 * step) * (1 + i % 3)


def run(make_optimizer, scalar, monkeypatch, with_none=True):
    """Every parameter's data after each step, and the optimizer's state at the end."""
    if scalar:
        monkeypatch.setattr(optim_module, "_NUMPY", None)
    rng = random.Random(0)
    params = [Value(rng.uniform(-1.0, 1.0)) for _ in range(N)]
    optimizer = make_optimizer(params)
    trajectory = []
    for step in range(STEPS):
        for i, p in enumerate(params):
            g = gradient_pattern(step, i)
            p.grad = g if with_none or g is not None else 0.0
        optimizer.step()
        trajectory.append([p.data for p in params])
    monkeypatch.undo()
    return trajectory, optimizer


OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd momentum decay": lambda ps: SGD(ps, lr=linear_decay(0.5, 0.05, 4), momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: Adam(ps, lr=0.01),
    "adam decay schedule": lambda ps: Adam(
        ps, lr=lambda k: 0.05 / (k + 1), betas=(0.85, 0.99), eps=1e-6, weight_decay=0.1
    ),
}


def assert_same(a, b):
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == pytest.approx(y, rel=1e-12, abs=1e-15), f"step {step + 1}"


@pytest.mark.parametrize("with_none", [True, False])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_vectorized_pass_gives_the_scalar_loops_numbers_and_state(name, with_none, monkeypatch):
    fast, fast_opt = run(OPTIMIZERS[name], False, monkeypatch, with_none)
    slow, slow_opt = run(OPTIMIZERS[name], True, monkeypatch, with_none)
    assert_same(fast, slow)
    if isinstance(fast_opt, Adam):
        assert fast_opt.t == slow_opt.t and all(type(t) is int for t in fast_opt.t)
        assert_same([fast_opt.m, fast_opt.v], [slow_opt.m, slow_opt.v])
    else:
        assert [b is None for b in fast_opt.buffers] == [b is None for b in slow_opt.buffers]
        assert_same([[b or 0.0 for b in fast_opt.buffers]], [[b or 0.0 for b in slow_opt.buffers]])
    if with_none and isinstance(fast_opt, Adam):
        assert fast_opt.t[0] < STEPS  # the pattern really made some parameter skip steps


TORCH_OPTIMIZERS = {
    "sgd momentum decay": lambda optim, ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam decay": lambda optim, ps: optim.Adam(ps, lr=0.01, betas=(0.85, 0.99), eps=1e-6, weight_decay=0.1),
}
OURS = {
    "sgd momentum decay": lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam decay": lambda ps: Adam(ps, lr=0.01, betas=(0.85, 0.99), eps=1e-6, weight_decay=0.1),
}


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_vectorized_pass_matches_torch_with_skipped_parameters(name, monkeypatch):
    torch = pytest.importorskip("torch")
    ours, _ = run(OURS[name], False, monkeypatch)
    rng = random.Random(0)
    params = [torch.tensor(rng.uniform(-1.0, 1.0), dtype=torch.float64, requires_grad=True) for _ in range(N)]
    optimizer = TORCH_OPTIMIZERS[name](torch.optim, params)
    theirs = []
    for step in range(STEPS):
        for i, p in enumerate(params):
            g = gradient_pattern(step, i)
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        theirs.append([p.item() for p in params])
    assert_same(ours, theirs)


@pytest.mark.parametrize("make", [OPTIMIZERS["sgd momentum decay"], OPTIMIZERS["adam"]])
def test_a_value_or_int_gradient_counts_as_its_number(make, monkeypatch):
    def final(grads, scalar):
        if scalar:
            monkeypatch.setattr(optim_module, "_NUMPY", None)
        params = [Value(0.5), Value(-0.25), Value(1.0)]
        optimizer = make(params)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        monkeypatch.undo()
        return [p.data for p in params]

    mixed = final([Value(2.0), 3, 0.5], scalar=False)
    assert all(type(x) is float for x in mixed)
    assert mixed == final([2.0, 3.0, 0.5], scalar=False) == final([Value(2.0), 3, 0.5], scalar=True)


@pytest.mark.parametrize("bad", ["1.5", True, [1.0], complex(1, 0)])
@pytest.mark.parametrize("make", [OPTIMIZERS["sgd momentum decay"], OPTIMIZERS["adam"]])
def test_a_gradient_that_is_not_a_number_raises_before_anything_moves(make, bad):
    params = [Value(float(i)) for i in range(5)]
    optimizer = make(params)
    for p in params:
        p.grad = 1.0
    optimizer.step()
    params[3].grad = bad

    def state():
        return (
            [p.data for p in params],
            list(getattr(optimizer, "m", [])),
            list(getattr(optimizer, "buffers", [])),
        )

    before = state()
    with pytest.raises(TypeError, match=r"params\[3\]\.grad must be a number"):
        optimizer.step()
    assert state() == before
    assert optimizer.step_count == 1


def test_adam_with_eps_zero_and_a_zero_gradient_raises_before_anything_moves():
    params = [Value(1.0), Value(2.0)]
    optimizer = Adam(params, lr=0.1, eps=0.0)
    params[0].grad, params[1].grad = 1.0, 0.0
    with pytest.raises(ZeroDivisionError, match=r"params\[1\]"):
        optimizer.step()
    assert [p.data for p in params] == [1.0, 2.0]
    assert optimizer.t == [0, 0] and optimizer.step_count == 0


WITHOUT_NUMPY = """
import sys
sys.modules["numpy"] = None  # `import numpy` now raises ImportError
from chainrule import Value, optim
ps = [Value(1.0), Value(2.0)]
for make in (lambda: optim.SGD(ps, lr=0.5, momentum=0.9), lambda: optim.Adam(ps, lr=0.1)):
    opt = make()
    ps[0].grad, ps[1].grad = 0.5, None
    opt.step()
assert optim._numpy() is None
assert ps[1].data == 2.0                 # no gradient: left alone
# SGD's step (1 - 0.5 * 0.5), then Adam's first, with m_hat = g and v_hat = g * g (to rounding)
expected = 0.75 - 0.1 * 0.5 / (0.5 + 1e-8)
assert abs(ps[0].data - expected) < 1e-12, ps[0].data
"""


def test_without_numpy_the_loop_over_parameters_runs(run_python):
    run_python(WITHOUT_NUMPY)


@pytest.mark.parametrize("make", [OPTIMIZERS["sgd momentum decay"], OPTIMIZERS["adam"]])
def test_an_overflow_gives_the_scalar_loops_inf_without_a_numpy_warning(make, monkeypatch):
    # Regression: numpy warned "overflow encountered in multiply" where Python's floats do not.
    def final(scalar):
        if scalar:
            monkeypatch.setattr(optim_module, "_NUMPY", None)
        params = [Value(1e300), Value(1.0)]
        optimizer = make(params)
        params[0].grad, params[1].grad = 1e300, 1.0
        optimizer.step()
        monkeypatch.undo()
        return [p.data for p in params]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = final(scalar=False)
    slow = final(scalar=True)
    assert [repr(x) for x in fast] == [repr(x) for x in slow]
