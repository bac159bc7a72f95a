"""The JAX backend: a Program as one XLA program, compiled by ``jax.jit``, on CPU, GPU or TPU.

``compile(fn, backend="jax")``. The Program's groups become one function of float64 arrays
(the inputs; the constants; the externals, in pieces, each layer's weight matrix and bias an
array of its own, see _external_pieces; and a probe, see _op), built from the ops' own
vectorized rules (``vforward(jnp, X)``, with each op's ``vbackward`` as its derivative through
``jax.custom_vjp``, so a kink such as relu's at 0 gets eager's slope, not JAX's), and
``jax.jit`` compiles it once per trace. Each ``map_rows`` call (a ``Mapped`` record of the
Program, see ir.py) runs the function traced on one row under ``jax.vmap``, instead of its
copies for every row: the XLA program does not grow with the batch, and a layer over the rows is
one matrix product. With ``devices`` (several, or a count), the rows of every ``map_rows`` call
are split over them (``jax.sharding``: a Mesh with one axis, ``"rows"``) and XLA sums the
parameters' gradients across them. Inside ``chainrule.on_device`` (devices.py) a call reads
the parameters where they stay, on the device, in the same pieces, and computes their new
``.grad`` there too.

It keeps the other backends' contract (see ``__init__.py``): the parameters' numbers are read
afresh at every call (the tape copies them in), the results' ``backward()`` adds into
``.grad``, and anything unusual is left to the numpy backend, which raises eager's errors: a
non-finite number in a node whose op can raise, a take index out of range, a non-finite
gradient. Everything runs in float64 inside ``jax.enable_x64``, which leaves the user's own
``jax_enable_x64`` setting as it was.

A call computes the gradients of its first output (a loss) with respect to the parameters in
the same XLA call, and the first ``backward()`` from that output with the seed 1 uses them: a
training step is one call into XLA. Any other backward (another output, another seed) is one
more call. Where the graph is not recorded (``no_grad``) the call computes the values alone.
Only the externals' gradients are computed (the tape reads no other leaf's).

XLA on CPU flushes subnormal numbers (below 2.2e-308) to zero: a call whose leaves hold one is
left to the numpy backend; one that is only computed along the way comes out as 0.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ... import ops
from ...engine import _mode
from ..ir import Mapped, Program
from ..native import Unavailable
from ..rewriting import can_raise
from . import numpy as numpy_backend

if TYPE_CHECKING:
    import numpy

name = "jax"
_TINY = 2.2250738585072014e-308  # the smallest normal float64
INSTALL = 'pip install "chainrule[jax]"'


def load():
    """jax, imported; an ImportError that says how to install it where it is not there."""
    try:
        import jax
        import jax.numpy  # noqa: F401
    except ImportError:
        raise ImportError(f'chainrule.compile(backend="jax") needs jax and jaxlib: {INSTALL}') from None
    return jax


class Options:
    """``backend="jax"`` with its settings, as ``compile`` hands it to ``backends.select``."""

    name = "jax"

    def __init__(self, devices=None):
        self.jax = load()
        self.devices = _devices(self.jax, devices)

    def prepare(self, program: Program) -> JaxProgram:
        return JaxProgram(program, self.jax, self.devices)

    def __repr__(self):
        return f"<jax backend on {len(self.devices) if self.devices else 'the default'} device(s)>"


def _devices(jax, devices):
    """The devices to split the rows over: a list of jax devices, a count (the first ones of
    the default platform), or None (one device: JAX's default)."""
    if devices is None:
        return None
    if isinstance(devices, int) and not isinstance(devices, bool):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"chainrule.compile: devices={devices}, but JAX sees {len(available)} device(s) here "
                f"({available[0].platform}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                "set before jax is imported makes N"
            )
        return available[:devices]
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(
            f"chainrule.compile: devices must be a count or a list of jax devices, got {devices!r}"
        )
    return devices


# ---------------------------------------------------------------------------------------------
# Where the numbers live in the JAX function: in segments, each its own array (the inputs; the
# constants; the externals, in pieces (see _external_pieces); the probe: these two the same for
# every row of a map_rows call; each group's nodes; each map_rows result), never one array of
# every node: reading a
# group's inputs is then a slice of one segment, or a gather from a few, and its derivative adds
# into those alone (the constants' never: they are not differentiated).


