"""Shared test settings: a hypothesis profile and a helper that runs Python in a fresh process."""

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings

# No deadline: the suite shares a small machine with other work, and a slow example is not a wrong one.
# Each property test sets its own max_examples to keep the whole suite fast.
settings.register_profile(
    "chainrule", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("chainrule")


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
