"""Tests for chainrule.optim.

Oracles: torch.optim in float64, step by step, when PyTorch is importable; and first steps
worked out by hand from the update rules (written in the comments) that need nothing else.
"""

import math

import pytest

from chainrule import Value
from chainrule.optim import SGD, Adam, Optimizer, linear_decay

# A tiny two-layer tanh network on three points, written once with operators and .tanh() so
# the same code runs on chainrule Values and on 0-d torch tensors.
POINTS = [((0.5, -1.0), 1.0), ((-0.3, 0.8), -1.0), ((1.2, 0.4), 0.5)]
INITIAL = [0.3, -0.6, 0.1, 0.8, 0.2, -0.4, 0.7, -0.5, 0.05]


def network_loss(p):
    total = 0.0
    for (x1, x2), target in POINTS:
        h1 = (p[0] * x1 + p[1] * x2 + p[2]).tanh()
        h2 = (p[3] * x1 + p[4] * x2 + p[5]).tanh()
        out = p[6] * h1 + p[7] * h2 + p[8]
        total = total + (out - target) ** 2
    return total / len(POINTS) + 0.5 * p[0] * p[1]  # a cross term, so the problem is not separable


def chainrule_trajectory(make_optimizer, steps):
    params = [Value(x) for x in INITIAL]
    optimizer = make_optimizer(params)
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        network_loss(params).backward()
        optimizer.step()
        trajectory.append([p.data for p in params])
    return trajectory


def torch_trajectory(make_optimizer, steps, schedule=None):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in INITIAL]
    optimizer = make_optimizer(torch.optim, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        network_loss(params).backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
        trajectory.append([p.item() for p in params])
    return trajectory


def assert_same_trajectory(ours, theirs):
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), f"parameters differ after step {step + 1}"


CASES = {
    "sgd": (lambda p: SGD(p, lr=0.1), lambda optim, p: optim.SGD(p, lr=0.1)),
    "sgd-momentum": (
        lambda p: SGD(p, lr=0.1, momentum=0.9),
        lambda optim, p: optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "sgd-momentum-weight-decay": (
        lambda p: SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1),
        lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1),
    ),
    "adam-default": (lambda p: Adam(p), lambda optim, p: optim.Adam(p)),
    "adam": (lambda p: Adam(p, lr=0.05), lambda optim, p: optim.Adam(p, lr=0.05)),
    "adam-all-options": (
        lambda p: Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05),
        lambda optim, p: optim.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_step_by_step(case):
    ours_factory, torch_factory = CASES[case]
    theirs = torch_trajectory(torch_factory, steps=20)
    ours = chainrule_trajectory(ours_factory, steps=20)
    assert ours[-1] != INITIAL  # the parameters did move
    assert_same_trajectory(ours, theirs)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_linear_decay_matches_torch_lambda_lr(optimizer):
    # torch's LambdaLR multiplies the initial lr by the lambda: 0.1 * (1 - 0.9 k / 20) is
    # linear_decay(0.1, 0.01, 20).
    theirs = torch_trajectory(
        lambda optim, p: getattr(optim, optimizer)(p, lr=0.1),
        steps=25,
        schedule=lambda k: 1.0 - 0.9 * min(k, 20) / 20,
    )
    ours_class = {"SGD": SGD, "Adam": Adam}[optimizer]
    ours = chainrule_trajectory(lambda p: ours_class(p, lr=linear_decay(0.1, 0.01, 20)), steps=25)
    assert_same_trajectory(ours, theirs)


# ---------------------------------------------------------------------------------------------
# First steps by hand, no torch needed.


def parameter_with_grad(data, grad):
    p = Value(data)
    p.grad = grad
    return p


def test_sgd_steps_by_hand():
    p = parameter_with_grad(2.0, 3.0)
    SGD([p], lr=0.1).step()
    assert p.data == pytest.approx(2.0 - 0.1 * 3.0)  # p - lr g = 1.7

    p = parameter_with_grad(2.0, 3.0)
    SGD([p], lr=0.1, weight_decay=0.5).step()
    assert p.data == pytest.approx(1.6)  # g = 3 + 0.5 * 2 = 4; 2 - 0.1 * 4


