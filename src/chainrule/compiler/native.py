"""The C backend of chainrule.compile: the tape as C, built with the system's C compiler.

``compile(fn, backend="c")`` replays the same tape as the numpy backend (backends/numpy.py),
but instead of one numpy call per group it runs one C loop per group:

- every op has a forward kernel and a backward kernel (``f_mul``, ``b_mul``, ...) in
  ``compiler/kernels.c``, made from the op's C functions in ``ops_kernels.h`` (written from
  its record in ops.py by ``chainrule/c_kernels.py``). Node ``j`` of a group finds the
  positions of its inputs in ``c = idx + j * n`` (``n`` inputs per node), reads their numbers
  from ``d`` (the tape's data array) and writes its own at ``d[start + j]``; backward adds
  ``local derivative * g`` into ``gr`` at the inputs' positions;
- two kinds of group need no positions listed: a layer applied to a batch (``f_layer``, one
  matrix product, reading its weights, inputs and biases in place where they follow a
  pattern) and an op of one input on a run of consecutive inputs (``fr_relu``, ...);
- the tape becomes two functions, ``forward`` and ``backward``, that call the kernels group
  by group: one line per group, so a small network reads as a short C program
  (``CompiledFunction.source()`` shows it). Past ``STRAIGHT_LINE_GROUPS`` groups (a long chain
  has one group per node) they walk a table of groups instead, so the source stays small;
- the source is compiled once into a shared library named by its hash, in a cache folder, and
  called through ``ctypes`` on the same float64 arrays the numpy backend uses.

The table-walking program (``compiler/table.c``) is the same for every tape, so pip builds it
with chainrule (``_tables.c`` includes it): the default backend, ``"auto"``, runs
every tape on it, called straight from Python, and never needs a C compiler at run time.

The kernels do the arithmetic only. When a call meets anything unusual (a nan or inf in the
results, an out-of-range ``take`` index), the C result is dropped and the call is redone by
the numpy backend, which raises eager's error or passes the nan/inf on exactly as eager
does. So the two backends agree on every number and every error; C is just the fast road.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import _settings, c_kernels, ops

STRAIGHT_LINE_GROUPS = 500  # past this many groups, the program walks a table (builds stay under 1 s)


class Unavailable(RuntimeError):
    """The C backend cannot run here (no C compiler, or an op it has no kernel for)."""


# ---------------------------------------------------------------------------------------------
# The kernels: compiler/kernels.c, a real C file, whose ops' arithmetic comes from ops_kernels.h
# (written from the records in ops.py by chainrule/c_kernels.py). A program is built from one
# text, so the files a C file #includes by a quoted name are put in their place (_c_text).

_HERE = Path(__file__).parent
_QUOTED_INCLUDE = re.compile(r'^#include "([\w./]+)"$', re.MULTILINE)


def _c_text(path: Path) -> str:
    """The text of the C file ``path``, each ``#include "name"`` replaced by that file's text
    (found next to the file that names it, as the C compiler finds it)."""
    return _QUOTED_INCLUDE.sub(lambda m: _c_text(path.parent / m.group(1)).rstrip("\n"), path.read_text())


KERNELS = _c_text(_HERE / "kernels.c")  # every op's group kernels, the layer's matmul, all_finite

# chainrule's op name -> (forward kernel, backward kernel), from the records: ** shares pow's
# forward. The ops of ops.py only: an op of a user's own has no C kernel (it runs on numpy).
_KERNEL_NAMES = {op.name: (op.c.forward_kernel, op.c.kernel) for op in ops.BUILT_IN}
_BUILT_IN = {op.name: op for op in ops.BUILT_IN}

_FORWARD_KERNELS = c_kernels.forward_kernels()  # a kernel's number in the table
_BACKWARD_KERNELS = c_kernels.backward_kernels()
_UNARY_KERNELS = c_kernels.unary_kernels()  # with fr_ and br_ too (see UNARY in kernels.c)
LAYER = max(len(_FORWARD_KERNELS), len(_BACKWARD_KERNELS))  # a layer's kernel number, both ways
TABLE_PROGRAM = _HERE / "table.c"
# numbers per row of the table: kernel, start, count, inputs, offset, backward kernel, and a
# layer's number of neurons, or -1 for a run of one-input nodes (see UNARY), else 0
ROW = int(re.search(r"^#define ROW (\d+)$", TABLE_PROGRAM.read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]


def _kernels_for(rule: ops.Op) -> tuple[str, str]:
    names = _KERNEL_NAMES.get(rule.name)
    if names is None or ops.OPS.get(rule.name) is not rule or _BUILT_IN[rule.name] is not rule:
        raise Unavailable(f"the C backend has no kernel for the op {rule.name!r}")
    return names


# ---------------------------------------------------------------------------------------------
# The program: the kernels, then forward() and backward() for this tape.


def program_source(groups: list[tuple[Any, ...]], size: int, first: int) -> str:
    """C source for a tape whose groups are ``(rule, start, count, n_inputs, idx_offset, kind)``.

    ``idx_offset`` is where the group's input positions start in ``idx``, node after node.

    ``kind`` is None; or ``("layer", U, V, m)`` for a layer applied to a batch (a matrix
    product), its positions then at ``idx_offset`` as f_layer reads them; or ``("run", from)``
    for nodes of one input whose inputs lie one after the other from position ``from``.

    ``first`` is the position of the first computed node (the leaves come before it).
    """
    lines = [KERNELS]
    if len(groups) <= STRAIGHT_LINE_GROUPS:
        lines.append("/* forward: one line per group of nodes with the same op and depth */")
        lines.append("int forward(double *d, const idx_t *idx) {")
        lines.append("    int bad = 0;")
        for rule, start, count, n, offset, kind in groups:
            f, _ = _kernels_for(rule)
            if kind is None:
                call = f"f_{f}(d, idx + {offset}, {start}, {count}, {n});  /* {count} x {rule.name} */"
            elif kind[0] == "run":
                call = f"fr_{f}(d, {kind[1]}, {start}, {count});  /* {count} x {rule.name}, in a run */"
            else:
                _, U, V, m = kind
                call = f"f_layer(d, idx + {offset}, {start}, {U}, {V}, {m});  /* {U} neurons x {V} inputs */"
            lines.append(f"    bad |= {call}")
        lines.append(f"    return bad || !all_finite(d, {first}, {size});")
        lines.append("}")
        lines.append("")
        lines.append("/* backward: the same groups in reverse, each adding into its inputs' gradients */")
        lines.append(
            "int backward(const double *d, double *gr, const idx_t *idx, const unsigned char *needed) {"
        )
        for rule, start, count, n, offset, kind in reversed(groups):
            _, b = _kernels_for(rule)
            call = f"b_{b}(d, gr, idx + {offset}, {start}, {count}, {n}, needed);"
            if kind is not None and kind[0] == "run":
                call = f"br_{b}(d, gr, {kind[1]}, {start}, {count}, needed);"
            elif kind is not None:  # with a mask (part of the nodes needed), node by node
                blocks = f"idx + {offset}, {start}, {', '.join(map(str, kind[1:]))}"
                call = f"if (needed) b_layer_part(d, gr, {blocks}, needed); else b_layer(d, gr, {blocks});"
            lines.append(f"    {call}")
        lines.append(f"    return !all_finite(gr, 0, {size});")
        lines.append("}")
        return "\n".join(lines) + "\n"
    # A long program: the groups come as a table, one row per group (see backends/table.py).
    for rule, *_ in groups:
        _kernels_for(rule)
    return table_program()


@functools.cache  # (read once: every tape shares the one text)
def table_program() -> str:
    """The program of every long tape: the kernels, and forward() and backward() walking a table
    of groups. The tape's sizes are arguments, so this source is the same for every tape: it is
    built once (by pip, as chainrule/compiler/_tables.c, when chainrule is installed; else
    the first time a long tape needs it, into the cache). It is compiler/table.c."""
    return _c_text(TABLE_PROGRAM)


TABLES_MODULE = Path(__file__).with_name("_tables.c")  # table.c as a Python module, built by pip


@functools.lru_cache(maxsize=1)
def prebuilt_tables():
    """The module pip built from _tables.c (its forward() and backward() take numpy arrays);
    None if it was not built (or CHAINRULE_PURE_PYTHON is set, or its kernels are not the ones
    this file knows)."""
    from .. import engine

    if engine._graph is None:  # no C extensions at all
        return None
    try:
        from . import _tables
    except ImportError:
        return None
    if c_kernels.HEADER.exists() and c_kernels.HEADER.read_text() != c_kernels.header_source():
        return None  # a checkout whose ops_kernels.h was not written afresh after ops.py changed
    return _tables


# ---------------------------------------------------------------------------------------------
# Building: the system C compiler, a cache folder, ctypes.


def pure_python() -> bool:
    """Whether $CHAINRULE_PURE_PYTHON asks for Python alone: then no C is built or loaded."""
    return _settings.pure_python()


# Compiling at run time takes a POSIX system, whose file owners and modes the cache's checks
# read (below), and a C compiler that takes GCC's flags (FLAGS): GCC or Clang, which is cc on
# Linux and macOS. Windows has neither (MSVC's cl spells its flags another way): there build()
# says so, and compile runs long tapes on the table program pip built, the rest on numpy.
RUNS_A_COMPILER = os.name == "posix"


def compiler_problem() -> str | None:
    """Why build() cannot compile a program on this system, or None when it can try."""
    if not RUNS_A_COMPILER:
        return (
            f"the C backend compiles at run time only on Linux and macOS, not on {sys.platform} "
            "(the table program pip built still runs long tapes)"
        )
    if c_compiler() is None:
        return "no C compiler found (set CC, or install gcc or clang)"
    return None


def c_compiler() -> list[str] | None:
    """The command of the C compiler to use: $CC if set, else cc, gcc or clang; None if none,
    or where build() compiles nothing (on Windows, even with a gcc: see compiler_problem)."""
    if not RUNS_A_COMPILER:
        return None
    if _settings.c_compiler():
        command = shlex.split(_settings.c_compiler())
        return command if command and shutil.which(command[0]) else None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cache_parts() -> tuple[Path, tuple[str, ...]]:
    """The cache folder as two parts: the folder the user names (or the XDG default), and the
    folders under it that are chainrule's own."""
    if _settings.cache_folder():
        return Path(_settings.cache_folder()), ("c",)  # type: ignore[arg-type]  # (set: see above)
    base = _settings.xdg_cache_home() or Path.home() / ".cache"
    return Path(base), ("chainrule", "c")


