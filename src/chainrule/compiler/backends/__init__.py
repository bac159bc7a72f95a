"""The backends of chainrule.compile: what runs a Program (see ir.py) over the tape's arrays.

A backend is a module here with a ``prepare(program)`` that returns a prepared object with

- ``forward(data) -> bool``: compute every node into ``data`` (a float64 array, the leaves
  already in place); ``backward(data, grad, needed) -> bool``: add every input's gradient into
  ``grad`` (seeded at an output), for the nodes marked in ``needed`` only (None: all of them).
  False means "leave this call to the reference": the numpy backend then redoes it, and raises
  eager's error or passes nan and inf on as eager does. A fast backend returns False whenever
  it meets anything unusual (a nan or inf, an out-of-range take index);
- ``outputs`` and ``checked``: where the Program's outputs and its nodes that can raise sit
  in the arrays (a backend may put a group's nodes in another order: a layer's, say);
- ``layout()``: the Program's groups as it runs them (ir.Group's fields), and ``reference``:
  the numpy backend's replay over the same positions;
- optionally ``in_one_call`` and ``replay(data, pieces)``: copy the leaves' numbers in and
  compute every node, in one call (the table program pip built).

The backends, a file each:

- ``numpy.py``: the reference. A group, one numpy operation; a layer applied to a batch, one
  matrix product. It raises eager's errors; the others fall back to it;
- ``table.py``: the C table program, the same for every tape (pip builds it with chainrule),
  walking a table of the groups: ``backend="auto"``, and thin tapes on any backend;
- ``generated_c.py``: the Program as its own straight-line C program, built by the system's
  C compiler: ``backend="c"``;
- ``scalar.py``: thin Programs (a node per group) node by node in Python, where numpy calls
  would cost more than eager and the table program is not there;
- ``jax.py``: the Program as one XLA program, compiled by ``jax.jit`` (CPU, GPU, TPU), each
  ``map_rows`` call a ``jax.vmap``, sharded over several devices if asked:
  ``backend="jax"``. jax is optional, so it is imported only when asked for.

``select`` picks one from the name the user gave and the Program's shape. A new backend is a
file with ``prepare``, and a line in ``select``; one with settings of its own (the JAX
backend's devices) is given to ``select`` as an object with a ``prepare(program)`` method.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Protocol

from ..ir import Program
from ..native import Unavailable
from . import generated_c, scalar, table
from . import numpy as numpy_backend

if TYPE_CHECKING:
    import numpy

__all__ = ["Prepared", "Unavailable", "select", "NAMES"]

NAMES = ("numpy", "c", "auto", "jax")  # what compile(fn, backend=...) accepts


class Prepared(Protocol):
    """A Program made ready by a backend (see the module's docstring)."""

    outputs: tuple
    checked: numpy.ndarray

    def forward(self, data: numpy.ndarray) -> bool: ...

    def backward(self, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray | None) -> bool: ...

    def layout(self) -> list[tuple]: ...

    @property
    def reference(self) -> numpy_backend.NumpyProgram: ...


def select(name: Any, program: Program) -> Prepared:  # a backend's name, or jax's Options
    """The backend that runs ``program`` for ``compile(fn, backend=name)``, prepared.

    ``"c"``: the Program's own C program (generated_c.py; a warning and numpy where no C
    compiler can build it). ``"auto"``: the C table program (table.py), pip-built or else
    built once. ``"numpy"``, or when neither can run: a thin Program (where a numpy call per
    group would cost more than eager) still runs on the table program pip built, else node by
    node in Python (scalar.py); any other on the numpy backend itself. A backend given as an
    object with settings of its own (jax.py's Options) prepares the Program itself.
    """
    if name == "jax":  # (compile gives jax's Options, with its devices; the bare name: the default)
        from . import jax as jax_backend

        name = jax_backend.Options()
    if not isinstance(name, str):
        try:
            return name.prepare(program)
        except Unavailable as reason:
            warnings.warn(
                f"chainrule.compile: {reason}; using the numpy backend", RuntimeWarning, stacklevel=5
            )
            name = "numpy"
    thin = scalar.is_thin(program.n_nodes, len(program.layout))
    if thin and name != "c":
        try:  # no group objects at all: for a long chain they would cost more than tracing
            return table.prepare_thin(program)
        except Unavailable:
            pass
    reference = numpy_backend.prepare(program)
    if name == "c":
        try:
            return generated_c.prepare(program, reference)
        except Unavailable as reason:
            warnings.warn(
                f"chainrule.compile: {reason}; using the numpy backend", RuntimeWarning, stacklevel=5
            )
    elif name == "auto":
        try:
            return table.prepare(program, reference=reference)
        except Unavailable:
            pass
    if thin:
        try:  # the C table program pip built with chainrule, if it did: no compiler needed
            return table.prepare(program, compiler=False, reference=reference)
        except Unavailable:
            return scalar.prepare(program, reference)
    return reference