class _Segments:
    """Each position's segment and place in it, as the steps are laid out."""

    def __init__(self, np: ModuleType, program: Program, pieces: Sequence[Any] | None = None) -> None:
        self.np = np
        self.segment = np.full(program.size, -1, dtype=np.intp)
        self.offset = np.zeros(program.size, dtype=np.intp)
        self.sizes: list[int] = []
        self.externals = np.arange(program.n_fixed, program.n_leaves)  # (their positions)
        self.add(np.arange(program.n_inputs))  # 0: the inputs
        self.add(np.arange(program.n_inputs, program.n_fixed))  # 1: the constants
        # 2, 3, ...: the externals, a segment a piece (their places among the externals)
        pieces = [np.arange(len(self.externals))] if pieces is None else pieces
        self.external_segments = [self.add(self.externals[piece]) for piece in pieces]
        self.probe = len(self.sizes)  # then the probe (see _op), at no position
        self.sizes.append(1)

    def add(self, positions: numpy.ndarray) -> int:
        """A new segment holding ``positions``, in that order; its number."""
        number = len(self.sizes)
        self.segment[positions] = number
        self.offset[positions] = self.np.arange(len(positions))
        self.sizes.append(len(positions))
        return number

    def reader(self, positions):
        """A function (segments, jnp) -> the numbers at ``positions`` (an array of any shape)."""
        np = self.np
        positions = np.asarray(positions, dtype=np.intp)
        segment, offset = self.segment[positions], self.offset[positions]
        assert (segment >= 0).all(), "a position read before it is computed"
        used = np.unique(segment)
        if len(used) == 0:
            return lambda segments, jnp: jnp.zeros(positions.shape)
        # One run of consecutive places, or evenly spaced ones (a layer's weights): one slice.
        flat_segment, flat_offset = segment.ravel(), offset.ravel()
        breaks = np.flatnonzero((np.diff(flat_segment) != 0) | (np.diff(flat_offset) != 1)) + 1
        if len(used) == 1 and len(breaks) > 0:
            strided = _strided(np, int(used[0]), offset, self.sizes[int(used[0])])
            if strided is not None:
                return strided
        # A few runs of consecutive places (a sum over a group's nodes and a constant, say): slices.
        if len(breaks) < _FEW_RUNS:
            bounds = [0, *breaks.tolist(), len(flat_segment)]
            runs = [
                (int(flat_segment[a]), int(flat_offset[a]), int(flat_offset[a]) + b - a)
                for a, b in zip(bounds, bounds[1:])
            ]
            shape = positions.shape
            if len(runs) == 1:
                ((s, low, high),) = runs
                return lambda segments, jnp: segments[s][low:high].reshape(shape)
            return lambda segments, jnp: jnp.concatenate(
                [segments[s][low:high] for s, low, high in runs]
            ).reshape(shape)
        if len(used) == 1:
            return _gather(np, int(used[0]), offset)
        starts = np.concatenate([[0], np.cumsum([self.sizes[s] for s in used])])
        index = starts[np.searchsorted(used, segment)] + offset
        used = used.tolist()

        def read(segments, jnp):
            return jnp.concatenate([segments[s] for s in used])[index]

        return read

    def rows_reader(self, positions):
        """A reader of a group's inputs (``positions``: a row per input, a column per node) that
        reads row by row where the rows are few (each row then usually a slice of one segment)."""
        if len(positions) > 8:
            return self.reader(positions)
        rows = [self.reader(row) for row in positions]
        return lambda segments, jnp: jnp.stack([read(segments, jnp) for read in rows])


_FEW_RUNS = 16  # positions in at most this many runs of consecutive places are read as slices


def _strided(np, segment, indices, size):
    """Read ``indices`` of one segment as a strided slice where they lie evenly: a + i * step in
    one dimension, a + i * step + j in two (a layer's weights, each neuron's vector followed by
    its bias); else None. (A gather's derivative is a scatter, slow on CPU; a slice's is a pad.)"""
    if indices.ndim == 1 and len(indices) > 1:
        a, step = int(indices[0]), int(indices[1] - indices[0])
        if step > 0 and np.array_equal(indices, a + step * np.arange(len(indices))):
            stop = a + step * (len(indices) - 1) + 1
            return lambda segments, jnp: segments[segment][a:stop:step]
    if indices.ndim == 2 and indices.shape[0] > 1 and indices.shape[1] > 0:
        rows, n = indices.shape
        a, step = int(indices[0, 0]), int(indices[1, 0] - indices[0, 0])
        expected = a + step * np.arange(rows)[:, None] + np.arange(n)[None, :]
        if step >= n and a + step * rows <= size and np.array_equal(indices, expected):
            return lambda segments, jnp: segments[segment][a : a + step * rows].reshape(rows, step)[:, :n]
    return None


def _gather(np, segment, indices):
    """Read ``indices`` of one segment."""
    return lambda segments, jnp: segments[segment][indices]


# ---------------------------------------------------------------------------------------------
# The ops in JAX: the vectorized rules of ops.py with jax.numpy as their np, each with its own
# derivative (vbackward) through jax.custom_vjp.


