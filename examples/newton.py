"""Newton's method with second derivatives from chainrule, next to plain gradient descent.

Gradient descent only knows the slope, so it takes small careful steps and gains a fixed fraction
of accuracy per step (linear convergence). Newton's method also knows the curvature (the second
derivative, or the Hessian matrix in several dimensions), so near the minimum it jumps almost
straight there: the number of correct digits roughly doubles every step (quadratic convergence).

Both derivatives come from chainrule: ``grad(f)`` is the slope, ``grad(grad(f))`` the curvature,
and ``hessian(f)`` the matrix of second derivatives.

Run:  python examples/newton.py [--out runs/newton/newton.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import chainrule

# ---------------------------------------------------------------------------------------------
# 1-D: f(x) = e^x - 2x. Its slope e^x - 2 is zero at x = ln 2, and its curvature e^x is
# positive everywhere, so ln 2 is the one minimum.


def bowl(x):
    return x.exp() - 2 * x


BOWL_MINIMUM = math.log(2.0)


def newton_1d(f, x, steps):
    """Newton's step x <- x - f'(x) / f''(x): jump to where the slope's tangent line hits zero."""
    slope, curvature = chainrule.grad(f), chainrule.grad(chainrule.grad(f))
    path = [x]
    for _ in range(steps):
        x = x - slope(x) / curvature(x)
        path.append(x)
    return path


def gradient_descent_1d(f, x, steps, learning_rate):
    slope = chainrule.grad(f)
    path = [x]
    for _ in range(steps):
        x = x - learning_rate * slope(x)
        path.append(x)
    return path


# ---------------------------------------------------------------------------------------------
# 2-D: Rosenbrock's banana-shaped valley, f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum at (1, 1).
# The valley floor is nearly flat and its walls are steep: hard for gradient descent.


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


ROSENBROCK_MINIMUM = (1.0, 1.0)


def solve_2x2(matrix, vector):
    """Solve [[a, b], [c, d]] @ s = (u, v) for s with the explicit inverse of a 2x2 matrix."""
    (a, b), (c, d) = matrix
    u, v = vector
    determinant = a * d - b * c
    return (d * u - b * v) / determinant, (a * v - c * u) / determinant


def newton_2d(f, point, steps):
    """Newton's step p <- p - H^-1 g, with g the gradient and H the Hessian at p."""
    gradient, hessian = chainrule.grad(f, argnums=(0, 1)), chainrule.hessian(f)
    path = [point]
    for _ in range(steps):
        dx, dy = solve_2x2(hessian(*point), gradient(*point))
        point = (point[0] - dx, point[1] - dy)
        path.append(point)
    return path


def gradient_descent_2d(f, point, steps, learning_rate):
    gradient = chainrule.grad(f, argnums=(0, 1))
    path = [point]
    for _ in range(steps):
        gx, gy = gradient(*point)
        point = (point[0] - learning_rate * gx, point[1] - learning_rate * gy)
        path.append(point)
    return path


# ---------------------------------------------------------------------------------------------
# Reporting


def correct_digits(error):
    """About how many decimal digits are right: -log10(error), capped where floats run out."""
    return 16.0 if error == 0.0 else min(16.0, -math.log10(error))


def print_errors(title, errors, every=1):
    print(f"\n{title}")
    print(f"{'step':>6}  {'error':>10}  {'correct digits':>14}")
    for step, error in enumerate(errors):
        if step % every == 0 or step == len(errors) - 1:
            print(f"{step:>6}  {error:10.3e}  {correct_digits(error):14.1f}")


def plot(panels, out):
    """One panel per problem: the error of each method at every step, on a log scale.

    ``panels`` holds (title, curves, log_steps); with ``log_steps`` the step axis is logarithmic too,
    so that a method finishing in 7 steps and one still going after 2000 fit in one picture.
    """
    import matplotlib

    matplotlib.use("Agg")  # draw to a file; no window is needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(11, 4))
    for axis, (title, curves, log_steps) in zip(axes, panels):
        for label, errors in curves:
            # A log axis has no 0: an error of exactly 0 is drawn at 1e-17, below what floats resolve,
            # and with a logarithmic step axis, step k is drawn at k + 1.
            steps = [k + 1 if log_steps else k for k in range(len(errors))]
            errors = [max(e, 1e-17) for e in errors]
            axis.plot(steps, errors, marker="." if len(errors) < 100 else None, label=label)
        axis.set_yscale("log")
        if log_steps:
            axis.set_xscale("log")
        axis.set_title(title)
        axis.set_xlabel("iteration + 1 (log scale)" if log_steps else "iteration")
        axis.set_ylabel("distance to the minimum")
        axis.grid(True, which="major", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("runs/newton/newton.png"), help="where to save the plot"
    )
    args = parser.parse_args(argv)

    # 1-D, both from x = 2.
    newton = [abs(x - BOWL_MINIMUM) for x in newton_1d(bowl, 2.0, steps=6)]
    # The curvature near the minimum is e^(ln 2) = 2; a step of 0.25 is safe and still shrinks the
    # error only by a factor of 1 - 0.25 * 2 = 0.5 per step.
    descent = [abs(x - BOWL_MINIMUM) for x in gradient_descent_1d(bowl, 2.0, steps=60, learning_rate=0.25)]
    print("f(x) = exp(x) - 2x, minimum at x = ln 2, starting from x = 2")
    print_errors("Newton's method: the correct digits double each step once it is close", newton)
    print_errors("Gradient descent (step 0.25): about 0.3 more digits per step", descent, every=10)

    # 2-D, both from the classic start (-1.2, 1).
    def distance(p):
        return math.dist(p, ROSENBROCK_MINIMUM)

    start = (-1.2, 1.0)
    newton_2 = [distance(p) for p in newton_2d(rosenbrock, start, steps=7)]
    # The valley walls curve about 1000 times more than its floor; a larger step than 0.001 diverges.
    descent_2 = [distance(p) for p in gradient_descent_2d(rosenbrock, start, steps=2000, learning_rate=0.001)]
    print("\nRosenbrock f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum at (1, 1), starting from (-1.2, 1)")
    print_errors("Newton's method with the Hessian", newton_2)
    print_errors("Gradient descent (step 0.001): still crawling along the valley floor", descent_2, every=250)

    plot(
        [
            ("exp(x) - 2x", [("Newton", newton), ("gradient descent", descent)], False),
            ("Rosenbrock", [("Newton", newton_2), ("gradient descent", descent_2)], True),
        ],
        args.out,
    )
    print(f"\nplot saved to {args.out}")


if __name__ == "__main__":
    main()
