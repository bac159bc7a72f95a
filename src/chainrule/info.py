"""What ``chainrule info`` reports: the version, the Python, and which fast parts run here.

chainrule runs everywhere on Python alone; its C parts (built by pip when it finds a C
compiler, and then optional) make it several times faster. A build that failed is silent,
so this module says which parts loaded and, for each that did not, why not:

- the engine's loops in C (``chainrule._graph``, see the end of engine.py);
- the table program (``chainrule.compiler._tables``), which ``compile``'s default backend,
  ``auto``, runs every tape on;
- the layout in C (``chainrule.compiler._layout``), which lays a traced tape out;

then ``chainrule.compile``'s default backend and what ``auto`` runs on here, the C backend's
compiler and cache folder (checked by native.py's own rules, nothing made), and the optional
libraries found, with their versions. Nothing here imports them: the versions come from the
installed packages' metadata.

>>> import chainrule
>>> report = gather_info()
>>> report["chainrule"] == chainrule.__version__
True
>>> sorted(report["native"])
['engine_loops', 'layout', 'table_program']
>>> print(format_info(report))  # doctest: +ELLIPSIS
chainrule ...
Python ...
native parts (C)
  engine loops ...
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys

from . import __version__, _settings

__all__ = ["gather_info", "format_info"]

PURE_PYTHON = "CHAINRULE_PURE_PYTHON is set"
NOT_BUILT = "not built (pip found no C compiler, or the build failed: pip install -v shows why)"

# The optional libraries: (the package's name, what chainrule uses it for, how to get it).
EXTRAS = [
    ("numpy", "chainrule.compile, chainrule train", 'pip install "chainrule[fast]"'),
    ("graphviz", "draw_dot, chainrule grad --draw", 'pip install "chainrule[viz]"'),
    ("matplotlib", "chainrule train's pictures", 'pip install "chainrule[demo]"'),
    ("scikit-learn", "chainrule train's data sets", 'pip install "chainrule[demo]"'),
    ("torch", "the tests' PyTorch cross-checks", "pip install torch"),
    ("jax", "chainrule train --backend jax", "pip install jax"),
]


# ---------------------------------------------------------------------------------------------
# The native parts


def _import_problem(module: str) -> str | None:
    """Why ``module`` (a C extension) does not import, or None if it does."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module:
            return NOT_BUILT
        return f"import failed: {error}"
    except ImportError as error:  # built, but for another Python, or missing a symbol
        return f"import failed: {error}"
    return None


def _part(module: str, active: bool, *causes: str | None) -> dict:
    """One native part: on or off, and when off the first of ``causes`` (strings or None) that
    applies; each cause is checked in order, from the most general."""
    reason = None
    if not active:
        reason = next((cause for cause in causes if cause), "its setup refused this copy of chainrule")
    return {"module": module, "active": active, "reason": reason}


def _native_parts() -> dict:
    from . import c_kernels, engine
    from .compiler import native, rewriting

    pure = PURE_PYTHON if _settings.pure_python() else None
    loops_off = "needs the engine's C loops, which are off"
    engine_on = engine._graph is not None
    stale = None
    if c_kernels.HEADER.exists() and c_kernels.HEADER.read_text() != c_kernels.header_source():
        stale = "ops_kernels.h is older than ops.py: python -m chainrule.c_kernels writes it afresh"
    return {
        "engine_loops": _part("chainrule._graph", engine_on, pure, _import_problem("chainrule._graph")),
        "table_program": _part(
            "chainrule.compiler._tables",
            native.prebuilt_tables() is not None,
            pure,
            None if engine_on else loops_off,
            _import_problem("chainrule.compiler._tables"),
            stale,
        ),
        "layout": _part(
            "chainrule.compiler._layout",
            rewriting._in_c is not None,
            pure,
            None if engine_on else loops_off,
            _import_problem("chainrule.compiler._layout"),
        ),
    }


# ---------------------------------------------------------------------------------------------
# chainrule.compile: its default backend, and the C backend's compiler and cache