def cache_dir() -> Path:
    """Where built programs are kept: $CHAINRULE_CACHE, else $XDG_CACHE_HOME/chainrule, else ~/.cache."""
    base, own = _cache_parts()
    return base.joinpath(*own)


# -O2: a layer's sixteen running sums kept in registers (at -O1 they go through memory, 1.5x
# slower), for about the same build time; no fused multiply-add, so the products round as
# numpy's do. These come after any flags in $CC, and of two contrary flags the last wins: so
# $CC="gcc -ffast-math" cannot let the compiler assume there is never a nan or an inf, which
# would drop the checks that send such a call to numpy (log(-1) must raise eager's ValueError).
FLAGS = [
    "-O2",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-finite-math-only",
    "-fno-unsafe-math-optimizations",
    "-fno-associative-math",
    "-fno-reciprocal-math",
    "-fsigned-zeros",
    "-fPIC",
    "-shared",
]

# Appended to every program of kernels that build() compiles, and run once before the library
# is used: a compiler that ignored the flags above would fail it, and its build is not used.
SELF_TEST = "\n" + (_HERE / "self_test.c").read_text()  # (after the kernels, which it tests)

# The cache's safety rules. Loading a library runs its code (a constructor runs at load), so
# build() loads only libraries this user built, checked:
# - the folders it makes get mode 0700, whatever the umask. chainrule's own folders (``c``, and
#   ``chainrule`` under XDG) must be real folders, not symlinks, owned by this user and not
#   writable by group or others; every folder above them (symlinks resolved) must be owned by
#   this user or root and not writable by group or others, unless it has the sticky bit (as
#   /tmp has: no one else can then rename what is in it). So no one else can swap any folder on
#   the way, and the checked paths stay the checked folders. A folder that breaks a rule is
#   refused: numpy runs (with one warning for backend="c").
# - next to each library, a record of its key and the sha256 of its bytes, written when it was
#   built. A library file is read only if, opened without following a symlink, it is a regular
#   file of this user that no one else can write; and used only if its bytes hash to the
#   record. The bytes that were hashed are the bytes loaded: they are copied to a new private
#   file (a random name, made with O_EXCL), which is loaded and removed. A file cut short or
#   changed after the check can then never be mapped (a library cut short, once mapped, is a
#   SIGBUS when the loader reads past its end).
# - the library must then have the symbols asked for and pass SELF_TEST. Anything that fails a
#   check is built afresh and replaces the entry (a rename, atomic); if that fails, Unavailable.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_MOST_BYTES = 64 * 2**20  # a library larger than this is not one of ours
_loaded: dict[tuple[Path, str], ctypes.CDLL] = {}  # (folder, key) -> loaded in this process


