"""Shared test settings: a hypothesis profile, helpers that run Python or pytest in a fresh process,
and the closing line of every run that says which oracles were missing."""

import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings

# No deadline: the suite shares a small machine with other work, and a slow example is not a wrong one.
# Each property test sets its own max_examples to keep the whole suite fast.
settings.register_profile(
    "chainrule", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
# CI draws the same examples on every run (HYPOTHESIS_PROFILE=ci in .ci/run), so that whether a
# change lands does not depend on the luck of the draw; a run on a developer's machine draws new
# ones each time, and what it finds becomes an @example.
settings.register_profile("ci", parent=settings.get_profile("chainrule"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chainrule"))


@pytest.fixture
def run_python():
    """Run a Python program in a fresh interpreter and return the finished process.

    The child gets this interpreter, the current environment plus ``env``, and must exit 0;
    otherwise the test fails showing the child's stderr.
    """

    def run(code: str, env: dict | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        child_env = {**os.environ, **(env or {})}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=timeout,
        )
        assert done.returncode == 0, f"child exited with {done.returncode}:\n{done.stderr}"
        return done

    return run


@pytest.fixture(scope="session")
def gpt_style():
    """benchmarks/gpt_style.py, the GPT of the pure-Python scripts (plain list indexing, its own
    minimal engine and Adam), loaded by its path: the oracle for chainrule's GPT and names recipe."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpt_style.py"
    spec = importlib.util.spec_from_file_location("gpt_style", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def loss_and_grads():
    """``loss_and_grads(f, params, *args)``: zero the params' grads, backpropagate ``f(*args)``,
    and return its number and the params' grads."""

    def run(f, params, *args):
        for p in params:
            p.grad = 0.0
        out = f(*args)
        out.backward()
        return out.data, [p.grad for p in params]

    return run


@pytest.fixture
def run_test_files():
    """Run some of the suite's test files again in a fresh pytest, with ``env`` added to the
    environment (a backend to use, a replay to turn off); they must all pass.

    The files run whole, their slow tests too (``-m ""``): a test that runs this is itself slow,
    and none of the files it runs holds such a test, so nothing runs a third time.
    """
    tests = os.path.dirname(os.path.abspath(__file__))

    def run(files, env, *options):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *options]
            + [os.path.join(tests, f) for f in files],
            cwd=os.path.dirname(tests),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:]
        assert " passed" in done.stdout

    return run


# ---------------------------------------------------------------------------------------------
# The closing line: which oracles were missing, and how to get them

# An oracle the suite checks chainrule against when it is installed, the words its skip reasons
# use, and how to install it.
ORACLES = [
    ("torch", re.compile(r"\btorch\b"), "pip install torch==2.13.0 (the CPU build)"),
    (
        "the browser (playwright + chromium)",
        re.compile(r"playwright|chromium"),
        "pip install playwright; apt-get install chromium",
    ),
    ("graphviz's dot", re.compile(r"graphviz", re.IGNORECASE), "apt-get install graphviz"),
]

_slow_deselected = []


def pytest_deselected(items):
    _slow_deselected.extend(item for item in items if item.get_closest_marker("slow"))


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple):  # (path, line, "Skipped: reason")
        return report.longrepr[2]
    return str(report.longrepr)


def oracles_line(skipped_reports, slow_deselected: int) -> str:
    """One line: each missing oracle with how many tests (or whole files, skipped as they were
    collected) it cost and how to install it; and how to run the slow tests a -m left out."""
    missing = []
    for name, pattern, how in ORACLES:
        tests, file_paths = 0, set()
        for report in skipped_reports:
            if pattern.search(_skip_reason(report)):
                if isinstance(report, pytest.CollectReport):  # as a module and for its doctests
                    file_paths.add(report.nodeid.split("::")[0])
                else:
                    tests += 1
        files = len(file_paths)
        if tests or files:
            counts = [f"{n} {word}{'s' * (n != 1)}" for n, word in ((tests, "test"), (files, "file")) if n]
            missing.append(f"{name} ({' and '.join(counts)} skipped: {how})")
    line = "oracles missing: " + "; ".join(missing) if missing else "oracles: none missing"
    if slow_deselected:
        tests = f"{slow_deselected} slow test{'s' * (slow_deselected != 1)}"
        line += f"; {tests} not run (pytest -m slow runs them, pytest -m '' all)"
    return line


def pytest_terminal_summary(terminalreporter):
    line = oracles_line(terminalreporter.stats.get("skipped", []), len(_slow_deselected))
    terminalreporter.write_line(line)
