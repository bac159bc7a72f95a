"""The C table program: every Program's groups as rows of a table, walked by one C program.

The program (native.py's ``table_program``: the kernels, and ``forward``/``backward`` walking
a table of groups) is the same for every tape, so pip builds it with chainrule
(``compiler/_tables.c``) and no C compiler runs when a function is compiled; where pip did not
build it, the system's C compiler builds it once, into the cache (native.build). A row of the
table is seven numbers (native.ROW): the forward kernel's number, the group's first position,
its count, inputs per node, where its input positions start in ``idx``, the backward kernel's
number, and a layer's number of neurons (-1 for a run of one-input nodes, else 0).

The kernels do the arithmetic only: when a call meets anything unusual (a nan or inf, an
out-of-range take index) forward or backward returns False and the tape redoes the call on
the numpy backend, which raises eager's error or passes the nan/inf on as eager does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import native
from ..ir import Program
from ..native import Unavailable
from . import numpy as numpy_backend

if TYPE_CHECKING:
    import numpy

    from .numpy import NumpyProgram

name = "table"


def prepare(program: Program, compiler: bool = True, reference: NumpyProgram | None = None) -> TableProgram:
    """The table program for ``program``: its groups as the numpy backend forms them (a layer
    as one matrix product, a run of one-input nodes as a run), given as ``reference`` or made
    here. ``compiler`` False: only the program pip built is used, the C compiler never runs."""
    if not compiler and native.prebuilt_tables() is None:
        raise Unavailable("the table program was not built with chainrule")
    return TableProgram(program, reference or numpy_backend.prepare(program), compiler)


def prepare_thin(program: Program) -> TableProgram:
    """The table program pip built, straight from the Program's groups with no group objects:
    for a thin tape (a group per node) making them costs more than tracing. A layer's dot nodes
    stay in the layout's order here (the table program runs them one by one anyway), so the
    positions are the Program's."""
    return TableProgram.from_layout(program)


class CProgram:
    """A Program run by C kernels on the numpy backend's arrays; the numpy backend checks it.

    ``program``, ``outputs`` and ``checked`` say where the nodes are (see numpy.NumpyProgram);
    ``reference`` is the numpy replay over the same positions, for the calls left to it.
    """

    # Set when the program is run (_run, or TableProgram._run_table): the module pip built (or
    # None), the table of groups, where the nodes start, and the C source.
    _module: Any
    table: numpy.ndarray
    _first: int
    source: str

    def __init__(self, program: Program, reference: NumpyProgram) -> None:
        if program.size >= 2**31:
            raise Unavailable("the tape has more than 2**31 nodes")
        self._reference = reference
        self.outputs, self.checked = reference.outputs, reference.checked
        rows, self.idx = native.tape_rows(reference.np, reference.groups)
        self._rows = rows

    @property
    def reference(self) -> NumpyProgram:
        return self._reference

    def layout(self) -> list[tuple]:
        """The groups as a Program lists them, each node where this program puts it."""
        return self._reference.layout()

    def _run(self, library: Any, *extra: Any) -> None:
        """Call this library's forward() and backward() on the tape's arrays, with these last
        arguments, through ctypes (the module pip built is called directly)."""
        self._module = None
        self._forward, self._backward = library.forward, library.backward
        self._forward.restype = self._backward.restype = ctypes.c_int
        self._idx = ctypes.c_void_p(self.idx.ctypes.data)
        self._extra = tuple(ctypes.c_long(x) if isinstance(x, int) else x for x in extra)
        self._no_mask = ctypes.c_void_p(None)

    def forward(self, data: numpy.ndarray) -> bool:
        """Compute every node into ``data``; False when the numpy backend must redo the call."""
        if self._module is not None:
            return self._module.forward(data, self.idx, self.table, self._first) == 0
        return self._forward(ctypes.c_void_p(data.ctypes.data), self._idx, *self._extra) == 0

    @property
    def in_one_call(self) -> bool:
        """Whether ``replay`` below can run (the program pip built does)."""
        return self._module is not None

    def replay(self, data: numpy.ndarray, pieces: Sequence[numpy.ndarray]) -> bool:
        """``forward`` after copying the numbers of ``pieces`` (arrays) one after the other to the
        start of ``data``, in one call."""
        return self._module.replay(data, pieces, self.idx, self.table, self._first) == 0

    def backward(self, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray | None) -> bool:
        """Add the gradients into ``grad``; False when the numpy backend must redo the pass."""
        if self._module is not None:
            return self._module.backward(data, grad, self.idx, needed, self.table, self._first) == 0
        mask = self._no_mask if needed is None else ctypes.c_void_p(needed.ctypes.data)
        return (
            self._backward(
                ctypes.c_void_p(data.ctypes.data),
                ctypes.c_void_p(grad.ctypes.data),
                self._idx,
                mask,
                *self._extra,
            )
            == 0
        )


