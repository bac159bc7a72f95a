"""The fast test suite on every Python version chainrule supports that is present here (3.10-3.13).

    pip install nox
    nox                   # every version found
    nox -s tests-3.12     # one

Each session installs chainrule with its C extensions (pip builds them) and the test extra into a
fresh virtualenv, checks that the three extensions import, and runs the suite against that
installed package, not the source tree: the tests folder, then the doctests of the installed
modules. A version that is not installed is skipped, as nox does. `.ci/run` runs the versions
other than its own Python's (the README's command has tested that one).
"""

import os
import re
from pathlib import Path

import nox

VERSIONS = ["3.10", "3.11", "3.12", "3.13"]

# A version that is not installed is skipped, under CI=true too (where nox's default fails the run).
nox.options.error_on_missing_interpreters = False
if hasattr(nox.options, "download_python"):  # (nox 2025.10 and later) this machine reaches no Python builds
    nox.options.download_python = "never"


def _put_pyenv_versions_on_path():
    # pyenv's shims answer for its global version only (python3.12 there exits "version not
    # installed" when 3.11 is the global one), so nox would not find the others: their own bin
    # folders go first on PATH, the newest patch release of each.
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    releases = [p.name for p in versions.glob("3.*") if re.fullmatch(r"3\.\d+\.\d+", p.name)]
    folders = []
    for version in VERSIONS:
        patches = [int(r.rsplit(".", 1)[1]) for r in releases if r.rsplit(".", 1)[0] == version]
        if patches:
            folders.append(str(versions / f"{version}.{max(patches)}" / "bin"))
    os.environ["PATH"] = os.pathsep.join([*folders, os.environ.get("PATH", "")])


_put_pyenv_versions_on_path()

# Importing them directly fails where pip did not build them, which chainrule itself would take
# quietly (it falls back to Python).
EXTENSIONS = "import chainrule._graph, chainrule.compiler._layout, chainrule.compiler._tables"


@nox.session(python=VERSIONS)
def tests(session):
    """The fast suite (pytest's default, -m 'not slow') against chainrule installed in the session."""
    session.install(".[test]")
    session.run("python", "-c", EXTENSIONS)
    # The source tree's src/chainrule would be a second copy beside the installed one (pytest
    # refuses such a doctest module), so the doctests are collected from the installed package.
    pytest = ["pytest", "-p", "no:cacheprovider"]
    session.run(*pytest, "tests", *session.posargs)
    session.run(*pytest, "-c", "pyproject.toml", "--rootdir", ".", "--pyargs", "chainrule")
