"""The shape of the house: every module imports, no two modules import each other (directly or
round a longer loop), the environment is read in one module, and the engine stays out of the
compiler's business.

The import graph is read from the source (``ast``), so an import inside a function counts as
much as one at the top: a cycle hidden in a function is still a cycle a reader must untangle.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "chainrule"

# Imports that close a loop and are left for now, each (importer, imported), with its owner's
# reason. This set may only shrink.
KNOWN_LOOPS: set[tuple[str, str]] = set()

# Lines of engine.py that mention tracing (trace, traced, tracer, tracing): chainrule.compile's
# business, which reaches the engine through one hook (engine._hooked). It may only go down.
ENGINE_TRACING_LINES = 3


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by name: its Python files, and its C extensions by their source."""
    found = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    found.update({module_name(path): path for path in PACKAGE.rglob("*.c")})
    return found


def imported_by(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            # from X import a: the module X.a if there is one, else a name defined in X.
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            continue
        imported.update(t for t in targets if t in known and t != name)
    return imported


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: set() if path.suffix == ".c" else imported_by(name, path, known) for name, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One loop of imports (its modules in order, the first repeated at the end), or None."""
    done, on_path = set(), []

    def visit(name):
        if name in on_path:
            return on_path[on_path.index(name) :] + [name]
        if name in done:
            return None
        on_path.append(name)
        for imported in sorted(graph[name]):
            cycle = visit(imported)
            if cycle:
                return cycle
        on_path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("name", sorted(n for n, p in modules().items() if p.suffix == ".py"))
def test_every_module_imports(name):
    importlib.import_module(name)


# The layers of the package, each module in one. A module may import from its own layer and
# from the layers it is allowed: the core (the engine and what it needs) imports nothing else.
LAYERS = {
    "core": {
        "engine",
        "ops",
        "parameters",
        "autograd",
        "c_kernels",
        "_graph",
        "_settings",
        "_checks",
        "_state",
        "_files",
    },
    "nn": {"nn", "losses", "optim", "gpt", "serialize"},
    "compile": {"compiler"},  # and every module under it
    "tools": {"gradcheck", "functional", "draw", "explorer", "chains"},
    "apps": {"cli", "training", "datasets", "plots", "expression", "info", "__main__", ""},
}
ALLOWED = {
    "core": {"core"},
    "nn": {"core", "nn"},
    "compile": {"core", "compile"},
    "tools": {"core", "tools"},
    "apps": set(LAYERS),
}


def layer_of(module: str) -> str:
    name = module.removeprefix("chainrule").removeprefix(".").split(".")[0]
    return next(layer for layer, names in LAYERS.items() if name in names)


def test_every_module_has_a_layer():
    for module in modules():
        assert layer_of(module) in LAYERS, module


def test_each_layer_imports_only_the_layers_below_it():
    graph = import_graph()
    crossing = [
        f"{importer} ({layer_of(importer)}) imports {imported} ({layer_of(imported)})"
        for importer, imports in graph.items()
        for imported in imports
        if layer_of(imported) not in ALLOWED[layer_of(importer)]
    ]
    assert crossing == []


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert graph["chainrule.engine"] and graph["chainrule.serialize"]  # the graph was read
    for importer, imported in KNOWN_LOOPS:
        graph[importer].discard(imported)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_a_loop_and_only_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "chainrule.serialize" in graph["chainrule.cli"]  # imported inside a function
    assert "chainrule.engine" in graph["chainrule.compiler.tracing"]  # from .. import engine
    assert "chainrule._graph" in graph["chainrule.engine"]  # a C extension, by its source


def test_the_known_loops_are_still_there():
    # When one is gone, take it off KNOWN_LOOPS, so that it cannot come back unnoticed.
    graph = import_graph()
    for importer, imported in KNOWN_LOOPS:
        assert imported in graph[importer], (
            f"{importer} no longer imports {imported}: take it off KNOWN_LOOPS"
        )


def test_only_the_settings_module_reads_the_environment():
    readers = [
        path.name
        for path in PACKAGE.rglob("*.py")
        if re.search(r"os\.environ|getenv", path.read_text()) and path.name != "_settings.py"
    ]
    assert readers == []


def test_the_engine_mentions_tracing_no_more_than_it_did():
    lines = (PACKAGE / "engine.py").read_text().splitlines()
    mentioning = [line for line in lines if re.search(r"\btrac(e|ed|er|es|ing)\b", line, re.IGNORECASE)]
    assert len(mentioning) <= ENGINE_TRACING_LINES, mentioning


def test_nothing_inspects_frames_or_code_or_cpython_internals():
    # The trace tells the user's reads from the engine's by the engine never reading through
    # .data (engine._read_data), not by looking at who is calling.
    spying = re.compile(r"_getframe|f_back|f_code|co_names|co_consts|currentframe|pycore_|Py_BUILD_CORE")
    found = [
        f"{path.relative_to(PACKAGE)}: {line.strip()}"
        for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c"), *PACKAGE.rglob("*.h")]
        for line in path.read_text().splitlines()
        if spying.search(line)
    ]
    assert found == []


def test_the_c_helpers_for_value_slots_are_written_once():
    # _graph.c and compiler/_layout.c read Value's slots with the helpers of _slots.h.
    defining = [
        path.relative_to(PACKAGE).as_posix()
        for path in [*PACKAGE.rglob("*.c"), *PACKAGE.rglob("*.h")]
        if re.search(r"#define SLOT\(|\bint slot_offset\(", path.read_text())
    ]
    assert defining == ["_slots.h"]


def test_a_module_of_src_doctested_alone_is_imported_once():
    # pytest on one file of src/chainrule (its doctests) once ran that module a second time,
    # beside the copy the package imported: engine.dot's doctest then met two Value classes.
    import subprocess
    import sys

    root = PACKAGE.parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE / "engine.py")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
