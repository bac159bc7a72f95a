"""Generated C: a Program as its own straight-line C program, built by the system's C compiler.

``compile(fn, backend="c")``: the groups become two C functions, ``forward`` and ``backward``,
one kernel call per group (native.py's ``program_source``), so a small network reads as a
short C program (``CompiledFunction.source()`` shows it). It is built once into a shared
library named by its hash, in a cache folder (native.build), and called through ctypes. Past
``native.STRAIGHT_LINE_GROUPS`` groups (a long chain has one per node) the source would be too
long to build quickly: such a Program runs on the table program instead (table.py).
"""

from __future__ import annotations

from .. import native
from ..ir import Program
from . import numpy as numpy_backend
from . import table

name = "c"


def prepare(program: Program, reference: numpy_backend.NumpyProgram | None = None) -> table.CProgram:
    """The Program as its own C program, built (or found in the cache); the table program when
    it has too many groups. Unavailable when it cannot be built (no compiler, an op with no
    kernel)."""
    reference = reference or numpy_backend.prepare(program)
    if len(reference.groups) > native.STRAIGHT_LINE_GROUPS:
        return table.TableProgram(program, reference, compiler=True)
    return StraightLineProgram(program, reference)


class StraightLineProgram(table.CProgram):
    """A built library with this Program's own forward() and backward()."""

    def __init__(self, program: Program, reference: numpy_backend.NumpyProgram) -> None:
        super().__init__(program, reference)
        self.source = native.program_source(self._rows, program.size, program.n_leaves)
        self._rows = None
        self._run(native.build(self.source))