@functools.cache
def _op(jax: ModuleType, rule: ops.Op, check: bool) -> Callable[..., Any]:
    """``rule`` as a JAX function of X (a row per input, a column per node) and ``probe``, with
    eager's derivative.

    ``probe`` is a number the op ignores. With ``check`` (for an op that can raise: only those
    have a backward that can, x ** y's slope in y for x < 0), its gradient says whether every
    input gradient of the group was finite (0) or not (nan): eager raises such an error at the
    node, even where a later select (relu's) would drop the nan. Without, it is 0.
    """
    jnp = jax.numpy
    if rule.vforward is None:
        raise Unavailable(f"the op {rule.name!r} has no vectorized forward (vforward) for JAX")

    @jax.custom_vjp
    def apply(X, probe):
        return rule.vforward(jnp, X)

    def forward(X, probe):
        out = rule.vforward(jnp, X)
        return out, (out, X)

    def backward(saved, g):
        out, X = saved
        grads = rule.vbackward(jnp, g, out, X)
        if not (hasattr(grads, "shape") and grads.shape == X.shape):
            zero = jnp.zeros_like(g)
            grads = jnp.stack([zero if row is None else jnp.broadcast_to(row, g.shape) for row in grads])
        if not check:
            return grads, jnp.zeros((), dtype=grads.dtype)
        return grads, jnp.where(jnp.isfinite(grads).all(), 0.0, jnp.nan)

    apply.defvjp(forward, backward)
    return apply


def _take(jax, X):
    """take: each node's row picked by its index (X[0]); and whether every index was valid (an
    invalid one is left to the numpy backend, which raises eager's error)."""
    jnp = jax.numpy
    index, n = jax.lax.stop_gradient(X[0]), X.shape[0] - 1
    valid = (index == jnp.floor(index)) & (index >= -n) & (index < n)  # nan fails every test
    picked = jnp.where(valid, index, 0.0).astype(jnp.int64) % n
    # (a gather, not a sum of selected rows: -0.0 stays -0.0, a nan in a row not picked stays out)
    return jnp.take_along_axis(X[1:], picked[None, :], axis=0)[0], valid.all()


# ---------------------------------------------------------------------------------------------
# A Program's groups as steps of the JAX function


class _Steps:
    """A Program's groups (those not run as a map_rows call) as JAX operations, in order."""

    def __init__(
        self,
        np: ModuleType,
        jax: ModuleType,
        program: Program,
        mapped: Sequence[_MappedRecord] = (),
        devices: Any = None,
        pieces: Sequence[Any] | None = None,
    ) -> None:
        self.jax = jax
        self.segments = where = _Segments(np, program, pieces)
        mapped = {record.first_group: record for record in mapped}  # type: ignore[assignment]  # (by first group)
        self.steps: list[_Mapped | Callable[..., Any]] = []
        starts, layout, g = program.starts(), program.layout, 0
        while g < len(layout):
            if g in mapped:
                self.steps.append(_Mapped(np, jax, mapped[g], where, devices, pieces))
                g += len(mapped[g].row.layout)
                continue
            rule, count, width, rows, vectors = layout[g]
            positions = np.frombuffer(rows, dtype=np.intp).reshape(count, width)
            self.steps.append(_group_step(np, jax, where, rule, starts[g], positions, vectors))
            g += 1

    def run(self, inputs, constants, externals, probe):
        """Every step in order (``externals``: a tuple of pieces): (every segment's numbers,
        whether nothing unusual happened)."""
        segments = [inputs, constants, *externals, probe[None]]
        ok = self.jax.numpy.bool_(True)
        for step in self.steps:
            ok = step(segments, ok)
        return segments, ok


def _group_step(
    np: ModuleType,
    jax: ModuleType,
    where: _Segments,
    rule: ops.Op,
    start: int,
    positions: numpy.ndarray,
    vectors: Any,
) -> Callable[..., Any]:
    """One group (``count`` nodes at ``start``.., inputs at ``positions``, a row a node) as a
    function (segments, ok) -> ok that appends the group's numbers to the segments."""
    jnp = jax.numpy
    count = len(positions)
    must_be_finite = can_raise(rule)  # (/, log, the powers, take, ...: eager would raise on nan or inf)
    layer = _layer(np, where, positions, vectors) if vectors is not None else None
    if layer is None:
        read = where.rows_reader(positions.T)
        op: Any  # (a function of (X, probe), or None for take and stop_gradient)
        op = None if rule in (ops.TAKE, ops.STOP_GRADIENT) else _op(jax, rule, check=must_be_finite)
    where.add(np.arange(start, start + count))

    def step(segments, ok):
        if layer is not None:
            out = layer(segments, jnp)
        else:
            X = read(segments, jnp)
            if rule is ops.TAKE:
                out, valid = _take(jax, X)
                ok = ok & valid
            elif rule is ops.STOP_GRADIENT:
                out = jax.lax.stop_gradient(X[0])
            else:
                out = op(X, segments[where.probe][0])  # (the probe: see _op)
        if must_be_finite:
            ok = ok & jnp.isfinite(out).all()
        segments.append(out)
        return ok

    return step


