"""The README's opening works for a newcomer: a virtual environment first, the two set-up
commands, what else is needed (Graphviz, PyTorch for the cross-checks), and a real LICENSE.
(The drawing snippet, which writes only the SVG it promises, moved to docs/chain-rule.md:
tests/test_docs.py checks it there.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPENING = README.split("\n## ", 1)[0]  # everything before the first section
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", OPENING, flags=re.DOTALL)


def test_the_opening_says_to_make_a_virtual_environment_before_the_two_set_up_commands():
    # The README starts with exactly the two set-up commands; the venv is said just before them.
    setup = BASH_BLOCKS[0]
    before_setup = OPENING[: OPENING.index("```bash")]
    assert "`python3 -m venv .venv && . .venv/bin/activate`" in before_setup
    assert setup.strip().splitlines() == [
        'pip install -e ".[demo]" && chainrule train moons',
        'pip install -e ".[test]" && pytest',
    ]


def test_the_opening_names_graphviz_and_the_pytorch_cross_checks():
    assert "Graphviz" in OPENING and "apt-get install graphviz" in OPENING
    assert "pip install torch==2.13.0" in OPENING
    assert "skip" in OPENING


def test_the_license_that_pyproject_promises_is_there():
    # (read as text: tomllib is Python 3.11+, and chainrule supports 3.10)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "MIT"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the chainrule authors" in license_text
    assert "WITHOUT WARRANTY OF ANY KIND" in license_text
