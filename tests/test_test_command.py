"""The test command itself: the closing line that names the missing oracles (tests/conftest.py),
and the slow marker that keeps `pytest` fast (pyproject.toml deselects it; .ci/run runs it)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# A run in a folder of its own, with the suite's conftest and the same settings (a module is
# collected twice, as tests and for its doctests), so that what is skipped and deselected is
# known here, whatever is installed on this machine.
INI = """[pytest]
addopts = --doctest-modules -m "not slow"
markers =
    slow: slow tests
"""

SKIPS = """
import pytest

def test_torch_gradients():
    pytest.skip("could not import 'torch': No module named 'torch'")

@pytest.mark.parametrize("n", [1, 2])
def test_torch_hessians(n):
    pytest.skip("could not import 'torch': No module named 'torch'")

@pytest.mark.skipif(True, reason="Graphviz's dot program is not installed")
def test_svg():
    pass

def test_as_root():
    pytest.skip("root may write anywhere")  # not an oracle

@pytest.mark.slow
def test_slow_one():
    pass

@pytest.mark.slow
def test_slow_two():
    pass

def test_plain():
    assert 1 + 1 == 2
"""

BROWSER = """
import pytest

pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

def test_page():
    pass
"""


def run_pytest(folder: Path, files: dict, *options: str) -> tuple[str, str]:
    """pytest's closing line (its counts) and the oracles line, which stands in the summary before it."""
    shutil.copy(TESTS / "conftest.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text(INI)
    for name, text in files.items():
        (folder / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    oracles = [line for line in lines if line.startswith("oracles")]
    assert len(oracles) == 1, done.stdout
    return lines[-1], oracles[0]


def test_the_oracles_line_counts_the_skips_of_each_missing_oracle_and_says_how_to_get_it(tmp_path):
    counts, oracles = run_pytest(tmp_path, {"test_skips.py": SKIPS, "test_browser.py": BROWSER})
    assert "1 passed, 7 skipped, 2 deselected" in counts  # the browser file's skip twice: 1 file
    assert oracles == (
        "oracles missing: torch (3 tests skipped: pip install torch==2.13.0 (the CPU build)); "
        "the browser (playwright + chromium) (1 file skipped: "
        "pip install playwright; apt-get install chromium); "
        "graphviz's dot (1 test skipped: apt-get install graphviz); "
        "2 slow tests not run (pytest -m slow runs them, pytest -m '' all)"
    )


def test_with_every_oracle_there_the_line_says_so(tmp_path):
    plain = "def test_plain():\n    assert True\n"
    counts, oracles = run_pytest(tmp_path, {"test_plain.py": plain}, "-q")
    assert counts.startswith("1 passed") and oracles == "oracles: none missing"


def test_the_slow_tests_alone_run_with_m_slow(tmp_path):
    counts, oracles = run_pytest(tmp_path, {"test_skips.py": SKIPS}, "-m", "slow")
    assert "2 passed, 6 deselected" in counts
    assert oracles == "oracles: none missing"  # the tests -m slow leaves out are not counted


def _marked_slow(decorators) -> bool:
    return any("mark.slow" in ast.unparse(decorator) for decorator in decorators)


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda path: path.name)
def test_every_test_that_reruns_test_files_in_a_child_pytest_is_marked_slow(path):
    tree = ast.parse(path.read_text())
    module_slow = any(
        isinstance(node, ast.Assign)
        and any(getattr(target, "id", None) == "pytestmark" for target in node.targets)
        and "mark.slow" in ast.unparse(node.value)
        for node in tree.body
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and "run_test_files" in [a.arg for a in node.args.args]:
            where = f"{path.name}::{node.name}"
            assert module_slow or _marked_slow(node.decorator_list), f"{where} is not marked slow"