def _layer(
    np: ModuleType, where: _Segments, positions: numpy.ndarray, vectors: Any
) -> Callable[..., Any] | None:
    """A group of dot nodes that pairs each of U weight vectors with each of V input vectors (a
    layer over a batch, or over one row inside map_rows) as one matrix product; else None."""
    parts = _layer_parts(np, positions, vectors)
    if parts is None:
        return None
    n, U, V, w_of, x_of, first_w, first_x, slot = parts
    count = len(positions)
    weights = where.reader(positions[first_w, :n])  # (U, n)
    inputs = where.reader(positions[first_x, n : 2 * n])  # (V, n)
    bias = where.reader(positions[:, 2 * n])
    in_order = np.array_equal(slot, np.arange(count))

    def layer(segments, jnp):
        if V == 1 and in_order:  # one input vector (a layer inside map_rows): a vector times a
            # matrix, which vmap makes the matrix product over the rows that a hand-written layer is
            return inputs(segments, jnp)[0] @ weights(segments, jnp).T + bias(segments, jnp)
        products = inputs(segments, jnp) @ weights(segments, jnp).T  # (V, U)
        products = products.reshape(-1) if in_order else products[x_of, w_of]
        return products + bias(segments, jnp)

    return layer


def _layer_parts(np: ModuleType, positions: numpy.ndarray, vectors: Any) -> tuple | None:
    """How a group of dot nodes is a layer (see _layer): (n, U, V, each node's weight vector
    and input vector, the first node of each, each node's place among the V x U products);
    else None."""
    if vectors is None:
        return None
    count, width = positions.shape
    n = width // 2
    if n == 0:
        return None
    w_of, x_of = (np.frombuffer(ids, dtype=np.intp) for ids in vectors)
    U, V = int(w_of.max()) + 1, int(x_of.max()) + 1
    slot = x_of * U + w_of
    if U * V != count or len(np.unique(slot)) != count:
        return None
    first_w = np.flatnonzero(np.diff(np.maximum.accumulate(w_of), prepend=-1))
    first_x = np.flatnonzero(np.diff(np.maximum.accumulate(x_of), prepend=-1))
    # Every node must use its vectors' numbers: the same positions as the node that introduced them.
    if not (
        np.array_equal(positions[:, :n], positions[first_w[w_of], :n])
        and np.array_equal(positions[:, n : 2 * n], positions[first_x[x_of], n : 2 * n])
    ):
        return None
    return n, U, V, w_of, x_of, first_w, first_x, slot


def _external_pieces(np: ModuleType, program: Program, mapped: Sequence[_MappedRecord]) -> list:
    """The externals in pieces, each an array of their places among them: every layer's weight
    matrix (row by row) and its bias, each a piece of its own, as the layer reads them; then the
    other externals in one piece, in their order.

    A model lists its parameters neuron by neuron, each neuron's bias after its weights. Kept
    in one vector in that order, a layer's weights are every other stretch of it: reading them
    copies them out, and their gradients are added back into the whole vector. As pieces, each
    weight matrix and bias is an array of its own, which XLA reads as it is, as a hand-written
    JAX model's weights are."""
    n_externals = program.n_leaves - program.n_fixed
    taken = np.zeros(n_externals, dtype=bool)
    pieces = []

    def take_layers(layout, n_fixed, n_leaves):
        for _, count, width, rows, vectors in layout:
            positions = np.frombuffer(rows, dtype=np.intp).reshape(count, width)
            parts = _layer_parts(np, positions, vectors)
            if parts is None:
                continue
            n, first_w = parts[0], parts[5]
            for piece in (positions[first_w, :n].ravel(), positions[first_w, 2 * n]):
                if ((piece >= n_fixed) & (piece < n_leaves)).all():
                    piece = piece - n_fixed
                    if len(np.unique(piece)) == len(piece) and not taken[piece].any():
                        taken[piece] = True
                        pieces.append(piece)

    take_layers(program.layout, program.n_fixed, program.n_leaves)
    externals = np.arange(program.n_fixed, program.n_leaves)
    for record in mapped:  # (a row function that reads every external, in order: the same)
        row = record.row
        if np.array_equal(np.asarray(record.leaves[len(row.constants) :]), externals):
            take_layers(row.layout, row.n_fixed, row.n_leaves)
    rest = np.flatnonzero(~taken)
    return [*pieces, rest] if len(rest) or not pieces else pieces


