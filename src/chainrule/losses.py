"""Loss functions: each turns predictions and targets into one Value to call ``backward`` on.

Every loss is built from ordinary Value ops, so its gradient comes from the same rules as
everything else; there is no hand-written derivative here. Means over many examples use
``sum_values`` (one n-ary node) rather than a chain of ``+``.

The two losses that involve ``exp`` are written so that ``exp`` only ever sees an argument
that is zero or negative: then it cannot overflow, and logits of +-1000 give finite losses
and gradients.

>>> from chainrule import Value
>>> from chainrule.losses import mse
>>> p = Value(3.0)
>>> loss = mse(p, 1.0)      # (3 - 1)**2
>>> loss.backward()
>>> loss.data, p.grad       # d/dp (p - 1)**2 = 2 (p - 1)
(4.0, 4.0)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, TypeGuard

from ._checks import is_integer
from .engine import Value, _as_values, logsumexp, sum_values

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "hinge", "l2", "mse"]


# ---------------------------------------------------------------------------------------------
# Checking and normalising the arguments.


def _is_scalar(x: object) -> bool:
    return isinstance(x, (Value, numbers.Real))


def _as_list(x: Any, loss: str, what: str) -> list[Any]:
    """``x`` as a list of Values or numbers; a single Value or number becomes a list of one."""
    if _is_scalar(x):
        return [x]
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{loss}: {what} must be a Value, a number or a list of them, not {type(x).__name__}")
    try:
        items = list(x)
    except TypeError:
        raise TypeError(
            f"{loss}: {what} must be a Value, a number or a list of them, not {type(x).__name__}"
        ) from None
    for i, item in enumerate(items):
        if not _is_scalar(item):
            raise TypeError(f"{loss}: {what}[{i}] must be a Value or a number, not {type(item).__name__}")
    return items


def _is_sequence(x: object) -> TypeGuard[Iterable[Any]]:
    """A list-like of items (not a single Value or number, and not a string)."""
    return not _is_scalar(x) and not isinstance(x, (str, bytes)) and hasattr(x, "__iter__")


def _paired(x: Any, y: Any, loss: str, x_name: str, y_name: str) -> tuple[list[Any], list[Any]]:
    """Two argument lists of the same, non-zero length."""
    xs, ys = _as_list(x, loss, x_name), _as_list(y, loss, y_name)
    if len(xs) != len(ys):
        raise ValueError(f"{loss}: {len(xs)} {x_name} but {len(ys)} {y_name}")
    if not xs:
        raise ValueError(f"{loss}: the mean over no {x_name} is undefined; pass at least one")
    return xs, ys


def _is_number(x: object) -> bool:
    """A plain number, whose value is checked. Targets given as Values (as they are inside
    ``chainrule.compile``, where reading ``.data`` would freeze them) are taken as they are."""
    return not isinstance(x, Value)


def _mean(values: list[Value]) -> Value:
    return sum_values(values) / len(values)


# ---------------------------------------------------------------------------------------------
# Regression and margin losses.


def mse(
    predictions: Value | float | Iterable[Value | float], targets: Value | float | Iterable[Value | float]
) -> Value:
    """Mean squared error: the mean of ``(p - t)**2``.

    Each argument is a Value, a number, or a list of them (of the same length).

    >>> from chainrule import Value
    >>> mse([Value(1.0), Value(2.0)], [0.0, 4.0]).data     # (1 + 4) / 2
    2.5
    """
    ps, ts = _paired(predictions, targets, "mse", "predictions", "targets")
    return _mean([(p - t) ** 2 for p, t in zip(ps, ts, strict=True)])


def hinge(
    scores: Value | float | Iterable[Value | float], targets: Value | float | Iterable[Value | float]
) -> Value:
    """The SVM max-margin loss of micrograd's demo: the mean of ``relu(1 - y * s)``.

    ``targets`` are +1 or -1 (not 0/1: map a 0/1 label ``c`` to ``2 * c - 1``). A score on the
    right side of the boundary by a margin of at least 1 costs nothing.

    >>> from chainrule import Value
    >>> hinge([Value(2.0), Value(0.5)], [1, -1]).data      # (0 + 1.5) / 2
    0.75
    """
    ss, ys = _paired(scores, targets, "hinge", "scores", "targets")
    for i, y in enumerate(ys):
        if _is_number(y) and y not in (1, -1):
            raise ValueError(f"hinge: targets must be +1 or -1, but targets[{i}] is {float(y)!r}")
    return _mean([(1 - y * s).relu() for s, y in zip(_as_values(ss, "hinge"), ys, strict=True)])


# ---------------------------------------------------------------------------------------------
# Classification losses on logits.


def binary_cross_entropy_with_logits(
    logits: Value | float | Iterable[Value | float], targets: Value | float | Iterable[Value | float]
) -> Value:
    """Binary cross-entropy on raw scores (logits), averaged: like PyTorch's function of that name.

    For a logit ``x`` and a target ``y`` in [0, 1] (usually 0 or 1) the loss is
    ``-y log(sigmoid(x)) - (1 - y) log(1 - sigmoid(x))``, computed as ``log(1 + exp(x)) - x y``
    so that it stays finite for any logit.

    >>> from chainrule import Value
    >>> x = Value(0.0)
    >>> loss = binary_cross_entropy_with_logits(x, 1)
    >>> loss.backward()
    >>> round(loss.data, 6), x.grad                     # log 2, and sigmoid(0) - 1
    (0.693147, -0.5)
    """
    xs, ys = _paired(logits, targets, "binary_cross_entropy_with_logits", "logits", "targets")
    for i, y in enumerate(ys):
        if _is_number(y) and not 0.0 <= y <= 1.0:
            raise ValueError(
                "binary_cross_entropy_with_logits: targets must lie in [0, 1], "
                f"but targets[{i}] is {float(y)!r}"
            )
    xs = _as_values(xs, "binary_cross_entropy_with_logits")  # numbers as constants, with .softplus()
    return _mean([x.softplus() - x * y for x, y in zip(xs, ys, strict=True)])


def _cross_entropy_one(logits: list[Any], target: Any, where: str = "") -> Value:
    """``-sum_j p_j log(softmax(logits)_j)`` for one example; a class index is a one-hot ``p``."""
    if not logits:
        raise ValueError(f"cross_entropy: logits{where} is empty; softmax needs at least one logit")
    zs = _as_values(logits, "cross_entropy")  # numbers as constant Values, which have .exp()
    # logsumexp is one stable op (its gradient is the softmax), so no exp can overflow.
    if is_integer(target):  # a class index (a bool is not one)
        if not 0 <= target < len(zs):
            raise ValueError(
                f"cross_entropy: target{where} {target} is out of range for {len(zs)} logits "
                f"(classes 0..{len(zs) - 1})"
            )
        return logsumexp(zs) - zs[target]
    if not _is_sequence(target):
        raise TypeError(
            f"cross_entropy: target{where} must be an integer class index or a list of class probabilities, "
            f"got {target!r}"
        )
    ps = _as_list(target, "cross_entropy", f"target{where}")
    if len(ps) != len(zs):
        raise ValueError(f"cross_entropy: target{where} has {len(ps)} probabilities for {len(zs)} logits")
    for j, p in enumerate(ps):
        if _is_number(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"cross_entropy: target{where}[{j}] is {p!r}; probabilities lie in [0, 1]")
    # sum_j p_j (logsumexp(z) - z_j), with sum_j p_j = 1.
    return logsumexp(zs) - sum_values([p * z for p, z in zip(ps, zs, strict=True)])


def cross_entropy(
    logits: Iterable[Value | float] | Iterable[Iterable[Value | float]],
    target: int | Iterable[Value | float] | Iterable[int | Iterable[Value | float]],
) -> Value:
    """Softmax cross-entropy of a list of logits against a class, like PyTorch's.

    The loss is ``log(sum_j exp(z_j)) - z_target``; its gradient is ``softmax(z) - onehot``.
    The target is an integer class index, or (as PyTorch also allows) a list of class
    probabilities ``p`` that sum to 1, for the loss ``log(sum_j exp(z_j)) - sum_j p_j z_j``.
    For a batch, pass a list of logit lists and a list of targets: the result is the mean
    over the batch.

    >>> from chainrule import Value
    >>> z = [Value(1000.0), Value(-1000.0)]         # stable even for huge logits
    >>> loss = cross_entropy(z, 1)
    >>> loss.backward()
    >>> loss.data, [v.grad for v in z]
    (2000.0, [1.0, -1.0])
    >>> round(cross_entropy([[0.0, 0.0], [5.0, 5.0]], [0, 1]).data, 6)    # both log 2
    0.693147
    >>> cross_entropy([2.0, 1.0], [0.0, 1.0]).data == cross_entropy([2.0, 1.0], 1).data
    True
    """
    if not _is_sequence(logits):
        raise TypeError(f"cross_entropy: logits must be a list of Values, not {type(logits).__name__}")
    rows = list(logits)
    if not rows and not _is_scalar(target):
        raise ValueError("cross_entropy: the mean over an empty batch is undefined")
    if not rows or _is_scalar(rows[0]):  # one example
        for i, z in enumerate(rows):
            if not _is_scalar(z):
                raise TypeError(
                    f"cross_entropy: logits[{i}] must be a Value or a number, not {type(z).__name__}"
                )
        return _cross_entropy_one(rows, target)
    if not _is_sequence(target):
        raise TypeError(
            "cross_entropy: for a batch, pass a list of class indices (or of probability lists), "
            f"got {target!r}"
        )
    targets = list(target)
    if len(rows) != len(targets):
        raise ValueError(f"cross_entropy: {len(rows)} rows of logits but {len(targets)} targets")
    losses = []
    for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
        if _is_scalar(row):
            raise TypeError(f"cross_entropy: logits[{i}] must be a list of Values, like the rows before it")
        losses.append(_cross_entropy_one(_as_list(row, "cross_entropy", f"logits[{i}]"), t, where=f"[{i}]"))
    return _mean(losses)


# ---------------------------------------------------------------------------------------------
# Regularisation.


def l2(parameters: Iterable[Value | float]) -> Value:
    """The sum of squares of the parameters; multiply by a small factor and add it to a loss.

    >>> from chainrule import Value
    >>> l2([Value(3.0), Value(-4.0)]).data
    25.0
    """
    if hasattr(parameters, "parameters") and not isinstance(parameters, Value):
        raise TypeError("l2: pass model.parameters(), not the model itself")
    ps = _as_list(parameters, "l2", "parameters")
    return sum_values([p * p for p in ps])