def test_sgd_momentum_by_hand():
    p = parameter_with_grad(2.0, 3.0)
    optimizer = SGD([p], lr=0.1, momentum=0.9)
    optimizer.step()  # the buffer starts as the first gradient: b = 3, p = 2 - 0.3 = 1.7
    assert p.data == pytest.approx(1.7)
    p.grad = 1.0
    optimizer.step()  # b = 0.9 * 3 + 1 = 3.7, p = 1.7 - 0.37 = 1.33
    assert p.data == pytest.approx(1.33)


def test_adam_by_hand():
    p = parameter_with_grad(1.0, 2.0)
    optimizer = Adam([p], lr=0.1)
    optimizer.step()
    # m = 0.1 * 2 = 0.2, v = 0.001 * 4 = 0.004; m_hat = 0.2 / 0.1 = 2, v_hat = 0.004 / 0.001 = 4
    assert p.data == pytest.approx(1.0 - 0.1 * 2.0 / (2.0 + 1e-8), rel=1e-14)
    first = p.data
    p.grad = -1.0
    optimizer.step()
    # m = 0.9 * 0.2 + 0.1 * -1 = 0.08, v = 0.999 * 0.004 + 0.001 * 1 = 0.004996
    # m_hat = 0.08 / (1 - 0.9**2) = 0.08 / 0.19, v_hat = 0.004996 / (1 - 0.999**2) = 0.004996 / 0.001999
    expected = first - 0.1 * (0.08 / 0.19) / (math.sqrt(0.004996 / 0.001999) + 1e-8)
    assert p.data == pytest.approx(expected, rel=1e-12)


def test_adam_does_not_move_a_parameter_with_zero_gradient():
    p = parameter_with_grad(1.5, 0.0)
    Adam([p], lr=0.1).step()
    assert p.data == 1.5  # m = 0, so the step is 0 / (0 + eps) = 0


def test_zero_grad_resets_every_gradient():
    params = [parameter_with_grad(1.0, 5.0), parameter_with_grad(2.0, -1.0)]
    SGD(params, lr=0.1).zero_grad()
    assert [p.grad for p in params] == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules.


def test_linear_decay_is_micrograds_schedule():
    schedule = linear_decay(1.0, 0.1, 100)
    for k in range(100):
        assert schedule(k) == pytest.approx(1.0 - 0.9 * k / 100, rel=1e-15)  # micrograd's demo
    assert schedule(100) == schedule(1000) == 0.1  # then it holds at the end value


def test_schedule_is_called_with_the_0_based_step_index():
    seen = []

    def schedule(k):
        seen.append(k)
        return 0.5

    p = parameter_with_grad(1.0, 1.0)
    optimizer = SGD([p], lr=schedule)
    for _ in range(3):
        optimizer.step()
    assert seen == [0, 1, 2]
    assert optimizer.step_count == 3
    assert p.data == pytest.approx(1.0 - 3 * 0.5)


def test_a_bad_schedule_value_stops_the_step_before_anything_changes():
    p = parameter_with_grad(1.0, 1.0)
    optimizer = Adam([p], lr=lambda k: 0.1 if k < 2 else -0.1)
    optimizer.step()
    optimizer.step()
    data, m, v = p.data, list(optimizer.m), list(optimizer.v)
    with pytest.raises(ValueError, match=r"lr\(2\) must be a finite number >= 0.0, got -0.1"):
        optimizer.step()
    assert (p.data, optimizer.m, optimizer.v, optimizer.step_count) == (data, m, v, 2)
    with pytest.raises(TypeError, match="schedule must return a number"):
        SGD([p], lr=lambda k: "fast").step()