class _Mapped:
    """A map_rows call: the row trace's steps under jax.vmap, over every row at once (split over
    the devices, if several); each of its results becomes a segment of the outer function."""

    def __init__(
        self,
        np: ModuleType,
        jax: ModuleType,
        record: _MappedRecord,
        outer: _Segments,
        devices: Any,
        pieces: Sequence[Any] | None = None,
    ) -> None:
        self.jax = jax
        row = record.row
        n_constants = len(row.constants)  # (the row trace's constants, then its externals)
        externals = np.asarray(record.leaves[n_constants:], dtype=np.intp)
        # The common case, a model's parameters: the outer function's externals, in their order
        # (then the row function takes their pieces as they are, and the gradients add into
        # them directly, not through a copy).
        self.all_externals = np.array_equal(externals, outer.externals)
        self.outer_pieces = outer.external_segments
        self.outer_probe = outer.probe
        self.row_steps = _Steps(np, jax, row, pieces=pieces if self.all_externals else None)
        self.row_reader = outer.reader(record.rows)  # (R, k)
        self.constant_reader = outer.reader(record.leaves[:n_constants])
        self.external_reader = outer.reader(externals)
        self.R = R = len(record.rows)
        # The copy for row r of a node of row group g sits at outer_starts[g] + r * count + i,
        # i its place in the group (see mapping.replicate).
        starts, outputs = row.starts(), []
        for p in dict.fromkeys(row.outputs):
            if p < row.n_leaves:  # a row's own Value, a constant or a parameter: not copied
                continue
            g = max(i for i, s in enumerate(starts) if s <= p)
            base = record.outer_starts[g] + (p - starts[g])
            outputs.append(p)
            outer.add(base + row.layout[g][1] * np.arange(R))
        self.n_outputs = len(outputs)
        self.row_output_reader = self.row_steps.segments.reader(np.array(outputs, dtype=np.intp))
        self.mesh = None
        if devices is not None and len(devices) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            self.mesh = Mesh(np.array(devices), ("rows",))
            self.split = NamedSharding(self.mesh, PartitionSpec("rows"))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.padded = -R % len(devices)  # rows added (copies of the first) to split evenly

    def row(self, inputs, constants, externals, probe):
        segments, ok = self.row_steps.run(inputs, constants, externals, probe)
        return self.row_output_reader(segments, self.jax.numpy), ok

    def __call__(self, segments, ok):
        jax, jnp = self.jax, self.jax.numpy
        rows, constants = self.row_reader(segments, jnp), self.constant_reader(segments, jnp)
        if self.all_externals:
            externals = tuple(segments[s] for s in self.outer_pieces)
        else:
            externals = (self.external_reader(segments, jnp),)
        if self.mesh is not None:
            if self.padded:
                rows = jnp.concatenate([rows, jnp.broadcast_to(rows[:1], (self.padded, rows.shape[1]))])
            rows = jax.lax.with_sharding_constraint(rows, self.split)
            externals = jax.lax.with_sharding_constraint(externals, self.replicated)
        # (R, outputs), (R,):
        outputs, row_ok = jax.vmap(self.row, in_axes=(0, None, None, None))(
            rows, constants, externals, segments[self.outer_probe][0]
        )
        if self.mesh is not None:
            outputs = jax.lax.with_sharding_constraint(outputs, self.split)[: self.R]
        segments.extend(outputs.T)
        return ok & row_ok.all()


# ---------------------------------------------------------------------------------------------
# The prepared backend


