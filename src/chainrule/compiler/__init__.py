"""chainrule.compile: trace a scalar computation once, replay it over flat numpy arrays.

A training step builds the same graph every time; only the numbers change. ``compile(fn)``
runs ``fn`` once on leaf Values (the *trace*), flattens the graph into a *tape* and, on every
later call with arguments of the same structure, replays the tape over float64 arrays:

- every node gets a slot in one ``data`` array: the inputs first, then the constants made
  inside ``fn``, then the Values that existed before the call (parameters, read afresh at
  every call), then the computed nodes;
- computed nodes are grouped by (depth in the graph, op), so each group is one numpy
  operation: gather the inputs, apply the op's vectorized rule from ``ops.py``, store the
  outputs in the group's contiguous slice;
- backward walks the groups in reverse and scatter-adds each group's input gradients
  (``np.bincount`` over precomputed indices, not ``np.add.at``).

Before grouping, chains of ``+`` (what the builtin ``sum()`` makes) are folded into one n-ary
sum, and a sum of products ``b + w1*x1 + ... + wn*xn`` becomes one ``dot`` node, so the tape
stays shallow.

The result of a compiled call is an ordinary Value whose single op, ``compiled``, has the
parameters as children; its backward rule runs the tape backward. So ``loss.backward()``
accumulates into the parameters' ``.grad`` exactly as eager backward does, and a compiled
result can be used in further eager arithmetic.

``detach()`` and ops under ``no_grad`` are recorded too, each behind a ``stop_gradient`` node
(identity forward, no gradient backward): replay recomputes them from the new numbers, and
backward skips the nodes reached only through them, which eager backward never visits.

What tracing cannot see: Python control flow that depends on numbers (``if v.data > 0:``).
The branch taken while tracing is frozen into the tape. So while a trace runs, ``Value.data``
and ``Value.grad`` are properties that check who reads and writes them (the plain slots are put
back when the trace ends, so eager code pays nothing): ``fn`` touching them on any Value, traced
or made outside it (a parameter), warns with ``TraceWarning``; a chainrule function that would
freeze a number or act only once (``backward()``, ``zero_grad()``, an optimizer step, ...)
raises ``NotImplementedError``; ops, new Values, ``repr`` and drawings pass freely.

Arguments are checked like eager arithmetic checks numbers: only real numbers (numpy's too),
in lists, tuples and numpy arrays, get in; anything else is a TypeError naming its position.

That is the numpy backend. ``compile(fn, backend="c")`` runs the same tape as a C program
instead: the same groups, one C loop each, built once by the system's C compiler. The default,
``backend="auto"``, runs the same C loops from a table of the groups: one program for every
tape, which pip builds with chainrule, so no compiler runs when a function is compiled.

Between the stages goes one IR (``ir.py``): a ``Program`` of ``Group``s, the leaves and every
group's op, count and input positions. Tracing records Values, the layout turns them into a
Program, a backend runs it; ``print(f.program)`` shows the latest trace's. The stages have a
file each in this package:

- ``arguments.py``: numbers in (checked, flattened into one float64 array) and results out;
- ``tracing.py``: running ``fn`` on leaf Values, recording the nodes, watching ``.data``;
- ``mapping.py``: ``map_rows`` while tracing: ``fn`` traced on one row of a batch, and its
  groups copied for every row, so that a trace does not grow with the batch in Python;
- ``rewriting.py``: the Program: folding ``+`` chains into sums and sums of products into dot
  products, grouping, placing;
- ``backends/``: what runs a Program, a file each behind one interface (``prepare(program)``,
  then ``forward(data)`` and ``backward(data, grad, needed)``, each False when it leaves the
  call to the reference) and one selector: ``numpy.py`` (the reference, which raises eager's
  errors), ``table.py`` (the C table program), ``generated_c.py`` (the Program as its own C
  program), ``scalar.py`` (thin tapes, one node per depth as in an RNN, node by node in
  Python, where numpy's per-call cost would make the replay slower than eager);
- ``native.py``: the C kernels' programs and their build: the system's C compiler, a cache;
- ``tape.py``: a Program with its backend, a call's replay and backward, compiled results.

numpy is needed here and only here (``pip install "chainrule[fast]"``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import _settings
from ..engine import _mode
from . import backends, native
from .arguments import flatten_all
from .backends.table import CProgram
from .devices import on_device
from .ir import Program
from .tracing import TraceWarning, trace

if TYPE_CHECKING:
    import numpy

    from .tape import Tape

__all__ = ["compile", "CompiledFunction", "TraceWarning", "BACKENDS", "on_device"]


BACKENDS = backends.NAMES  # ("numpy", "c", "auto", "jax")


def compile(
    fn: Callable[..., Any], backend: str | None = None, devices: Sequence[Any] | int | None = None
) -> CompiledFunction:
    """Compile ``fn``, a function that builds a scalar graph, into a fast replay.

    ``backend`` is how the tape is replayed: ``"numpy"`` (one numpy call per group of nodes),
    ``"c"`` (the tape as its own C program, built by the system's C compiler; see native.py) or
    ``"auto"`` (the same C kernels driven by a table of the tape's groups: one program for every
    tape, built by pip with chainrule, so no compiler runs per tape; numpy where it cannot run).
    The default is ``$CHAINRULE_BACKEND``, else ``"auto"``. All give the same numbers and the
    same errors; ``"c"`` without a compiler falls back to numpy with a one-line warning.
    ``"jax"`` compiles the tape with ``jax.jit`` (XLA: CPU, GPU or TPU; ``pip install
    "chainrule[jax]"``), each ``map_rows`` call a ``jax.vmap``; ``devices`` (a list of jax
    devices, or a count) splits the rows of every ``map_rows`` call over several devices.

    >>> from chainrule import Value, compile
    >>> w = Value(2.0)
    >>> f = compile(lambda xs: sum(w * x for x in xs))
    >>> y = f([1.0, 2.0, 3.0])      # traces
    >>> y.data
    12.0
    >>> y.backward(); w.grad
    6.0
    >>> f([1.0, 1.0, 1.0]).data     # replays
    6.0
    """
    return CompiledFunction(fn, backend, devices)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off for the length of a trace.

    A trace makes hundreds of thousands of objects that live until its tape is built and are
    then freed by reference counting; the collector would walk them all again and again
    (a third of a GPT step's tracing time) to find no cycles among them. Any cycle the traced
    function does leave behind is collected as usual once the trace is done.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class CompiledFunction:
    """A function with its traces, one per argument structure."""

    def __init__(
        self, fn: Callable[..., Any], backend: str | None = None, devices: Sequence[Any] | int | None = None
    ) -> None:
        try:
            import numpy
        except ImportError:
            raise ImportError('chainrule.compile needs numpy: pip install "chainrule[fast]"') from None
        self.np = numpy
        if backend is None:
            backend = _settings.backend() or "auto"
        if backend not in BACKENDS:
            raise ValueError(
                f"chainrule.compile: backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        self.backend = backend
        self.runs_on: Any = backend  # what the tapes are prepared with: the name, or jax's Options
        if backend == "jax":
            from .backends import jax as jax_backend

            self.runs_on = jax_backend.Options(devices)
        elif devices is not None:
            raise ValueError(f'chainrule.compile: devices= is for backend="jax", not {backend!r}')

        self.fn = fn
        self.tapes: dict[Any, Tape] = {}  # by the arguments' structure
        self.trace_seconds = 0.0  # the time spent tracing, over all traces so far
        functools.update_wrapper(self, fn)

    def _tape(self, args: tuple[Any, ...]) -> tuple[Tape, numpy.ndarray]:
        """The tape for these arguments (traced on their first call) and their numbers."""
        structure, numbers_in = flatten_all(self.np, args)
        tape = self.tapes.get(structure)
        if tape is None:
            start = time.perf_counter()
            with _collector_paused():
                tape = self.tapes[structure] = trace(self.fn, structure, numbers_in.tolist(), self.runs_on)
            self.trace_seconds += time.perf_counter() - start
        return tape, numbers_in

    def lower(self, *args: Any) -> Any:
        """For ``backend="jax"``: JAX's Lowered object of the call with these arguments (traced
        first if they are new), so that ``.as_text()`` shows the XLA program and its shardings."""
        if self.backend != "jax":
            raise ValueError(f'lower(): only backend="jax" has a lowered program, not {self.backend!r}')
        tape, _ = self._tape(args)
        if not hasattr(tape.backend, "lower"):  # (prepare failed and numpy runs it: see select)
            raise ValueError("lower(): this trace runs on the numpy backend, not on JAX")
        return tape.backend.lower()

    def __call__(self, *args: Any) -> Any:  # what fn returns: a Value, or a structure of them
        if _mode.get().hook is not None:  # called inside another trace: let it see the ops
            return self.fn(*args)
        tape, numbers_in = self._tape(args)
        return tape.run(numbers_in)

    @property
    def last_tape(self) -> Tape | None:
        """The tape of the latest trace, or None before the first call."""
        return next(reversed(self.tapes.values()), None)

    @property
    def program(self) -> Program:
        """The latest trace's Program (see ir.py): ``print(f.program)`` shows its groups."""
        tape = self.last_tape
        if tape is None:
            raise ValueError("program: call the compiled function once first, so that it is traced")
        return tape.program

    def source(self) -> str:
        """The latest trace as a C program: your function as C. It is the program the C backend
        builds for it, whichever backend runs it (a tape of over native.STRAIGHT_LINE_GROUPS
        groups gets the table-walking program, the same for every tape)."""
        tape = self.last_tape
        if tape is None:
            raise ValueError("source(): call the compiled function once first, so that it is traced")
        if self.backend == "c" and isinstance(tape.fast, CProgram):
            return tape.fast.source
        try:
            rows, _ = native.tape_rows(self.np, tape.groups)
            return native.program_source(rows, tape.size, tape.n_leaves)
        except native.Unavailable as reason:
            raise ValueError(f"source(): {reason}") from None

    def __repr__(self) -> str:
        return f"<compiled {getattr(self.fn, '__qualname__', self.fn)!r}, {len(self.tapes)} trace(s)>"
