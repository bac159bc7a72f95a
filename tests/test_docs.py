"""The documentation site's pages (docs/*.md) show code that runs and prints what they say.

- Every ```python block runs in a fresh interpreter, in a temporary folder (some write files).
  A line ``print(...)  # text`` promises that the print writes exactly ``text`` as one line;
  a block followed directly by a ```text block promises that exactly that text is printed.
- Every ```console block is a session: each ``$ chainrule ...`` line is run, and what follows it
  up to the next ``$`` line is its whole output.
- The pages are the ones mkdocs.yml lists, and every link between them names a page that exists.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"```(\w+)\n(.*?)```", flags=re.DOTALL)


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, end offset) of every fenced block, in order."""
    return [(m.group(1), m.group(2), m.end()) for m in FENCE.finditer(text)]


def python_blocks() -> list[tuple[str, str, str | None]]:
    """(page, code, the text block right after it or None) for every ```python block."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = fenced_blocks(text)
        for i, (language, code, end) in enumerate(blocks):
            if language != "python":
                continue
            output = None
            if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
                between = text[end : text.index("```text", end)]
                if not between.strip():
                    output = blocks[i + 1][1]
            found.append((page.relative_to(DOCS).as_posix(), code, output))
    return found


def console_blocks() -> list[tuple[str, str]]:
    return [
        (page.relative_to(DOCS).as_posix(), code)
        for page in PAGES
        for language, code, _ in fenced_blocks(page.read_text(encoding="utf-8"))
        if language == "console"
    ]


def promised_output(block: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\s*print\(.*\)  # (.*)$", block, flags=re.MULTILINE)]


PYTHON = python_blocks()
CONSOLE = console_blocks()


def skip_without_what_it_needs(block: str) -> None:
    if "draw_dot" in block:
        pytest.importorskip("graphviz")
        if shutil.which("dot") is None:
            pytest.skip("Graphviz's dot is not installed")
    if "datasets" in block:
        pytest.importorskip("sklearn")
    if "compile" in block or ".numpy()" in block:
        pytest.importorskip("numpy")
    if 'backend="jax"' in block:
        pytest.importorskip("jax")  # an optional extra: pip install "chainrule[jax]"


def run_block(block: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_pages_have_snippets_with_promises():
    assert len(PYTHON) >= 15
    assert sum(len(promised_output(code)) for _, code, _ in PYTHON) >= 25
    assert any(output for _, _, output in PYTHON)
    assert CONSOLE


@pytest.mark.parametrize(
    "page, block, output", PYTHON, ids=[f"{page}:{i}" for i, (page, _, _) in enumerate(PYTHON)]
)
def test_snippet_runs_and_prints_what_the_page_says(page, block, output, tmp_path):
    skip_without_what_it_needs(block)
    result = run_block(block, tmp_path)
    assert result.returncode == 0, f"{page}: {result.stderr}"
    lines = result.stdout.splitlines()
    for promise in promised_output(block):
        assert promise in lines, f"{page} promises {promise!r}; the snippet printed {lines}"
    if output is not None:
        assert result.stdout == output, f"{page} shows {output!r}; the snippet printed {result.stdout!r}"


def console_session(block: str) -> list[tuple[str, list[str]]]:
    """The commands of a console block, each with the lines the page shows it printing."""
    session = []
    for line in block.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], []))
        else:
            assert session, f"output before any command: {line!r}"
            session[-1][1].append(line)
    return session


@pytest.mark.parametrize("page, block", CONSOLE, ids=[f"{page}:{i}" for i, (page, _) in enumerate(CONSOLE)])
def test_console_session_prints_what_the_page_shows(page, block, tmp_path):
    for command, shown in console_session(block):
        words = shlex.split(command)
        assert words[0] == "chainrule", f"{page}: a console block runs chainrule only, not {command!r}"
        done = subprocess.run(
            [sys.executable, "-m", "chainrule", *words[1:]],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, f"{page}: {command}: {done.stderr}"
        assert done.stdout.splitlines() == shown, f"{page}: {command} printed {done.stdout!r}"


def test_the_drawing_snippet_writes_only_the_svg(tmp_path):
    pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    (block,) = [code for page, code, _ in PYTHON if page == "chain-rule.md" and "draw_dot" in code]
    done = run_block(block, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.svg"]
    assert (tmp_path / "f.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def nav_pages() -> set[str]:
    # (read as text: PyYAML comes with mkdocs, which the test extra does not install)
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:") : config.index("\nmarkdown_extensions:")]
    return set(re.findall(r"([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE))


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page():
    pages = {page.relative_to(DOCS).as_posix() for page in PAGES}
    assert nav_pages() == pages


def test_links_between_pages_name_pages_that_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}, which is not a page"


def test_the_pictures_the_pages_show_are_there():
    for page in PAGES:
        for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / picture).is_file(), f"{page.name} shows {picture}, which is missing"


def test_the_install_commands_are_the_readmes():
    # The getting-started page repeats the README's two set-up commands; they must not drift apart.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme_setup = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)[0].strip().splitlines()
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    first = re.findall(r"```bash\n(.*?)```", page, flags=re.DOTALL)[0].strip().splitlines()
    assert first[1:] == readme_setup
    assert first[0] == "python3 -m venv .venv && . .venv/bin/activate"