class JaxProgram:
    """A Program as a jitted JAX function; see the module's docstring."""

    def __init__(self, program: Program, jax: ModuleType, devices: Any = None) -> None:
        import numpy as np

        self.np, self.jax, self.devices = np, jax, devices
        # Whether a call can read the parameters where chainrule.on_device keeps them (see
        # devices.py): on one device (a mesh of several takes them from the host).
        self.reads_devices = devices is None
        self.program = program
        self.outputs = tuple(program.outputs)
        self.checked = np.array(program.checked, dtype=np.intp)
        self.n_inputs, self.n_fixed, self.n_leaves = program.n_inputs, program.n_fixed, program.n_leaves
        self.unique_outputs = list(dict.fromkeys(program.outputs))
        mapped = [_with_outer_starts(record, program) for record in program.mapped if _mappable(np, record)]
        # The externals in pieces (see _external_pieces): in the order of the pieces (None: as
        # in the Program), split at ``bounds``.
        self.pieces = _external_pieces(np, program, mapped)
        order = np.concatenate(self.pieces).astype(np.intp)
        self.order = None if np.array_equal(order, np.arange(len(order))) else order
        self.bounds = np.cumsum([len(piece) for piece in self.pieces])[:-1]
        with jax.enable_x64(True):
            self.steps = _Steps(np, jax, program, mapped, devices, self.pieces)
            where = self.steps.segments
            self.read_outputs = where.reader(np.array(self.unique_outputs, dtype=np.intp))
            # The take indices that are nodes: written into data as well (the tape's choice of
            # which nodes a gradient reaches reads them; see Tape._needed_by).
            self.index_positions = _take_index_nodes(np, program)
            self.read_indices = where.reader(self.index_positions)
            try:
                self._compile()
            except Exception as error:
                # An op of the user's own whose vectorized rule is not JAX-traceable (it calls
                # numpy itself, say): that trace runs on numpy, after a warning (see select).
                own = {rule.name for rule, *_ in program.layout if rule not in ops.BUILT_IN}
                if not own:
                    raise
                raise Unavailable(
                    f"the jax backend could not compile the op(s) {', '.join(sorted(own))} ({error})"
                ) from None
        # id(data) -> (a weak reference to data, (the externals' gradients or None, the
        # externals as the call read them, whether it read them on a device, the (before, after)
        # of .grad it computed there or None)): what a call's backward needs, kept until its
        # numbers (the result Values hold them) are gone.
        self.pending: dict[int, tuple[weakref.ref, Any]] = {}
        self.stepping: dict[tuple, Any] = {}  # _value_and_step's, by optimizer and settings

    def _compile(self):
        jax = self.jax
        jnp = jax.numpy
        n = len(self.unique_outputs)

        def outputs(inputs, constants, externals, probe):
            """The outputs; and, for the host, one array (a transfer, not several): the outputs,
            1 if nothing unusual happened (else 0), the take indices that are nodes."""
            segments, ok = self.steps.run(inputs, constants, externals, probe)
            out = self.read_outputs(segments, jnp)
            return out, jnp.concatenate([out, ok.astype(out.dtype)[None], self.read_indices(segments, jnp)])

        def value(inputs, constants, externals, probe):
            return outputs(inputs, constants, externals, probe)[1]

        def gradients(inputs, constants, externals, probe, seeds):
            """What value gives, with 1 (else 0) after the outputs if the gradients of the
            outputs (seeded with ``seeds``) with respect to the externals are all finite (the
            probe's is nan otherwise: see _op); and those gradients."""
            out, pullback, packed = jax.vjp(
                lambda e, p: outputs(inputs, constants, e, p), externals, probe, has_aux=True
            )
            grads, probe_grad = pullback(seeds)
            # (g . g, the sum of the squares, is nan or inf if one of them is, and one dot
            # product each costs less on CPU than an all() of isfinite, or a reduction; unlike
            # a plain sum, XLA cannot move it into the matrix products g comes from. A g . g
            # that overflows says no as well: the numpy backend then redoes the call, with the
            # same numbers.)
            finite = jnp.isfinite(probe_grad)
            for g in grads:
                finite = finite & jnp.isfinite(jnp.dot(g, g))
            packed = jnp.concatenate([packed[: n + 1], finite.astype(packed.dtype)[None], packed[n + 1 :]])
            return packed, grads

        def value_and_grad(inputs, constants, externals, probe):
            """gradients, for the first output with the seed 1: a loss's."""
            return gradients(inputs, constants, externals, probe, jnp.zeros(n).at[0].set(1.0))

        def value_and_grad_into(inputs, constants, externals, probe, grad):
            """What value_and_grad's first result is, and ``grad`` (the parameters' gradients
            where chainrule.on_device keeps them, in the same pieces) with the gradients added:
            what backward() will store there, computed in the same call. (Not the gradients
            themselves: a backward that needs them alone computes them again.)"""
            packed, grads = value_and_grad(inputs, constants, externals, probe)
            return packed, tuple(a + b for a, b in zip(grad, grads))

        options = {}
        if self.devices is not None:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            everywhere = NamedSharding(Mesh(self.np.array(self.devices), ("rows",)), PartitionSpec())
            options = {"in_shardings": everywhere, "out_shardings": everywhere}
        self.value = jax.jit(value, **options)
        self.value_and_grad = jax.jit(value_and_grad, **options)
        self.grad = jax.jit(gradients, **options)
        self.value_and_grad_into = jax.jit(value_and_grad_into)
        # A training step's call, compiled now (so that the trace's time includes XLA's) by a
        # call on zeros: jax.jit's own calls dispatch in C++, several times faster than those
        # of the object .lower().compile() gives. The other two are compiled when first called.
        shapes = ((self.n_inputs,), (self.n_fixed - self.n_inputs,), [(len(p),) for p in self.pieces], ())
        self.lowered = self.value_and_grad.lower(
            *_tree(lambda n: jax.ShapeDtypeStruct(n, jnp.float64), shapes)
        )
        jax.block_until_ready(self.value_and_grad(*_tree(self.np.zeros, shapes)))

    @functools.cached_property
    def reference(self) -> numpy_backend.NumpyProgram:
        """The numpy backend over the same positions (made when first needed: an error, a
        ``detect_anomaly`` replay, a gradient that does not reach every node)."""
        return numpy_backend.prepare(self.program, layers=False)

    def layout(self) -> list[tuple]:
        return list(self.program.layout)

    def forward(self, data: numpy.ndarray, on_device: Any = None, fixed: tuple = ()) -> bool:
        """Every node's number into ``data``; False when the call must be left to the numpy
        backend. With ``on_device`` (devices.placed's answer), the externals are read there, and
        ``data`` gets them only if the call is left to numpy, or its backward is; and ``fixed``
        is (the inputs' numbers, the constants'), as arrays of their own that stay as they are
        (a plan may keep them: see below)."""
        np = self.np
        if on_device is None:
            fixed = (data[: self.n_inputs], data[self.n_inputs : self.n_fixed])
        if has_subnormal(np, fixed[0] if on_device is not None else data[: self.n_leaves]):
            return False  # XLA on CPU would read it as 0 (see the module's docstring)
        gradients = len(self.unique_outputs) > 0 and _mode.get().recording
        with self.jax.enable_x64(True):
            if on_device is None:
                externals = self.split(data[self.n_fixed : self.n_leaves])
            else:
                externals = on_device.externals()
                if on_device.has_tiny():
                    return False
            arguments = (*fixed, externals, 0.0)
            summed = grads = plan = None
            if gradients and on_device is not None and on_device.same_pieces:
                plan = on_device.ahead()
                if plan is not None:  # (the optimizer's next step, worked out too: see devices._Plan)
                    before, stepping = plan.before, self._value_and_step(plan)
                    grad = None if plan.zeroed else before
                    packed, plan.new_data, plan.new_state = stepping(*arguments, grad, plan.state, plan.lr)
                    # (plan.later keeps the arguments: not data, which the call's entry in
                    # self.pending, that holds plan.later, would then outlive)
                    summed = before, plan.gradients_from(functools.partial(self._summed, arguments, before))
                else:
                    before = on_device.grad()
                    packed, after = self.value_and_grad_into(*arguments, before)
                    summed = before, after
            elif gradients:
                packed, grads = self.value_and_grad(*arguments)
            else:
                packed = self.value(*arguments)
        packed = np.asarray(packed)  # the outputs, whether all went well, the take indices
        n = len(self.unique_outputs)
        if packed[n] != 1.0:
            return False
        data[self.unique_outputs] = packed[:n]
        data[self.index_positions] = packed[n + 1 + gradients :]
        if gradients or on_device is not None:
            if not (gradients and packed[n + 1] == 1.0):
                grads = summed = plan = None
            if plan is not None:
                on_device.planned(plan)
            forget = functools.partial(_forget, self.pending, id(data))
            self.pending[id(data)] = (
                weakref.ref(data, forget),
                (grads, externals, on_device is not None, summed),
            )
        return True

    def _value_and_step(self, plan: Any) -> Any:
        """The call of value_and_grad_into, that also takes ``plan``'s optimizer step (see
        devices._Plan), compiled for its optimizer and settings: (inputs, constants,
        externals, probe, grad, state, lr) -> (packed, new numbers, new state), ``grad`` None
        for zeros. (Each compiles the whole program again; the last four are kept.)"""
        stepping = self.stepping.get(plan.key)
        if stepping is None:
            if len(self.stepping) >= 4:  # (the oldest goes: a sweep's optimizers come one by one)
                del self.stepping[next(iter(self.stepping))]
            value_and_grad, update, jax = self.value_and_grad, plan.update(self.jax), self.jax
            jnp = jax.numpy

            def value_and_step(inputs, constants, externals, probe, grad, state, lr):
                packed, grads = value_and_grad(inputs, constants, externals, probe)
                if grad is None:  # 0.0 + g, which XLA would simplify to g (not 0.0 for g = -0.0)
                    summed = tuple(jnp.where(g == 0.0, 0.0, g) for g in grads)
                else:
                    summed = tuple(a + b for a, b in zip(grad, grads))
                data, state = update(externals, summed, state, lr)
                return packed, data, state

            stepping = self.stepping[plan.key] = jax.jit(value_and_step)
        return stepping

    def _summed(self, arguments: tuple, grad: Any) -> Any:
        """``grad`` plus the gradients of the call on ``arguments``, there (for a _Plan's later)."""
        with self.jax.enable_x64(True):
            return self.value_and_grad_into(*arguments, grad)[1]

    def externals_of(self, data: numpy.ndarray) -> Any:
        """The externals' numbers of the call whose numbers are ``data``, when it read them on a
        device (``data`` then lacks them): as it read them. Else None."""
        kept = self.pending.get(id(data))
        if kept is None or kept[0]() is not data or not kept[1][2]:
            return None
        return self.joined(kept[1][1])

    # The externals' numbers in the JAX function's pieces, and back.

    def split(self, numbers: Any) -> tuple:
        """Numbers of the externals (in the Program's order) as the function's pieces."""
        return tuple(self.np.split(numbers if self.order is None else numbers[self.order], self.bounds))

    def joined(self, pieces: Sequence[Any]) -> numpy.ndarray:
        """The function's pieces (jax or numpy arrays) as one array, in the Program's order."""
        numbers = concatenated(self.np, pieces)
        if self.order is None:
            return numbers
        out = self.np.empty_like(numbers)
        out[self.order] = numbers
        return out

    def device_order(self, externals: Sequence[Any]) -> tuple:
        """The externals in the order of the function's pieces."""
        return tuple(externals) if self.order is None else tuple(externals[i] for i in self.order.tolist())

    def backward(self, data: numpy.ndarray, grad: numpy.ndarray, needed: numpy.ndarray | None) -> bool:
        grads = self.device_gradients(data, grad[self.unique_outputs])
        if grads is None:
            return False
        # Set, not added: grad is this pass's own, zero but for the seeds at the outputs, and the
        # derivative through JAX counts a seed at an output that is an external as well.
        grad[self.n_fixed : self.n_leaves] = self.joined(grads)
        return True

    def add_on_device(self, data: numpy.ndarray, seeds: numpy.ndarray, placed: Any) -> bool:
        """Add the gradients of the call whose numbers are ``data`` (seeded at the outputs with
        ``seeds``) into the parameters' gradients where chainrule.on_device keeps them
        (``placed``); False where the numpy backend must compute them (see device_gradients)."""
        kept = self.pending.get(id(data))
        summed = kept[1][3] if kept is not None and kept[0]() is data else None
        if summed is not None and seeds[0] == 1.0 and not seeds[1:].any() and placed.store_sum(summed):
            return True  # (the call computed the new gradients: they were still those it read)
        grads = self.device_gradients(data, seeds)
        if grads is None:
            return False
        placed.add_grad(grads)
        return True

    def device_gradients(self, data: numpy.ndarray, seeds: numpy.ndarray) -> Any:
        """The externals' gradients (jax arrays, in the pieces), seeded at the outputs with
        ``seeds``, of the call whose numbers are ``data``; None where one is not finite (or the
        call is unknown): the numpy backend then redoes it, raising eager's error or passing
        the nan on."""
        kept = self.pending.get(id(data))
        if kept is None or kept[0]() is not data:
            return None
        grads, externals, _, _ = kept[1]
        if grads is not None and seeds[0] == 1.0 and not seeds[1:].any():
            return grads  # (the first output's, for the seed 1, came with the call)
        # Another seed (scaling by it would round, or overflow, otherwise than eager), or a
        # call that computed only the sum (see value_and_grad_into).
        arguments = (data[: self.n_inputs], data[self.n_inputs : self.n_fixed], externals, 0.0)
        with self.jax.enable_x64(True):
            packed, grads = self.grad(*arguments, seeds)
        return grads if self.np.asarray(packed)[len(seeds) + 1] == 1.0 else None

    def lower(self):
        """JAX's Lowered object of a call (the same for any numbers): ``.as_text()`` shows the
        program and its shardings, ``.compile()`` compiles it."""
        return self.lowered