def _program_text(source: str) -> str:
    """What build() compiles for ``source``: a program of kernels gets SELF_TEST."""
    return source + SELF_TEST if "static int all_finite(" in source else source


def _cache_key(compiler: list[str], source: str) -> str:
    return hashlib.sha256("\0".join([*compiler, *FLAGS, _program_text(source)]).encode()).hexdigest()


def library_path(compiler: list[str], source: str) -> Path:
    """Where the library built from ``source`` by ``compiler`` is cached: named by their hash."""
    return cache_dir() / f"tape-{_cache_key(compiler, source)[:24]}.so"


def _make_private(folder: Path) -> None:
    """Make ``folder`` and its missing parents, each with mode 0700 (mkdir's mode goes through
    the umask, which may also take the owner's bits: chmod sets it as asked)."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another process: checked below like any other
        os.chmod(path, 0o700)


def _unsafe(st: os.stat_result, own: bool) -> str | None:
    """Why a folder with this stat breaks the cache's rules (see above), or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    owners = {os.getuid()} if own else {os.getuid(), 0}
    if st.st_uid not in owners:
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & _WRITABLE_BY_OTHERS and (own or not st.st_mode & stat.S_ISVTX):
        return "is writable by group or others"
    return None


def _private_folder() -> Path:
    """The cache folder, made if missing and checked (see the rules above); Unavailable, saying
    which folder and why, if it breaks a rule."""
    return check_cache_folder(make=True)


