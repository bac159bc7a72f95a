"""The README's Python snippets run, and print what their comments say; the README stays short.

Each ```python block runs in a fresh interpreter (in a temporary folder, since some write
files). A line ``print(...)  # text`` promises that the print writes exactly ``text``. The
user documentation lives in docs/ (tests/test_docs.py runs its snippets); the README is a
taste of it, at most 150 lines, whose links and pictures must lead somewhere.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def promised_output(block: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\s*print\(.*\)  # (.*)$", block, flags=re.MULTILINE)]


def test_the_readme_has_snippets_with_promises():
    assert len(BLOCKS) >= 4
    assert sum(len(promised_output(b)) for b in BLOCKS) >= 6


def test_the_readme_is_at_most_150_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


def test_the_readmes_links_and_pictures_lead_somewhere():
    text = README.read_text(encoding="utf-8")
    local = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t]
    assert any(t.startswith("docs/") and t.endswith(".md") for t in local)
    for target in local:
        assert (ROOT / target).exists(), f"the README links to {target}, which is not there"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"snippet{i}" for i in range(len(BLOCKS))])
def test_snippet_runs_and_prints_what_it_says(block, tmp_path):
    if "draw_dot" in block:
        pytest.importorskip("graphviz")
        if subprocess.run(["which", "dot"], capture_output=True).returncode != 0:
            pytest.skip("Graphviz's dot is not installed")
    if "datasets" in block:
        pytest.importorskip("sklearn")
    if "compile" in block:
        pytest.importorskip("numpy")
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for promise in promised_output(block):
        assert promise in lines, f"the README promises {promise!r}; the snippet printed {lines}"