def _compile_report(native_parts: dict) -> dict:
    from .compiler import BACKENDS, native

    chosen = _settings.backend()
    default = chosen or "auto"
    compiler = native.c_compiler()
    usable = compiler is not None and not native.pure_python()
    try:
        folder, problem = native.check_cache_folder(make=False), None
    except native.Unavailable as error:
        folder, problem = native.cache_dir(), str(error)
    exists = folder.is_dir()

    # What backend="auto" runs a tape on (compiler/backends/__init__.py's select).
    if _version("numpy") is None:
        auto = 'nothing: chainrule.compile needs numpy (pip install "chainrule[fast]")'
    elif native_parts["table_program"]["active"]:
        auto = "the C table program built with chainrule (no compiler needed)"
    elif compiler is not None and usable and problem is None:
        auto = f"the C table program, built once by {compiler[0]} into the cache folder"
    else:
        auto = "the numpy backend (a thin tape, a node per group: node by node in Python)"
    return {
        "default_backend": default,
        "default_from": "CHAINRULE_BACKEND" if chosen else "built in",
        "default_valid": default in BACKENDS,
        "auto_runs_on": auto,
        "c_compiler": " ".join(compiler) if compiler else None,
        "c_compiler_used": usable,
        "cache_folder": str(folder),
        "cache_folder_exists": exists,
        "cache_folder_safe": problem is None,
        "cache_folder_problem": problem,
    }


# ---------------------------------------------------------------------------------------------
# Optional libraries


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _dot_version() -> str | None:
    """The version of Graphviz's ``dot`` program (``dot -V`` prints it on stderr), None if not found."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        run = subprocess.run([dot, "-V"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "found, but does not run"
    found = re.search(r"version (\S+)", run.stderr + run.stdout)
    return found.group(1) if found else "found (version unknown)"


def _extras() -> dict:
    report = {}
    for package, used_for, install in EXTRAS:
        report[package] = {"version": _version(package), "for": used_for, "install": install}
        if package == "graphviz":  # the Python package draws through Graphviz's own program
            report["dot"] = {
                "version": _dot_version(),
                "for": "Graphviz's program, which draws the graphs",
                "install": "apt-get install graphviz, or brew install graphviz",
            }
    return report


# ---------------------------------------------------------------------------------------------
# Public functions


def gather_info() -> dict:
    """Everything ``chainrule info`` reports, as a dict of strings, booleans and None (JSON's types)."""
    native_parts = _native_parts()
    return {
        "chainrule": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "native": native_parts,
        "compile": _compile_report(native_parts),
        "extras": _extras(),
    }


_PART_NAMES = {"engine_loops": "engine loops", "table_program": "table program", "layout": "layout"}


def _cache_line(compile_report: dict) -> str:
    folder = compile_report["cache_folder"]
    if not compile_report["cache_folder_safe"]:
        return f"{folder}: refused ({compile_report['cache_folder_problem']})"
    if not compile_report["cache_folder_exists"]:
        return f"{folder}: not made yet (made with mode 0700 when first needed); the folders above pass"
    return f"{folder}: passes the safety checks"


def _extra_rows(extras: dict) -> list[tuple[str, str]]:
    """Each library's version (or "not found" and how to get it), then what it is for."""
    shown = {package: extra["version"] or "not found" for package, extra in extras.items()}
    width = max(map(len, shown.values()))
    rows = []
    for package, extra in extras.items():
        how = "" if extra["version"] else f": {extra['install']}"
        rows.append((package, f"{shown[package]:<{width}}  {extra['for']}{how}"))
    return rows


def _compiler_line(compile_report: dict) -> str:
    compiler = compile_report["c_compiler"]
    if compiler is None:
        return "none found (set CC, or install gcc or clang)"
    return compiler if compile_report["c_compiler_used"] else f"{compiler} (not used: {PURE_PYTHON})"


def format_info(report: dict) -> str:
    """``report`` (from ``gather_info``) as plain text: a label column, then the value."""
    python = report["python"]
    compile_report = report["compile"]
    default = compile_report["default_backend"]
    if compile_report["default_from"] != "built in":
        default += f" (from {compile_report['default_from']})"
    if not compile_report["default_valid"]:
        default += ": not a backend, chainrule.compile refuses it"
    sections = [
        (
            None,
            [
                ("chainrule", report["chainrule"]),
                ("Python", f"{python['version']} ({python['implementation']}), {python['executable']}"),
                ("platform", report["platform"]),
            ],
        ),
        (
            "native parts (C)",
            [
                (_PART_NAMES[name], f"on ({part['module']})" if part["active"] else f"off: {part['reason']}")
                for name, part in report["native"].items()
            ],
        ),
        (
            "chainrule.compile",
            [
                ("default backend", default),
                ("auto runs on", compile_report["auto_runs_on"]),
                ("C compiler", _compiler_line(compile_report)),
                ("cache folder", _cache_line(compile_report)),
            ],
        ),
        ("optional extras", _extra_rows(report["extras"])),
    ]
    # A section's rows are indented under its title; every value starts in the same column.
    width = max(len(label) + 2 for _, rows in sections for label, _ in rows) + 2
    lines = []
    for title, rows in sections:
        if title:
            lines += ["", title]
        indent = "  " if title else ""
        lines += [f"{indent + label:<{width}}{value}" for label, value in rows]
    return "\n".join(lines)
