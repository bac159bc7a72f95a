"""What a user installs: the sdist and the wheel that `python -m build` makes, and the fallbacks
that keep chainrule working where a C extension or the run-time C compiler is missing.

The oracles are the archives' own listings (tarfile, zipfile), the file names the running
Python gives its extensions (sysconfig), and the numbers eager chainrule computes.
"""

import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

import chainrule
from chainrule import Value
from chainrule.compiler import native

ROOT = Path(__file__).resolve().parents[1]
# Only a checkout has src/ (.ci/run also runs the suite against the installed wheel, from a
# copy of the checkout without src/).
in_a_checkout = pytest.mark.skipif(not (ROOT / "src" / "chainrule").is_dir(), reason="needs the source tree")

C_SOURCES = [
    "src/chainrule/_graph.c",
    "src/chainrule/_slots.h",
    "src/chainrule/ops_kernels.h",
    "src/chainrule/ops_math.h",
    "src/chainrule/compiler/_layout.c",
    "src/chainrule/compiler/_tables.c",
    "src/chainrule/compiler/table.c",
    "src/chainrule/compiler/kernels.c",
    "src/chainrule/compiler/self_test.c",
]
EXTENSIONS = ["chainrule/_graph", "chainrule/compiler/_tables", "chainrule/compiler/_layout"]
# What chainrule reads from its own folder at run time: the explorer page's assets, and the C
# the C backend compiles where the wheel has no _tables; py.typed marks the package as typed.
PACKAGE_DATA = [
    "chainrule/py.typed",
    "chainrule/explorer_page/explorer.js",
    "chainrule/explorer_page/explorer.css",
    "chainrule/ops_kernels.h",
    "chainrule/ops_math.h",
    "chainrule/compiler/kernels.c",
    "chainrule/compiler/table.c",
    "chainrule/compiler/self_test.c",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sdist and the wheel `python -m build` makes from this checkout (the wheel built from
    the sdist, so the sdist must hold all it needs), and the build's output."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build package is not installed (pip install build)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("chainrule-*.tar.gz")
    (wheel,) = out.glob("chainrule-*.whl")
    return sdist, wheel, done.stdout + done.stderr


@pytest.mark.slow
@in_a_checkout
def test_the_sdist_holds_every_c_source_and_header_and_the_tests(built):
    sdist, _, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [path for path in [*C_SOURCES, "setup.py", "tests/conftest.py"] if path not in names]
    assert not missing, f"the sdist lacks {missing}"
    assert not [name for name in names if name.endswith((".so", ".pyd", ".pyc"))], "built files in the sdist"


@pytest.mark.slow
@in_a_checkout
def test_the_wheel_holds_the_compiled_extensions_and_the_package_data(built):
    _, wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    missing = [path for path in [f"{e}{suffix}" for e in EXTENSIONS] + PACKAGE_DATA if path not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [name for name in names if name.startswith(("tests/", "src/"))]


@pytest.mark.slow
@in_a_checkout
def test_the_extensions_build_with_the_flags_that_keep_products_unfused(built):
    _, _, log = built
    compiles = [line for line in log.splitlines() if " -c src/chainrule/" in line]
    assert len(compiles) == len(EXTENSIONS)
    if sysconfig.get_config_var("CC"):  # GCC or Clang: the flags come last, so they win
        assert all(line.rstrip().endswith("-O2 -ffp-contract=off") for line in compiles), compiles


@in_a_checkout
@pytest.mark.skipif(os.name != "posix", reason="MSVC does not read $CC")
def test_an_extension_that_does_not_build_is_reported_and_the_build_goes_on(tmp_path):
    """A compiler that is not there: each extension is named once with what runs instead, and
    setup.py exits 0 (pip then installs chainrule without them)."""
    # setup.py runs here on this environment's setuptools, not on the one pip would fetch for
    # the build (pyproject.toml's build-system requires): a fresh venv's may be too old to read
    # pyproject.toml (the SPDX license, say).
    needed = re.search(r'"setuptools>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    pytest.importorskip("setuptools", minversion=needed)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    package = tmp_path / "src" / "chainrule"
    for source in [*C_SOURCES, "src/chainrule/__init__.py"]:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source).write_bytes((ROOT / source).read_bytes())
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "temp"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CC": str(tmp_path / "no-such-cc"), "LDSHARED": "no-such-cc"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [line for line in done.stderr.splitlines() if line.startswith("WARNING: chainrule:")]
    assert [line.split()[5] for line in warned] == [e.replace("/", ".") for e in EXTENSIONS], warned
    assert "pure Python" in warned[0] and "numpy backend" in warned[1] and "in Python" in warned[2]
    assert not list((tmp_path / "lib").rglob("*.so")) and not list(package.rglob("*.so"))


def test_where_no_compiler_can_run_backend_c_says_why_and_runs_numpy(monkeypatch):
    """Windows, say: build() reports it before the cache's POSIX checks (os.getuid is missing
    there), and the numbers are eager's."""
    pytest.importorskip("numpy")
    monkeypatch.setattr(native, "RUNS_A_COMPILER", False)
    monkeypatch.delattr(native.os, "getuid", raising=False)  # as on Windows
    monkeypatch.setenv("CC", "gcc")  # found or not, never run
    assert native.c_compiler() is None
    w = Value(3.0)
    f = chainrule.compile(lambda x: (w * x[0]).tanh() + x[1], backend="c")
    with pytest.warns(RuntimeWarning, match="compiles at run time only on Linux and macOS.*numpy backend"):
        out = f([0.5, 2.0])
    eager = (w * 0.5).tanh() + 2.0
    assert out.data == pytest.approx(eager.data, rel=1e-15)
    with pytest.raises(native.Unavailable, match="only on Linux and macOS"):
        native.build("int forward(void) { return 0; }")
    auto = chainrule.compile(lambda x: (w * x[0]).tanh() + x[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default backend falls back without a word
        assert auto([0.5, 2.0]).data == pytest.approx(eager.data, rel=1e-15)


def test_the_reason_names_a_missing_compiler(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    expected = "no C compiler found" if native.RUNS_A_COMPILER else "only on Linux and macOS"
    assert expected in native.compiler_problem()


def test_chainrule_info_reports_the_cache_where_no_compiler_can_run(monkeypatch):
    """Windows, say: the cache's checks read POSIX owners, so info says why instead of crashing."""
    from chainrule import info

    monkeypatch.setattr(native, "RUNS_A_COMPILER", False)
    monkeypatch.delattr(native.os, "getuid", raising=False)  # as on Windows
    text = info.format_info(info.gather_info())
    assert "only on Linux and macOS" in text
