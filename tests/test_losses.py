"""Tests for chainrule.losses.

Oracles: PyTorch in float64 when it is importable (F.mse_loss, F.binary_cross_entropy_with_logits,
F.cross_entropy, and the hinge loss written with torch ops); central finite differences
(chainrule.gradcheck) always; micrograd's own engine for the demo's hinge loss; and hand
calculus, written out next to the numbers, for the extreme logits.
"""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import Value, gradcheck
from chainrule.losses import binary_cross_entropy_with_logits, cross_entropy, hinge, l2, mse

REL = 1e-12
ABS = 1e-15  # for results that are zero up to rounding, where a relative check means nothing


def chainrule_result(loss_fn, xs):
    """The loss and the gradient of each input, from chainrule."""
    inputs = [Value(x) for x in xs]
    loss = loss_fn(inputs)
    loss.backward()
    return loss.data, [v.grad for v in inputs]


def torch_result(loss_fn, xs):
    """The loss and the gradient of each input, from PyTorch in float64."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(torch, x)
    loss.backward()
    return loss.item(), x.grad.tolist()


def assert_close(actual, expected):
    assert actual[0] == pytest.approx(expected[0], rel=REL, abs=ABS)
    assert actual[1] == pytest.approx(expected[1], rel=REL, abs=ABS)


def random_numbers(n, seed, scale=3.0):
    rng = random.Random(seed)
    return [rng.uniform(-scale, scale) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# mse


@pytest.mark.parametrize("n", [1, 3, 17])
def test_mse_matches_torch(n):
    xs, targets = random_numbers(n, seed=n), random_numbers(n, seed=100 + n)
    ours = chainrule_result(lambda v: mse(v, targets), xs)
    theirs = torch_result(
        lambda torch, x: torch.nn.functional.mse_loss(x, torch.tensor(targets, dtype=torch.float64)), xs
    )
    assert_close(ours, theirs)


def test_mse_gradients_match_finite_differences():
    assert gradcheck(lambda a, b, c: mse([a, b, c], [0.5, -1.0, 2.0]), [1.3, 0.2, -0.7])


def test_mse_takes_single_values_and_numbers():
    # (5 - 2)**2 = 9; with Values on both sides both get a gradient: d/dp = 2 (p - t) = 6, d/dt = -6.
    p, t = Value(5.0), Value(2.0)
    loss = mse(p, t)
    loss.backward()
    assert (loss.data, p.grad, t.grad) == (9.0, 6.0, -6.0)
    assert mse(5, 2).data == 9.0  # plain numbers still give a Value


def test_mse_is_one_sum_node_not_a_chain():
    loss = mse([Value(1.0)] * 50, [0.0] * 50)
    assert loss.op == "/"
    assert loss.children[0].op == "sum"
    assert len(loss.children[0].children) == 50


# ---------------------------------------------------------------------------------------------
# hinge


def torch_hinge(torch, scores, targets):
    return torch.relu(1 - torch.tensor(targets, dtype=torch.float64) * scores).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hinge_matches_torch(seed):
    scores = random_numbers(12, seed)
    targets = [random.Random(seed * 31 + i).choice([-1, 1]) for i in range(len(scores))]
    ours = chainrule_result(lambda v: hinge(v, targets), scores)
    theirs = torch_result(lambda torch, x: torch_hinge(torch, x, targets), scores)
    assert_close(ours, theirs)


def test_hinge_matches_micrograd_demo():
    # The demo's loss, computed by micrograd itself: sum((1 + -y*s).relu()) * (1 / n).
    from micrograd.engine import Value as MicroValue

    scores, targets = [0.3, -2.0, 1.7, 0.9, -0.4], [1, 1, -1, 1, -1]
    theirs_inputs = [MicroValue(s) for s in scores]
    losses = [(1 + -y * s).relu() for y, s in zip(targets, theirs_inputs, strict=True)]
    theirs = sum(losses) * (1.0 / len(losses))
    theirs.backward()
    ours = chainrule_result(lambda v: hinge(v, targets), scores)
    assert ours[0] == pytest.approx(theirs.data, rel=REL)
    assert ours[1] == pytest.approx([v.grad for v in theirs_inputs], rel=REL)


def test_hinge_gradients_match_finite_differences():
    # Points away from the kink at y * s == 1, where relu has no derivative.
    assert gradcheck(lambda a, b, c: hinge([a, b, c], [1, -1, 1]), [0.3, -2.0, -0.5])


def test_hinge_rejects_zero_one_labels():
    with pytest.raises(ValueError, match=r"targets\[1\] is 0.0"):
        hinge([Value(1.0), Value(2.0)], [1, 0])


# ---------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits

EXTREME_LOGITS = [-1000.0, -40.0, -1.5, 0.0, 0.25, 40.0, 1000.0]


@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_bce_matches_torch_including_extreme_logits(target):
    targets = [target] * len(EXTREME_LOGITS)
    ours = chainrule_result(lambda v: binary_cross_entropy_with_logits(v, targets), EXTREME_LOGITS)
    theirs = torch_result(
        lambda torch, x: torch.nn.functional.binary_cross_entropy_with_logits(
            x, torch.tensor(targets, dtype=torch.float64)
        ),
        EXTREME_LOGITS,
    )
    assert_close(ours, theirs)


def test_bce_matches_torch_on_random_logits():
    logits = random_numbers(20, seed=7, scale=6.0)
    targets = [float(random.Random(i).random() < 0.5) for i in range(20)]
    ours = chainrule_result(lambda v: binary_cross_entropy_with_logits(v, targets), logits)
    theirs = torch_result(
        lambda torch, x: torch.nn.functional.binary_cross_entropy_with_logits(
            x, torch.tensor(targets, dtype=torch.float64)
        ),
        logits,
    )
    assert_close(ours, theirs)


@pytest.mark.parametrize(
    "logit, target, loss, grad",
    [
        # loss = log(1 + e^x) - x y and d/dx = sigmoid(x) - y. At x = +-1000, e^-1000 is 0 in floats:
        (1000.0, 1, 0.0, 0.0),  # log(1 + e^1000) = 1000 + log(1 + e^-1000) = 1000, minus 1000
        (1000.0, 0, 1000.0, 1.0),  # sigmoid(1000) = 1
        (-1000.0, 1, 1000.0, -1.0),  # log(1 + e^-1000) = 0, minus -1000; sigmoid(-1000) = 0
        (-1000.0, 0, 0.0, 0.0),
        # At x = 0: loss log 2 whatever y, gradient 1/2 - y (a relu-based |x| would give -y here).
        (0.0, 1, math.log(2.0), -0.5),
        (0.0, 0, math.log(2.0), 0.5),
    ],
)
def test_bce_is_finite_and_exact_at_extremes(logit, target, loss, grad):
    x = Value(logit)
    result = binary_cross_entropy_with_logits(x, target)
    result.backward()
    assert result.data == pytest.approx(loss, abs=ABS)
    assert x.grad == pytest.approx(grad, abs=ABS)


def test_bce_gradients_match_finite_differences_on_both_branches():
    fn = lambda a, b, c, d: binary_cross_entropy_with_logits([a, b, c, d], [1, 0, 1, 0.25])  # noqa: E731
    assert gradcheck(fn, [-2.0, 0.0, 0.7, 3.5])


# ---------------------------------------------------------------------------------------------
# cross_entropy


def torch_cross_entropy(torch, logits, targets):
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets))


@pytest.mark.parametrize(
    "logits, target",
    [
        ([0.2, -1.3, 2.5], 0),
        ([0.2, -1.3, 2.5], 2),
        ([1000.0, -1000.0, 0.0], 1),
        ([1000.0, -1000.0, 0.0], 0),
        ([-1000.0, -1000.0], 1),
        ([5.0], 0),
    ],
)
def test_cross_entropy_matches_torch(logits, target):
    ours = chainrule_result(lambda v: cross_entropy(v, target), logits)
    theirs = torch_result(lambda torch, x: torch_cross_entropy(torch, x.unsqueeze(0), [target]), logits)
    assert all(map(math.isfinite, [ours[0], *ours[1]]))
    assert_close(ours, theirs)


def test_cross_entropy_batch_is_the_mean_and_matches_torch():
    rows = [random_numbers(4, seed=s) for s in range(5)]
    rows[2] = [1000.0, -1000.0, 3.0, 0.0]
    targets = [0, 3, 1, 2, 2]
    flat = [x for row in rows for x in row]

    def ours_fn(values):
        return cross_entropy([values[4 * i : 4 * i + 4] for i in range(5)], targets)

    ours = chainrule_result(ours_fn, flat)
    theirs = torch_result(lambda torch, x: torch_cross_entropy(torch, x.reshape(5, 4), targets), flat)
    assert_close(ours, theirs)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-60, 60), min_size=1, max_size=6).flatmap(
        lambda zs: st.tuples(st.just(zs), st.integers(0, len(zs) - 1))
    )
)
def test_cross_entropy_property_matches_torch(case):
    logits, target = case
    ours = chainrule_result(lambda v: cross_entropy(v, target), logits)
    theirs = torch_result(lambda torch, x: torch_cross_entropy(torch, x.unsqueeze(0), [target]), logits)
    # The loss is a difference of nearly equal numbers when the target dominates; compare it
    # with an absolute tolerance scaled to the logits' size.
    scale = max(1.0, max(abs(z) for z in logits))
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12, abs=1e-14 * scale)
    # The gradient is softmax - onehot: p - 1 with p near 1 cancels, so allow a few ulps of 1.
    assert ours[1] == pytest.approx(theirs[1], rel=1e-12, abs=1e-14)


def test_cross_entropy_gradients_match_finite_differences():
    assert gradcheck(lambda a, b, c, d: cross_entropy([a, b, c, d], 2), [0.5, -1.0, 2.0, 0.1])
    batch = lambda a, b, c, d: cross_entropy([[a, b], [c, d]], [1, 0])  # noqa: E731
    assert gradcheck(batch, [0.5, -1.0, 2.0, 0.1])


def test_cross_entropy_hand_derived_extremes():
    # z = (1000, -1000): softmax = (1, e^-2000) = (1, 0) in floats.
    # target 0: loss = log(1 + e^-2000) = 0, gradient softmax - onehot = (0, 0).
    z = [Value(1000.0), Value(-1000.0)]
    loss = cross_entropy(z, 0)
    loss.backward()
    assert (loss.data, [v.grad for v in z]) == (0.0, [0.0, 0.0])
    # Equal logits, however large: loss log 3 for 3 classes, gradient 1/3 - onehot.
    z = [Value(-1000.0)] * 1 + [Value(-1000.0), Value(-1000.0)]
    loss = cross_entropy(z, 1)
    loss.backward()
    assert loss.data == pytest.approx(math.log(3.0), rel=REL)
    assert [v.grad for v in z] == pytest.approx([1 / 3, 1 / 3 - 1, 1 / 3], rel=REL)


@pytest.mark.parametrize(
    "logits, target, error, message",
    [
        ([0.0, 1.0], 2, ValueError, r"target 2 is out of range for 2 logits \(classes 0..1\)"),
        ([0.0, 1.0], -1, ValueError, "target -1 is out of range"),
        ([0.0, 1.0], 1.0, TypeError, "integer class index"),
        ([0.0, 1.0], True, TypeError, "integer class index"),
        ([], 0, ValueError, "empty"),
        ([[0.0, 1.0], [2.0, 3.0]], [0], ValueError, "2 rows of logits but 1 targets"),
        ([[0.0, 1.0], [2.0, 3.0]], [0, 5], ValueError, r"target\[1\] 5 is out of range"),
        ([[0.0, 1.0]], 0, TypeError, "for a batch, pass a list of class indices"),
        ([], [], ValueError, "empty batch"),
        ([0.0, "x"], 0, TypeError, r"logits\[1\] must be a Value or a number, not str"),
        (Value(1.0), 0, TypeError, "must be a list of Values"),
    ],
)
def test_cross_entropy_errors(logits, target, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(logits, target)


# ---------------------------------------------------------------------------------------------
# l2 and argument errors shared by all losses


def test_l2_is_sum_of_squares_with_gradient_2p():
    ps = [Value(3.0), Value(-4.0), Value(0.5)]
    reg = l2(ps)
    reg.backward()
    assert reg.data == 9.0 + 16.0 + 0.25
    assert [p.grad for p in ps] == [6.0, -8.0, 1.0]
    assert l2([]).data == 0.0


def test_l2_rejects_a_model():
    from chainrule.nn import Neuron

    with pytest.raises(TypeError, match=r"pass model.parameters\(\)"):
        l2(Neuron(2))


@pytest.mark.parametrize("loss", [mse, hinge, binary_cross_entropy_with_logits])
def test_paired_losses_reject_bad_arguments(loss):
    with pytest.raises(ValueError, match="2 .* but 3 targets"):
        loss([Value(1.0), Value(1.0)], [1, 1, 1])
    with pytest.raises(ValueError, match="at least one"):
        loss([], [])
    with pytest.raises(TypeError, match=r"\[1\] must be a Value or a number, not str"):
        loss([Value(1.0), "2"], [1, 1])
    with pytest.raises(TypeError, match="not object"):
        loss(object(), [1])


def test_bce_rejects_targets_outside_0_1():
    with pytest.raises(ValueError, match=r"targets\[0\] is 2.0"):
        binary_cross_entropy_with_logits([Value(0.0)], [2])


# ---------------------------------------------------------------------------------------------
# cross_entropy with class probabilities as the target (PyTorch's soft targets)


def test_a_one_hot_target_gives_the_same_loss_and_gradient_as_its_class_index():
    logits = [0.7, -2.0, 3.1, 0.0]
    by_index = chainrule_result(lambda z: cross_entropy(z, 2), logits)
    by_probabilities = chainrule_result(lambda z: cross_entropy(z, [0.0, 0.0, 1.0, 0.0]), logits)
    assert_close(by_probabilities, by_index)


@pytest.mark.parametrize("probabilities", [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0], [0.1, 0.6, 0.3]])
def test_soft_targets_match_torch(probabilities):
    logits = [0.3, -1.2, 2.2, 0.5, 1.0, -0.4]
    rows = [probabilities, list(reversed(probabilities))]
    ours = chainrule_result(lambda z: cross_entropy([z[:3], z[3:]], rows), logits)
    theirs = torch_result(
        lambda torch, x: torch.nn.functional.cross_entropy(
            x.view(2, 3), torch.tensor(rows, dtype=torch.float64)
        ),
        logits,
    )
    assert_close(ours, theirs)


def test_soft_target_gradients_match_finite_differences():
    assert gradcheck(lambda a, b, c: cross_entropy([a, b, c], [0.2, 0.3, 0.5]), [0.5, -1.0, 2.0])


@pytest.mark.parametrize(
    "target, message",
    [
        ([0.5, 0.5], "has 2 probabilities for 3 logits"),
        ([1.5, -0.5, 0.0], r"target\[0\] is 1.5; probabilities lie in \[0, 1\]"),
        (["a", 0.0, 1.0], r"target\[0\] must be a Value or a number, not str"),
    ],
)
def test_bad_soft_targets_are_named(target, message):
    with pytest.raises((ValueError, TypeError), match=message):
        cross_entropy([0.0, 1.0, 2.0], target)


def test_targets_given_as_values_are_used_as_they_are():
    # Inside chainrule.compile the targets are traced Values; the losses must not read their .data.
    t = Value(-1.0)
    s = Value(0.5)
    assert hinge([s], [t]).data == pytest.approx(1.5)
    probabilities = [Value(0.0), Value(1.0)]
    assert cross_entropy([0.0, 0.0], probabilities).data == pytest.approx(math.log(2.0))