def concatenated(np: ModuleType, pieces: Sequence[Any]) -> numpy.ndarray:
    """Pieces (jax or numpy arrays) as one new numpy array."""
    return np.concatenate([np.asarray(piece) for piece in pieces]) if len(pieces) else np.zeros(0)


def has_subnormal(np: ModuleType, numbers: numpy.ndarray) -> bool:
    """Whether one of the numbers is subnormal (below 2.2e-308, but not 0)."""
    magnitudes = np.abs(numbers)
    tiny = magnitudes < _TINY
    return bool(tiny.any() and magnitudes[tiny].any())


def _tree(f, shapes):
    """``shapes`` (a tuple of shapes, or of lists of shapes) with ``f`` of each shape, lists as tuples."""
    return tuple(tuple(map(f, s)) if isinstance(s, list) else f(s) for s in shapes)


def _forget(pending, key, _):
    pending.pop(key, None)


def _with_outer_starts(record: Mapped, program: Program) -> _MappedRecord:
    """A Mapped record with, as ``outer_starts``, where each of its row groups' copies start."""
    starts = program.starts()
    n_groups = len(record.row.layout)
    return _MappedRecord(*record, starts[record.first_group : record.first_group + n_groups])


def _mappable(np: ModuleType, record: Mapped) -> bool:
    """Whether a map_rows call can run under vmap: not when a take in it picks by a computed
    index (the tape reads each such index from the call's numbers, and under vmap only the
    row trace's outputs come back)."""
    return not len(_take_index_nodes(np, record.row))


class _MappedRecord:
    __slots__ = ("first_group", "row", "rows", "leaves", "outer_starts")

    def __init__(self, first_group, row, rows, leaves, outer_starts):
        self.first_group, self.row, self.rows, self.leaves = first_group, row, rows, leaves
        self.outer_starts = outer_starts


def _take_index_nodes(np: ModuleType, program: Program) -> numpy.ndarray:
    """The positions of the computed nodes that a take reads as its index."""
    found = set()
    for rule, count, width, rows, _ in program.layout:
        if rule is ops.TAKE:
            index = np.frombuffer(rows, dtype=np.intp).reshape(count, width)[:, 0]
            found.update(index[index >= program.n_leaves].tolist())
    return np.array(sorted(found), dtype=np.intp)
