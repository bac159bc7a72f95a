"""The C backend's build cache (native.build): only libraries this user built, checked, are loaded.

A second user who can write the cache folder, a disk that filled up mid-copy, or flags in $CC
must never run foreign code, crash the interpreter or change a number. Each scenario that
loads a library runs in a fresh interpreter (the ``run_python`` fixture): a SIGBUS or a
planted constructor then fails the test instead of taking pytest down with it.

The oracle for every number is eager chainrule on the same inputs, computed in the child.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chainrule import Value
from chainrule.compiler import native

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(native.c_compiler() is None, reason="no C compiler")

OTHER_USER = 12345  # a uid that is not ours (the tests chown to it to play a second user)

# The child builds and runs one small compiled function on the C backend and reports what came
# back next to eager's answer. {cache} and {backend} are filled in; the environment is the test's.
CHILD = """
import json, math, sys, warnings
import chainrule
from chainrule import Value
from chainrule.compiler import native
from chainrule.compiler.backends.table import CProgram

def fn(x, w):
    return (x[0] * w).tanh() + x[1] * w

w = Value(0.75)
compiled = chainrule.compile(lambda x: fn(x, w), backend="{backend}")
report = {{"calls": []}}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for x in ([0.5, 0.25], [-1.5, 2.0]):
        w.grad = 0.0
        out = compiled(x)
        out.backward()
        got = (out.data, w.grad)
        w.grad = 0.0
        eager = fn([Value(v) for v in x], w)
        eager.backward()
        report["calls"].append([got, (eager.data, w.grad)])
fast = compiled.last_tape.fast  # a library from the cache; not the table program pip built
report["native"] = isinstance(fast, CProgram) and not fast.in_one_call
report["warnings"] = [str(w.message) for w in caught]
print(json.dumps(report))
"""


def fn(x, w):
    return (x[0] * w).tanh() + x[1] * w


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh $CHAINRULE_CACHE for this test (and its children); returns its C folder."""
    monkeypatch.setenv("CHAINRULE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CHAINRULE_PURE_PYTHON", raising=False)
    return tmp_path / "cache" / "c"


def the_library_path():
    """Where build() keeps the library of CHILD's function: its source is what the numpy
    backend's source() shows (the same program the C backend builds)."""
    import chainrule

    w = Value(0.75)
    traced = chainrule.compile(lambda x: fn(x, w), backend="numpy")
    traced([0.5, 0.25])
    return native.library_path(native.c_compiler(), traced.source())