def check_cache_folder(make: bool = False) -> Path:
    """The cache folder, checked against the rules above; Unavailable, saying which folder and
    why, if it breaks one. ``make``: make it first if missing; else (``chainrule info``) only
    the folders on its path that exist are checked, and nothing is made."""
    if not RUNS_A_COMPILER:  # the checks read POSIX owners and modes
        raise Unavailable(compiler_problem())
    base, own = _cache_parts()
    folder = base.joinpath(*own)
    try:
        if make:
            _make_private(folder)
        real = Path(os.path.realpath(base))
        checks = [(path, os.stat(path), False) for path in (real, *real.parents) if make or path.exists()]
        for name in own:
            real = real / name
            if make or os.path.lexists(real):
                checks.append((real, os.lstat(real), True))
    except OSError as error:
        doing = "make" if make else "check"
        raise Unavailable(f"cannot {doing} the cache folder {folder}: {error}") from None
    for path, st, is_own in checks:
        reason = _unsafe(st, is_own)
        if reason:
            raise Unavailable(
                f"the cache folder {path} {reason}: not used (see README, the C backend's cache)"
            )
    return real


def _read_checked(folder: Path, name: str) -> bytes | None:
    """The bytes of ``folder/name`` if it is a regular file of this user that no one else can
    write (checked on the opened file, opened without following a symlink); else None."""
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # missing, or a symlink
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & _WRITABLE_BY_OTHERS:
            return None
        chunks: list[bytes]
        chunks, size = [], 0
        while size <= _MOST_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        return None
    except OSError:
        return None
    finally:
        os.close(fd)


