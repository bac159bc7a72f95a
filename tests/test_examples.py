"""The example scripts keep running: each one in a fresh interpreter, in a scratch folder, with the
Agg backend so no window opens. Expected numbers are hand calculus (written out below) and ln 2 and
(1, 1), the known minima of the functions examples/newton.py minimizes.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name, *args, cwd):
    """Run examples/<name> with these arguments in ``cwd``; return its standard output."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{done.stderr}"
    return done.stdout


def error_table(output, title_start):
    """The errors column of the table printed under the heading that starts with ``title_start``."""
    section = output.split(title_start, 1)[1]
    rows = re.findall(r"^\s*(\d+)\s+([0-9.e+-]+)\s+-?[0-9.]+$", section.split("\n\n", 1)[0], re.MULTILINE)
    return [float(error) for _, error in rows]


def test_newton_example_converges_quadratically_and_saves_its_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "newton.png"  # a folder that does not exist yet
    output = run_example("newton.py", "--out", str(out), cwd=tmp_path)

    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert out.stat().st_size > 10_000  # two panels of curves, not an empty canvas
    assert not (tmp_path / "runs").exists()  # --out was honoured; nothing went to the default place

    # 1-D: e^x - 2x has its minimum at ln 2 (the slope e^x - 2 vanishes there). Newton's errors must
    # shrink quadratically once small: e_(k+1) <= C e_k^2 with C = f'''/(2 f'') = 1/2 at ln 2; we
    # allow C = 1. Gradient descent with step 0.25 shrinks them by 1 - 0.25 * e^(ln 2) = 1/2 per step.
    newton = error_table(output, "Newton's method: ")
    assert newton[0] == pytest.approx(2.0 - math.log(2.0), rel=1e-3)
    assert newton[-1] < 1e-14
    small = [e for e in newton if 0.0 < e < 0.1]
    assert len(small) >= 2
    for before, after in zip(small, small[1:]):
        assert after <= before**2
    descent = error_table(output, "Gradient descent (step 0.25)")
    # Its table shows every 10th step: at step 10, more steps than Newton took in all, halving
    # the error each step has still left it above 1e-6.
    assert descent[1] > 1e-6 > newton[-1]

    # 2-D: Rosenbrock's minimum is (1, 1), at distance 2.2 from the start (-1.2, 1).
    newton_2 = error_table(output, "Newton's method with the Hessian")
    assert newton_2[0] == pytest.approx(2.2, rel=1e-3)
    assert newton_2[-1] < 1e-10
    descent_2 = error_table(output, "Gradient descent (step 0.001)")
    assert 1e-3 < descent_2[-1] < descent_2[0]  # descending, but nowhere near after 2000 steps


def test_reuse_example_prints_the_hand_computed_gradients(tmp_path):
    output = run_example("reuse.py", cwd=tmp_path)
    # d(a + a)/da = 2;  d(a * a)/da = 2a = 6 at 3
    assert "db/da = 2.0" in output
    assert "d/da  = 6.0" in output
    # f = (ab)(a + b): df/da = 2ab + b^2 = -3, df/db = a^2 + 2ab = -8 at (-2, 3)
    assert "df/da = -3.0, df/db = -8.0" in output
    # c = 2b = 4a
    assert "dc/da = 4.0" in output
    # c = 6a: one backward gives 6, a second adds another 6
    assert "a.grad 6.0 then 12.0" in output
    assert list(tmp_path.iterdir()) == []  # it writes no files
