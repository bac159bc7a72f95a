"""``chainrule info``: run as a user runs it, in a subprocess, under the settings it reports on."""

import importlib.machinery
import importlib.metadata
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import chainrule

PACKAGE = Path(chainrule.__file__).parent
PARTS = {  # the name info gives a part -> the module, and the file pip builds for it
    "engine_loops": ("chainrule._graph", PACKAGE / "_graph"),
    "table_program": ("chainrule.compiler._tables", PACKAGE / "compiler" / "_tables"),
    "layout": ("chainrule.compiler._layout", PACKAGE / "compiler" / "_layout"),
}
LABELS = {"engine_loops": "engine loops", "table_program": "table program", "layout": "layout"}


def environment(**settings):
    """This process's environment without chainrule's variables, then ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHAINRULE_")}
    env.update(settings)
    return env


def run_info(*args, env=None, before=""):
    """``chainrule info`` in a fresh Python, after the statements ``before``; (stdout, result)."""
    code = f"import sys\n{before}\nfrom chainrule.cli import main\nsys.exit(main(['info', *sys.argv[1:]]))"
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def built(stem: Path) -> bool:
    """Whether pip built the extension: a file ``stem`` + one of this Python's extension suffixes."""
    return any(Path(str(stem) + suffix).is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def row(text: str, label: str) -> str:
    """The value on the line labelled ``label`` in info's text."""
    lines = [line for line in text.splitlines() if line.strip().startswith(label + "  ")]
    assert len(lines) == 1, text
    return lines[0].strip()[len(label) :].strip()


def test_a_normal_run_says_the_parts_that_were_built_are_on():
    env = environment()
    report = json.loads(run_info("--json", env=env))
    text = run_info(env=env)
    for name, (module, stem) in PARTS.items():
        part = report["native"][name]
        assert part["module"] == module
        if built(stem):
            assert part == {"module": module, "active": True, "reason": None}
            assert row(text, LABELS[name]) == f"on ({module})"
        else:
            assert not part["active"] and part["reason"], part
            assert row(text, LABELS[name]).startswith("off: ")


def test_pure_python_turns_every_part_off_and_says_why():
    env = environment(CHAINRULE_PURE_PYTHON="1")
    report = json.loads(run_info("--json", env=env))
    text = run_info(env=env)
    for name, (module, _) in PARTS.items():
        assert report["native"][name] == {
            "module": module,
            "active": False,
            "reason": "CHAINRULE_PURE_PYTHON is set",
        }
        assert row(text, LABELS[name]) == "off: CHAINRULE_PURE_PYTHON is set"
    compiler = row(text, "C compiler")
    assert compiler.endswith("(not used: CHAINRULE_PURE_PYTHON is set)") or compiler.startswith("none found")
    assert report["compile"]["auto_runs_on"].startswith(("the numpy backend", "nothing"))


# A finder ahead of Python's own: the named module fails to import with the error given.
_FAILING_IMPORT = """
import importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise {error}
sys.meta_path.insert(0, Refuse())
"""


@pytest.mark.skipif(not built(PARTS["engine_loops"][1]), reason="the engine's C loops were not built here")
def test_an_engine_that_fails_to_import_is_reported_with_its_message():
    before = _FAILING_IMPORT.format(module="chainrule._graph", error="ImportError('undefined symbol: PyFoo')")
    report = json.loads(run_info("--json", env=environment(), before=before))
    native = report["native"]
    assert native["engine_loops"]["reason"] == "import failed: undefined symbol: PyFoo"
    # The other two need the engine's loops, and say so.
    for name in ("table_program", "layout"):
        assert native[name]["reason"] == "needs the engine's C loops, which are off"


@pytest.mark.skipif(not built(PARTS["layout"][1]), reason="the layout in C was not built here")
def test_a_part_that_was_not_built_says_so():
    error = (
        "ModuleNotFoundError('No module named chainrule.compiler._layout', name='chainrule.compiler._layout')"
    )
    before = _FAILING_IMPORT.format(module="chainrule.compiler._layout", error=error)
    report = json.loads(run_info("--json", env=environment(), before=before))
    native = report["native"]
    assert native["layout"]["active"] is False
    assert native["layout"]["reason"].startswith("not built (pip found no C compiler")
    assert native["engine_loops"]["active"] is True


def test_the_default_backend_and_where_it_comes_from():
    report = json.loads(run_info("--json", env=environment()))
    assert report["compile"]["default_backend"] == "auto" and report["compile"]["default_from"] == "built in"
    text = run_info(env=environment(CHAINRULE_BACKEND="numpy"))
    assert row(text, "default backend") == "numpy (from CHAINRULE_BACKEND)"
    text = run_info(env=environment(CHAINRULE_BACKEND="gpu"))
    assert (
        row(text, "default backend")
        == "gpu (from CHAINRULE_BACKEND): not a backend, chainrule.compile refuses it"
    )


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="the cache's checks are POSIX permissions")
def test_a_cache_folder_others_can_write_is_reported_refused_and_a_missing_one_is_not_made(tmp_path):
    shared = tmp_path / "shared"
    (shared / "c").mkdir(parents=True)
    os.chmod(shared / "c", 0o777)  # chmod: the umask would take the group's and others' bits
    report = json.loads(run_info("--json", env=environment(CHAINRULE_CACHE=str(shared))))
    assert report["compile"]["cache_folder"] == str(shared.resolve() / "c")
    assert report["compile"]["cache_folder_safe"] is False
    assert "is writable by group or others" in report["compile"]["cache_folder_problem"]
    text = run_info(env=environment(CHAINRULE_CACHE=str(shared)))
    assert row(text, "cache folder").startswith(f"{shared.resolve() / 'c'}: refused (the cache folder")

    missing = tmp_path / "missing"
    text = run_info(env=environment(CHAINRULE_CACHE=str(missing)))
    assert row(text, "cache folder").startswith(f"{missing / 'c'}: not made yet")
    assert not missing.exists()  # info only looks

    private = tmp_path / "private"
    (private / "c").mkdir(parents=True)
    os.chmod(private / "c", stat.S_IRWXU)
    text = run_info(env=environment(CHAINRULE_CACHE=str(private)))
    assert row(text, "cache folder") == f"{private.resolve() / 'c'}: passes the safety checks"


def test_the_extras_found_carry_their_installed_versions():
    report = json.loads(run_info("--json", env=environment()))
    extras = report["extras"]
    assert set(extras) == {"numpy", "graphviz", "dot", "matplotlib", "scikit-learn", "torch", "jax"}
    for package in ("numpy", "matplotlib", "scikit-learn", "torch", "jax"):
        try:
            expected = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert extras[package]["version"] == expected
    numpy = pytest.importorskip("numpy")
    assert extras["numpy"]["version"] == numpy.__version__  # what Python imports, too


def test_the_text_starts_with_the_version_python_and_platform_in_one_column():
    import platform

    text = run_info(env=environment())
    lines = text.splitlines()
    assert lines[0].split() == ["chainrule", chainrule.__version__]
    assert row(text, "Python").startswith(f"{platform.python_version()} ({platform.python_implementation()})")
    assert row(text, "platform") == platform.platform()
    # Aligned: on every labelled line (a label, then two spaces or more) the value starts in one column.
    labelled = [re.match(r"\s*\S+(?: \S+)*\s{2,}", line) for line in lines]
    starts = {match.end() for match in labelled if match}
    assert len(starts) == 1 and len([m for m in labelled if m]) >= 15, text