class TableProgram(CProgram):
    """A Program's groups as rows of the table program's table (see the module's docstring)."""

    _rules: list[Any]  # from_layout's: each group's op (the rest is in the table)

    def __init__(self, program: Program, reference: NumpyProgram, compiler: bool = True) -> None:
        super().__init__(program, reference)
        rows = [(*row[:5], native._table_kind(row[5])) for row in self._rows]
        self._rows = None
        self._run_table(reference.np, rows, program.n_leaves, program.size, compiler)

    @classmethod
    def from_layout(cls, program: Program) -> TableProgram:
        """See prepare_thin."""
        if program.size >= 2**31 or native.prebuilt_tables() is None:
            raise Unavailable("the table program was not built with chainrule")
        import numpy as np

        self = cls.__new__(cls)
        self._reference = None  # type: ignore[assignment]  # made from the table if a call needs it (see reference)
        self.outputs, self.checked = tuple(program.outputs), np.array(program.checked, dtype=np.intp)
        layout = program.layout
        every_row = b"".join(rows for _, _, _, rows, _ in layout)
        self.idx = np.frombuffer(every_row, dtype=np.intp).astype(np.int32)
        table, start, offset = [], program.n_leaves, 0
        for rule, count, width, _, _ in layout:  # a layer's dot nodes are run one by one here
            table.append((rule, start, count, width, offset, 0))
            start, offset = start + count, offset + count * width
        self._rules = [rule for rule, *_ in layout]  # the rest is in the table
        self._run_table(np, table, program.n_leaves, program.size, compiler=False)
        return self

    @property
    def reference(self) -> NumpyProgram:
        if self._reference is None:  # from_layout's: plain groups, in the Program's order
            # (the numpy backend needs to know where the nodes start: every leaf counts as one)
            groups = Program(self._first, (), (), self.layout(), self.outputs, self.checked)
            self._reference = numpy_backend.prepare(groups, layers=False)
        return self._reference

    def layout(self) -> list[tuple]:
        if self._reference is not None:
            return self._reference.layout()
        # from_layout's: the groups read back from the table
        import numpy as np

        idx, layout = self.idx.astype(np.intp), []
        for rule, (_, _, count, n, at, _, _) in zip(self._rules, self.table.tolist()):
            layout.append((rule, count, n, idx[at : at + count * n], None))
        return layout

    def _run_table(
        self, np: ModuleType, table: list[tuple[Any, ...]], first: int, size: int, compiler: bool
    ) -> None:
        """Run the table program on these groups: ``(rule, start, count, n_inputs, idx_offset,
        kind)``, ``kind`` as the table's last number (see native.ROW)."""
        codes = {}  # op -> the numbers of its forward and backward kernels (checked once an op)
        for rule, *_ in table:
            if rule not in codes:
                f, b = native._kernels_for(rule)
                codes[rule] = (native._FORWARD_KERNELS.index(f), native._BACKWARD_KERNELS.index(b))
        layer = native.LAYER
        self.table = np.array(
            [
                (layer, start, count, n, at, layer, kind)
                if kind > 0
                else (codes[rule][0], start, count, n, at, codes[rule][1], kind)
                for rule, start, count, n, at, kind in table
            ],
            dtype=np.int64,
        ).reshape(len(table), native.ROW)
        self.source = native.table_program()
        self._first = first
        self._module = native.prebuilt_tables()
        if self._module is None:
            if not compiler:
                raise Unavailable("the table program was not built with chainrule")
            sizes = ctypes.c_long(first), ctypes.c_long(size)
            self._run(native.build(self.source), ctypes.c_void_p(self.table.ctypes.data), len(table), *sizes)