# ---------------------------------------------------------------------------------------------
# Argument checking.


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: SGD([], lr=0.1), ValueError, "empty list of parameters"),
        (lambda: Adam([]), ValueError, "empty list of parameters"),
        (lambda: SGD([Value(1.0)], lr=-0.1), ValueError, "lr must be a finite number >= 0"),
        (lambda: Adam([Value(1.0)], lr=math.nan), ValueError, "lr must be a finite number"),
        (lambda: SGD([Value(1.0)], lr="0.1"), TypeError, "lr must be a number"),
        (lambda: SGD(Value(1.0), lr=0.1), TypeError, "params must be a list of Values"),
        (lambda: SGD([1.0], lr=0.1), TypeError, r"params\[0\] must be a Value, not float"),
        (lambda: SGD([Value(1.0)] * 2, lr=0.1), ValueError, r"params\[1\] appears more than once"),
        (lambda: SGD([Value(1.0)], lr=0.1, momentum=-0.5), ValueError, "momentum"),
        (lambda: SGD([Value(1.0)], lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
        (lambda: Adam([Value(1.0)], betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
        (lambda: Adam([Value(1.0)], betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
        (lambda: Adam([Value(1.0)], betas=(0.9,)), ValueError, "must be a pair"),
        (lambda: Adam([Value(1.0)], betas=0.9), TypeError, "must be a pair"),
        (lambda: Adam([Value(1.0)], eps=-1e-8), ValueError, "eps"),
        (lambda: Adam([Value(1.0)], weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda: linear_decay(1.0, 0.1, 0), ValueError, "steps must be a positive integer"),
        (lambda: linear_decay(1.0, 0.1, 2.5), TypeError, "steps must be an integer, got 2.5"),
        (lambda: linear_decay(-1.0, 0.1, 10), ValueError, "start must be a finite number >= 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_bare_optimizer_says_what_is_missing():
    with pytest.raises(NotImplementedError, match="must define _update"):
        Optimizer([Value(1.0)], lr=0.1).step()


# ---------------------------------------------------------------------------------------------
# Gradients that are not plain floats: Values (after create_graph), None, and nonsense.


def _quadratic_step(optimizer_class, create_graph, **kwargs):
    params = [Value(1.0), Value(-2.0)]
    optimizer = optimizer_class(params, lr=0.1, **kwargs)
    for _ in range(3):
        optimizer.zero_grad()
        loss = params[0] * params[0] * params[1] + params[1] * params[1]
        loss.backward(create_graph=create_graph)
        optimizer.step()
    return params


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_a_step_after_create_graph_uses_the_number_inside_the_gradient(optimizer_class):
    kwargs = {"momentum": 0.9} if optimizer_class is SGD else {}
    plain = _quadratic_step(optimizer_class, False, **kwargs)
    with_graph = _quadratic_step(optimizer_class, True, **kwargs)
    for p, q in zip(plain, with_graph):
        assert type(q.data) is float
        assert q.data == p.data
    (with_graph[0] * 2.0).backward()  # the parameters still work in later ops


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_a_parameter_whose_grad_is_none_is_skipped_as_in_pytorch(optimizer_class):
    torch = pytest.importorskip("torch")
    kwargs = {"weight_decay": 0.1} | ({"momentum": 0.9} if optimizer_class is SGD else {})
    params = [Value(1.0), Value(2.0)]
    optimizer = optimizer_class(params, lr=0.1, **kwargs)
    tensors = [torch.tensor(v.data, dtype=torch.float64, requires_grad=True) for v in params]
    reference = getattr(torch.optim, optimizer_class.__name__)(tensors, lr=0.1, **kwargs)
    for step in range(4):
        params[0].grad, params[1].grad = 0.5 * step + 0.1, (None if step % 2 else -0.3)
        tensors[0].grad = torch.tensor(params[0].grad, dtype=torch.float64)
        tensors[1].grad = None if params[1].grad is None else torch.tensor(-0.3, dtype=torch.float64)
        optimizer.step()
        reference.step()
        assert [p.data for p in params] == pytest.approx([t.item() for t in tensors], rel=1e-12)


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
@pytest.mark.parametrize("bad", ["0.5", [0.5], object()], ids=["str", "list", "object"])
def test_a_grad_that_is_not_a_number_is_refused_before_any_parameter_moves(optimizer_class, bad):
    params = [Value(1.0), Value(2.0), Value(3.0)]
    optimizer = optimizer_class(params, lr=0.1)
    params[0].grad, params[1].grad, params[2].grad = 0.5, 0.5, bad
    with pytest.raises(TypeError, match=r"params\[2\]"):
        optimizer.step()
    assert [p.data for p in params] == [1.0, 2.0, 3.0]
    assert optimizer.step_count == 0
    params[2].grad = 0.5
    optimizer.step()  # and the optimizer still works, its state untouched by the failed step
    fresh = [Value(1.0), Value(2.0), Value(3.0)]
    reference = optimizer_class(fresh, lr=0.1)
    for p in fresh:
        p.grad = 0.5
    reference.step()
    assert [p.data for p in params] == [p.data for p in fresh]