def run_child(run_python, backend="c", env=None):
    """Run CHILD in a fresh interpreter; check every number against eager; return its report."""
    done = run_python(CHILD.format(backend=backend), env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for got, eager in report["calls"]:
        assert got == pytest.approx(eager, rel=1e-12, abs=1e-15)
    return report


def plant(path: Path, marker: Path, tmp_path: Path, wrong_numbers=True, with_forward=True):
    """Build a library at ``path`` as a second user would plant it: a constructor that creates
    ``marker`` when the library is loaded, and forward/backward that compute nothing."""
    body = [
        "#include <stdio.h>",
        "__attribute__((constructor)) static void planted(void) {",
        f'    FILE *f = fopen("{marker}", "w"); if (f) fclose(f);',
        "}",
    ]
    if with_forward:
        answer = "0" if wrong_numbers else "1"  # 1 would send every call to numpy
        body += [
            f"int forward(double *d, const int *idx) {{ (void)d; (void)idx; return {answer}; }}",
            "int backward(double *d, double *g, const int *i, const unsigned char *m)"
            f" {{ (void)d; (void)g; (void)i; (void)m; return {answer}; }}",
        ]
    else:
        body.append("int something_else(void) { return 0; }")
    c_file = tmp_path / "planted.c"
    c_file.write_text("\n".join(body) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    subprocess.run([*native.c_compiler(), "-shared", "-fPIC", "-o", str(path), str(c_file)], check=True)


# ---------------------------------------------------------------------------------------------
# The folder


def test_the_c_backend_builds_the_library_at_its_predictable_path(cache, run_python):
    report = run_child(run_python)
    assert report["native"] and not report["warnings"]
    assert the_library_path().is_file()


def test_the_cache_folder_and_the_parents_it_makes_are_private_whatever_the_umask(tmp_path, run_python):
    base = tmp_path / "made" / "by" / "chainrule"
    code = "import os; os.umask(0)\n" + CHILD.format(backend="c")
    run_python(code, env={"CHAINRULE_CACHE": str(base)})
    for folder in (tmp_path / "made", tmp_path / "made" / "by", base, base / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.parametrize("wrong_numbers", [True, False])
def test_a_planted_library_never_runs_and_the_numbers_are_right(cache, run_python, tmp_path, wrong_numbers):
    library, marker = the_library_path(), tmp_path / "constructor-ran"
    plant(library, marker, tmp_path, wrong_numbers=wrong_numbers)
    planted = library.read_bytes()
    report = run_child(run_python)
    assert not marker.exists(), "the planted library's constructor ran"
    assert report["native"]  # rebuilt by us, and used
    assert library.read_bytes() != planted


@pytest.mark.parametrize("attack", ["world-writable", "group-writable", "other-owner"])
def test_a_cache_folder_others_can_write_or_own_is_refused(cache, run_python, tmp_path, attack):
    library, marker = the_library_path(), tmp_path / "constructor-ran"
    plant(library, marker, tmp_path)
    if attack == "other-owner":
        os.chown(cache, OTHER_USER, OTHER_USER)
    else:
        os.chmod(cache, 0o777 if attack == "world-writable" else 0o770)
    report = run_child(run_python)
    assert not marker.exists(), "a library in an unsafe folder was loaded"
    assert not report["native"]  # refused: numpy ran instead, with one line saying why
    assert len(report["warnings"]) == 1 and str(cache) in report["warnings"][0]


def test_a_library_file_others_can_write_or_own_is_not_loaded(cache, run_python):
    run_child(run_python)  # a genuine build
    library = the_library_path()
    os.chown(library, OTHER_USER, OTHER_USER)
    report = run_child(run_python)
    assert report["native"]
    assert library.stat().st_uid == os.getuid()  # built afresh, not loaded
    os.chmod(library, 0o666)
    run_child(run_python)
    assert stat.S_IMODE(library.stat().st_mode) & 0o022 == 0


def test_a_symlinked_cache_folder_is_refused(cache, run_python, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    library, marker = the_library_path(), tmp_path / "constructor-ran"
    plant(elsewhere / library.name, marker, tmp_path)
    cache.parent.mkdir(mode=0o700)
    cache.symlink_to(elsewhere)
    report = run_child(run_python)
    assert not marker.exists()
    assert not report["native"] and len(report["warnings"]) == 1


def test_a_symlinked_library_is_not_loaded(cache, run_python, tmp_path):
    library, marker = the_library_path(), tmp_path / "constructor-ran"
    planted = tmp_path / "planted.so"
    plant(planted, marker, tmp_path)
    library.parent.mkdir(parents=True, mode=0o700)
    library.symlink_to(planted)
    report = run_child(run_python)
    assert not marker.exists()
    assert report["native"] and not library.is_symlink()  # replaced by a build of our own


# ---------------------------------------------------------------------------------------------
# Damaged or odd entries: rebuilt, or numpy with one warning; never a crash


def test_a_truncated_library_is_rebuilt_without_a_crash(cache, run_python):
    run_child(run_python)
    library = the_library_path()
    whole = library.read_bytes()
    library.write_bytes(whole[: len(whole) // 2])  # a full disk, a killed copy
    report = run_child(run_python)  # a SIGBUS would fail run_python
    assert report["native"] and not report["warnings"]
    assert library.stat().st_size == len(whole)


def test_a_library_changed_after_its_build_is_rebuilt(cache, run_python):
    run_child(run_python)
    library = the_library_path()
    whole = bytearray(library.read_bytes())
    whole[len(whole) // 2] ^= 0xFF  # one byte, same size
    library.write_bytes(bytes(whole))
    report = run_child(run_python)
    assert report["native"]
    assert library.read_bytes() != bytes(whole)


def test_a_folder_at_the_librarys_path_falls_back_with_one_warning(cache, run_python):
    library = the_library_path()
    (library / "inside").mkdir(parents=True)
    report = run_child(run_python)
    assert not report["native"]
    assert len(report["warnings"]) == 1 and library.name in report["warnings"][0]


def test_a_library_without_forward_is_not_used(cache, run_python, tmp_path):
    library, marker = the_library_path(), tmp_path / "constructor-ran"
    plant(library, marker, tmp_path, with_forward=False)
    report = run_child(run_python)
    assert report["native"] and not report["warnings"] and not marker.exists()


def test_a_recorded_library_that_lacks_forward_is_rebuilt(cache, tmp_path):
    # Even a library this user built and recorded is checked for its symbols before use.
    source = "int answer(void) { return 42; }\n"
    assert native.build(source, symbols=("answer",)).answer() == 42
    with pytest.raises(native.Unavailable, match="forward"):
        native.build(source)  # the same library asked for forward: refused, no AttributeError


def test_build_refuses_nothing_it_built_itself(cache):
    source = "int answer(void) { return 42; }\n"
    assert native.build(source, symbols=("answer",)).answer() == 42
    native._loaded.clear()  # as a new process would start
    assert native.build(source, symbols=("answer",)).answer() == 42


# ---------------------------------------------------------------------------------------------
# Flags in $CC, and CHAINRULE_PURE_PYTHON

DOMAIN_CHILD = """
import math, warnings
import chainrule
from chainrule import Value
from chainrule.compiler import native
from chainrule.compiler.backends.table import CProgram
{setup}
w = Value(1.0)
f = chainrule.compile(lambda x: (x[0] * w).log(), backend="c")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert abs(f([2.0]).data - math.log(2.0)) < 1e-15
fast = f.last_tape.fast  # a library from the cache; not the table program pip built
built_here = isinstance(fast, CProgram) and not fast.in_one_call
print("NATIVE", built_here, [str(c.message) for c in caught])
# -ffast-math also links a constructor that makes the CPU flush subnormals to zero, for the
# whole process: Python's own float arithmetic would then change.
print("subnormals kept", 2.2250738585072014e-308 / 4 != 0.0)
for x in (-1.0, 0.0, math.nan):
    try:
        out = f([x])
    except ValueError as error:
        assert "log is defined only for positive numbers" in str(error) or math.isnan(x), error
        print("raised", x)
    else:
        print("returned", x, out.data)
"""


@pytest.mark.parametrize("flags", ["-ffast-math", "-Ofast", "-ffinite-math-only -fno-signed-zeros"])
def test_fast_math_in_cc_cannot_turn_off_the_domain_checks(cache, run_python, flags):
    compiler = native.c_compiler()
    env = {"CC": " ".join([*compiler, flags])}
    out = run_python(DOMAIN_CHILD.format(setup=""), env=env).stdout
    assert "NATIVE True []" in out  # the C backend ran, with no warning
    assert "subnormals kept True" in out
    assert "raised -1.0" in out and "raised 0.0" in out
    assert "returned nan nan" in out  # eager: log(nan) is nan, no error


def test_a_build_whose_nan_checks_do_not_work_is_not_used(cache, run_python):
    # As if the compiler ignored the flags native.py puts after $CC: the self-test catches it.
    compiler = native.c_compiler()
    setup = "native.FLAGS = ['-O2', '-fPIC', '-shared']"
    env = {"CC": " ".join([*compiler, "-ffast-math"])}
    out = run_python(DOMAIN_CHILD.format(setup=setup), env=env).stdout
    assert "NATIVE False" in out and "nan" in out.splitlines()[0]
    assert "raised -1.0" in out and "raised 0.0" in out


PURE_CHILD = """
import os, sys, warnings
import chainrule
from chainrule import Value
w = Value(0.5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for backend in ("c", "auto", "numpy"):
        f = chainrule.compile(lambda x: (x[0] * w).tanh() * x[1], backend=backend)
        out = f([0.3, 2.0])
        assert abs(out.data - (Value(0.3) * w).tanh().data * 2.0) < 1e-15
messages = [str(c.message) for c in caught]
assert len(messages) == 1 and "CHAINRULE_PURE_PYTHON" in messages[0], messages
loaded = sorted(name for name in sys.modules if name.split(".")[-1] in ("_graph", "_tables", "_layout"))
assert not loaded, loaded
maps = open("/proc/self/maps").read()
assert "chainrule" not in maps and "tape-" not in maps, [l for l in maps.splitlines() if "chainrule" in l]
print("ok")
"""


def test_pure_python_builds_and_loads_no_c(cache, run_python):
    out = run_python(PURE_CHILD, env={"CHAINRULE_PURE_PYTHON": "1"}).stdout
    assert out.strip() == "ok"
    assert not cache.parent.exists() or not any(cache.parent.rglob("*"))  # nothing built, nothing made


def test_pure_python_build_raises_unavailable(monkeypatch, cache):
    monkeypatch.setenv("CHAINRULE_PURE_PYTHON", "1")
    with pytest.raises(native.Unavailable, match="CHAINRULE_PURE_PYTHON"):
        native.build("int answer(void) { return 42; }\n", symbols=("answer",))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
