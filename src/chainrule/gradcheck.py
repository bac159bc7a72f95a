"""Gradient checking: compare backward's gradients with central finite differences."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .engine import Value, _reading_numbers, no_grad


class GradcheckError(AssertionError):
    """The gradients from backward disagree with finite differences."""


def central_difference(fn: Callable[..., Value], xs: list[float], i: int, eps: float) -> float:
    """(f(x + eps e_i) - f(x - eps e_i)) / 2 eps, the slope of ``fn`` along input ``i``."""
    with no_grad():
        up = [Value(x + eps) if j == i else Value(x) for j, x in enumerate(xs)]
        down = [Value(x - eps) if j == i else Value(x) for j, x in enumerate(xs)]
        return (_scalar(fn(*up)).data - _scalar(fn(*down)).data) / (2.0 * eps)


def _scalar(result: object) -> Value:
    if not isinstance(result, Value):
        raise TypeError(f"gradcheck: fn must return a single Value, got {type(result).__name__}")
    return result


def gradcheck(
    fn: Callable[..., Value],
    inputs: Iterable[float | Value],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> bool:
    """Check backward's gradients of scalar ``fn(*inputs)`` against finite differences.

    ``inputs`` are numbers or Values (only their data is used). Returns True, or raises
    ``GradcheckError`` naming every input whose gradients disagree and by how much.

    >>> from chainrule import gradcheck
    >>> gradcheck(lambda a, b: (a * b).tanh(), [0.3, -1.2])
    True
    """
    _reading_numbers("gradcheck")
    xs = [x.data if isinstance(x, Value) else float(x) for x in inputs]
    leaves = [Value(x, label=f"input {i}") for i, x in enumerate(xs)]
    _scalar(fn(*leaves)).backward()
    problems = []
    for i, leaf in enumerate(leaves):
        numeric = central_difference(fn, xs, i, eps)
        analytic = leaf.grad
        if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
            problems.append(
                f"input {i} (data={xs[i]!r}): backward gives {analytic!r}, finite differences give "
                f"{numeric!r}, off by {abs(analytic - numeric):.3g}"
            )
    if problems:
        raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(problems))
    return True