def _record(key: str, data: bytes) -> bytes:
    """The record kept next to a library: its whole key and the sha256 of its bytes (the key
    too, so that no other entry's record, copied or linked here, can vouch for it)."""
    return f"{key} {hashlib.sha256(data).hexdigest()}\n".encode()


def _load(folder: Path, key: str, data: bytes, symbols: Sequence[str]) -> ctypes.CDLL:
    """Load ``data``, a library's checked bytes, from a private copy (see the rules above);
    Unavailable if it does not load, lacks one of ``symbols`` or fails SELF_TEST (run when
    ``symbols`` names it)."""
    # The key in the name: the loader takes a name it has loaded before for that library, so
    # a name made again after the copy is removed must be a copy of the same program.
    fd, copy = tempfile.mkstemp(prefix=f".load-{key[:24]}-", suffix=".so", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        library = ctypes.CDLL(copy)
    except OSError as error:
        raise Unavailable(f"cannot load the library tape-{key[:24]}.so: {error}") from None
    finally:
        os.unlink(copy)  # the loaded library stays mapped
    _check_symbols(library, key, symbols)
    if "chainrule_self_test" in symbols and library.chainrule_self_test() != 1:
        raise Unavailable(
            "the C compiler's flags drop the checks for nan and inf (-ffast-math in $CC?): "
            "its build is not used"
        )
    return library


def _check_symbols(library: ctypes.CDLL, key: str, symbols: Sequence[str]) -> None:
    missing = [name for name in symbols if not hasattr(library, name)]
    if missing:
        raise Unavailable(f"the library tape-{key[:24]}.so has no {', '.join(missing)}")


def _from_cache(folder: Path, key: str, symbols: Sequence[str]) -> ctypes.CDLL | None:
    """The library cached for ``key``, checked and loaded; None if there is none that passes."""
    name = f"tape-{key[:24]}"
    data, record = _read_checked(folder, name + ".so"), _read_checked(folder, name + ".sha256")
    if data is None or record != _record(key, data):
        return None
    try:
        return _load(folder, key, data, symbols)
    except Unavailable:
        return None  # built afresh


def _compile(compiler: list[str], folder: Path, text: str) -> bytes:
    """The bytes of the library the C compiler builds from ``text``, in a private scratch folder."""
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as scratch:
            c_file, built = Path(scratch) / "tape.c", Path(scratch) / "tape.so"
            c_file.write_text(text)
            run = subprocess.run(
                [*compiler, *FLAGS, "-o", str(built), str(c_file), "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if run.returncode != 0:
                lines = run.stderr.strip().splitlines() or ["no message"]
                message = next((line for line in lines if "error" in line), lines[0])
                raise Unavailable(f"the C compiler failed: {message}")
            data = _read_checked(Path(scratch), "tape.so")
    except OSError as error:
        raise Unavailable(f"cannot build in {folder}: {error}") from None
    except subprocess.TimeoutExpired:
        raise Unavailable("the C compiler took over 120 s") from None
    if data is None:
        raise Unavailable("the C compiler wrote no library")
    return data


def _store(folder: Path, key: str, data: bytes) -> None:
    """Keep ``data`` and its record in the cache, each written whole and then renamed into place
    (atomic: another process never sees half a file)."""
    name = f"tape-{key[:24]}"
    for target, content in ((name + ".so", data), (name + ".sha256", _record(key, data))):
        fd, temporary = tempfile.mkstemp(prefix=".store-", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            os.replace(temporary, folder / target)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise Unavailable(f"cannot store {target} in {folder}: {error}") from None


def build(source: str, symbols: Sequence[str] = ("forward", "backward")) -> ctypes.CDLL:
    """The shared library built from ``source``, with the functions ``symbols``: from the cache
    when this user built it before and it passes the checks (see the rules above), else built
    afresh and stored there. Unavailable, with the reason, when it cannot be."""
    if pure_python():
        raise Unavailable("CHAINRULE_PURE_PYTHON is set: no C is built or loaded")
    if not RUNS_A_COMPILER:  # (before the cache's checks, which need POSIX)
        raise Unavailable(compiler_problem())
    compiler = c_compiler()
    if compiler is None:
        raise Unavailable(compiler_problem())
    key, folder = _cache_key(compiler, source), _private_folder()
    library = _loaded.get((folder, key))
    if library is None:
        text = _program_text(source)
        checks = (*symbols, "chainrule_self_test") if text != source else tuple(symbols)
        library = _from_cache(folder, key, checks)
        if library is None:
            data = _compile(compiler, folder, text)
            library = _load(folder, key, data, checks)
            _store(folder, key, data)
        _loaded[folder, key] = library
    _check_symbols(library, key, symbols)
    return library


def _pattern(np, positions):
    """``(base, outer, inner)`` when every ``positions[i, j]`` is ``base + i*outer + j*inner``,
    else None."""
    rows, cols = positions.shape
    if rows == 0 or cols == 0:
        return None
    base = int(positions[0, 0])
    outer = int(positions[1, 0]) - base if rows > 1 else 0
    inner = int(positions[0, 1]) - base if cols > 1 else 0
    pattern = base + outer * np.arange(rows)[:, None] + inner * np.arange(cols)
    return (base, outer, inner) if np.array_equal(positions, pattern) else None


def _in_a_run(np, group):
    """Whether the group's nodes have one input each, one after the other, and a kernel for that."""
    children = group.children
    if children.shape[0] != 1 or children.shape[1] < 2:
        return False
    try:
        kernel, _ = _kernels_for(group.rule)
    except Unavailable:
        return False  # (which the group's row then reports)
    return kernel in _UNARY_KERNELS and bool((np.diff(children[0]) == 1).all())


def _table_kind(kind: tuple[Any, ...] | None) -> int:
    """A row's kind as the table's last number: a layer's number of neurons, -1 for a run, else 0."""
    if kind is None:
        return 0
    return -1 if kind[0] == "run" else kind[1]


def tape_rows(np, groups):
    """The groups as rows ``(rule, start, count, n_inputs, idx_offset, kind)`` (see
    program_source) and ``idx``: every group's input positions, node by node, in one int32
    array; a layer's are its three blocks of weight, input and bias positions instead, each as a
    pattern where it follows one (see f_layer), and a run's just where its inputs start."""
    rows: list[tuple[Any, ...]]
    rows, blocks, offset = [], [], 0
    for group in groups:
        count = group.end - group.start
        if hasattr(group, "weights"):  # backends/numpy.py's _MatmulGroup: weights (m, U), inputs (m, V)
            (m, U), V = group.weights.shape, group.inputs.shape[1]
            patterns: list[int]
            listed: list[Any]
            patterns, listed = [], []  # as f_layer reads them
            for positions in (group.weights, group.inputs, group.bias.reshape(V, U)):
                pattern = _pattern(np, positions)
                patterns += pattern or (-1, 0, 0)
                if pattern is None:
                    listed.append(positions.ravel())
            blocks += [np.array(patterns), *listed]
            rows.append((group.rule, group.start, count, m, offset, ("layer", U, V, m)))
            offset += len(patterns) + sum(map(len, listed))
        elif _in_a_run(np, group):
            from_ = int(group.children[0, 0])
            blocks.append(np.array([from_]))
            rows.append((group.rule, group.start, count, 1, offset, ("run", from_)))
            offset += 1
        else:
            n = group.children.shape[0]
            blocks.append(group.children.ravel(order="F"))  # node after node
            rows.append((group.rule, group.start, count, n, offset, None))
            offset += n * count
    return rows, np.concatenate(blocks).astype(np.int32) if blocks else np.zeros(1, dtype=np.int32)
