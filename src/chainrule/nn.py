"""A small neural-net library on top of Value, compatible with micrograd's ``nn``.

micrograd's ``Neuron``, ``Layer`` and ``MLP`` come first. After them, the building blocks of
a sequence model, each written from the same scalar ops so that a reader can follow every
number: ``Embedding`` (a table of vectors picked by a token id), ``Linear`` (one dot product
per output), ``RMSNorm``, ``CausalSelfAttention`` with its ``KVCache``, and ``Block`` (one
transformer layer). ``chainrule.gpt`` puts them together into a small GPT.

>>> import random; random.seed(0)
>>> from chainrule.nn import MLP
>>> model = MLP(2, [4, 1])
>>> out = model([1.0, -2.0])      # one output, so a single Value
>>> len(model.parameters())
17
"""

from __future__ import annotations

import math
import numbers
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, repeat
from typing import Any, ClassVar, TypeVar, cast

from ._checks import check_flag, check_integer, check_number
from ._state import CheckpointError, state_problems
from .engine import (
    Value,
    _reading_numbers,
    dot,
    logsumexp,
    sum_values,
    take,
    zero_grads,
)
from .parameters import Parameter, Parameters, pack_parameters

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
BIAS_INITS = ("zero", "uniform")
_M = TypeVar("_M", bound="Module")


class Module:
    """Anything with parameters, found by walking its attributes, as torch.nn.Module finds its own.

    A module's parameters are the Values among its attributes, taken in the order the
    attributes were first set (``vars(module)``): a Value, a list or tuple of Values (one
    weight vector), another Module, or a list or tuple of these, nested to any depth. Each
    gets a dotted name, the one its checkpoint uses: ``w`` and ``b`` in a Neuron,
    ``layers.0.neurons.3.w`` in an MLP, ``weight.0`` for the first row of a weight matrix.
    So a module defines only ``__init__`` and ``__call__``:

    >>> class Scale(Module):
    ...     def __init__(self, s):
    ...         self.s = Value(s)
    ...     def __call__(self, x):
    ...         return self.s * x
    >>> class Net(Module):
    ...     def __init__(self):
    ...         self.scales = [Scale(2.0), Scale(3.0)]
    ...         self.offset = Value(1.0)
    >>> [name for name, p in Net().named_parameters()]
    ['scales.0.s', 'scales.1.s', 'offset']

    Every Value counts, a Parameter or not (micrograd's modules hold plain Values), so keep
    results such as a last output out of the attributes; dicts and other objects are not
    walked. A module whose class writes its own ``parameters()`` is asked for them instead (and
    its state names number them: ``0``, ``1``, ...). The walk is done afresh at every call: it
    costs about what the list it returns does (10 us for micrograd's MLP 2-16-16-1).
    """

    # What rebuilds the module from a checkpoint: the constructor's arguments, each read from
    # the attribute of the same name, in the order the architecture lists them. Arguments
    # that have their value in ``optional_arguments`` are left out of the architecture, so
    # that it reads as it did before they existed.
    arguments: ClassVar[tuple[str, ...]] = ()
    optional_arguments: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, checkpoint: bool = False, **kwargs: Any) -> None:
        """``class Mine(Module, checkpoint=True)`` lets checkpoints hold ``Mine`` (by its name).

        Its ``arguments`` name what its constructor takes, read back from its attributes.
        ``load`` runs the constructor twice: once for a skeleton, whose weight vectors made by
        nn's own helpers are one stand-in each, and once for real; a registered type that
        makes its Values itself has them made in the skeleton too, so only register types
        whose size a file cannot blow up.
        """
        super().__init_subclass__(**kwargs)
        if checkpoint:
            _register(cls)

    def _walk(self, named: bool = False) -> _Walk:
        return _Walk(self, named)

    def parameters(self) -> list[Value]:
        """The parameters, in the order of the attributes that hold them (micrograd's order for MLP).

        >>> import random; random.seed(0)
        >>> n = Neuron(2)
        >>> n.parameters() == n.w + [n.b]
        True
        """
        return list(self._walk().parameters)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Value]]:
        """``(name, parameter)`` pairs in ``parameters()`` order; a vector's numbers are ``w.0``, ``w.1``...

        >>> import random; random.seed(0)
        >>> [name for name, p in Neuron(2).named_parameters()]
        ['w.0', 'w.1', 'b']
        """
        for name, entry in self.state_entries(prefix):
            if isinstance(entry, list):
                for i, p in enumerate(entry):
                    yield f"{name}.{i}", p
            else:
                yield name, entry

    def zero_grad(self) -> None:
        zero_grads(self.parameters())  # p.grad = 0.0 for every parameter p

    def pack_parameters(self) -> Parameters | None:
        """List the module's Parameters in one new group, in ``parameters()`` order.

        nn's modules do it when they are built; call it again after replacing some. It returns
        the new group, whose ``data`` and ``grad`` read all their numbers as flat arrays.

        >>> random.seed(0)
        >>> model = MLP(2, [3, 1])
        >>> group = model.pack_parameters()
        >>> len(group), model.parameters()[4].data == group.data[4]
        (13, True)
        """
        if _skeleton_in_progress() is not None:  # a skeleton has no Parameters to pack
            return None
        return pack_parameters(self.parameters())

    # Checkpoints. A module names its numbers in ``state_entries``; ``state_dict`` reads them
    # out as plain floats, ``load_state_dict`` writes them back, and ``architecture`` says how
    # to build the module again (``chainrule.save``/``load`` put the two together in a file).

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        """The named parameters, as ``(name, Value)`` or ``(name, list of Values)`` pairs.

        A weight vector (a list of Values) is one entry, named by its path through the
        modules: ``"layers.0.neurons.3.w"``. A module whose class writes its own
        ``parameters()`` numbers them instead: ``"0"``, ``"1"``, ...
        """
        if type(self).parameters is not Module.parameters:
            return [(f"{prefix}{i}", p) for i, p in enumerate(self.parameters())]
        entries = self._walk(named=True).entries
        return [(prefix + name, entry) for name, entry in entries] if prefix else entries

    def state_dict(self) -> dict[str, float | list[float]]:
        """The parameters' data by name, as plain floats (a list for a weight vector).

        >>> import random; random.seed(0)
        >>> state = MLP(2, [3, 1]).state_dict()
        >>> list(state)[:2], len(state["layers.0.neurons.0.w"])
        (['layers.0.neurons.0.w', 'layers.0.neurons.0.b'], 2)
        """
        _reading_numbers("state_dict()")
        state = {}
        for name, entry in self.state_entries():
            state[name] = [v.data for v in entry] if isinstance(entry, list) else entry.data
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the parameters' data from ``state`` (as made by ``state_dict``); gradients are kept.

        Everything is checked first: a missing or unexpected name, a list of the wrong length
        or anything that is not a finite number raises ``chainrule.CheckpointError`` naming
        the problem, and then no parameter has changed.

        >>> import random; random.seed(0)
        >>> a, b = Neuron(2), Neuron(2)
        >>> b.load_state_dict(a.state_dict())
        >>> [w.data for w in b.w] == [w.data for w in a.w]
        True
        """
        _reading_numbers("load_state_dict()")
        entries = dict(self.state_entries())
        problems = state_problems(state, state_shapes(entries.items()))
        if problems:
            raise CheckpointError(f"the state does not fit {self!r}: " + "; ".join(problems))
        for name, entry in entries.items():
            if isinstance(entry, list):
                for v, x in zip(entry, state[name], strict=True):
                    v.data = float(x)
            else:
                entry.data = float(state[name])

    def architecture(self) -> dict[str, Any]:
        """What the module is, as a JSON-ready dict from which ``chainrule.save``/``load`` rebuild it.

        It is the module's type name and its ``arguments``; only a type registered for
        checkpoints (``Neuron``, ``Layer``, ``MLP``, ``GPT``, or ``class Mine(Module,
        checkpoint=True)``), as its constructor built it, can describe itself: a module whose
        parts were replaced raises ``NotImplementedError`` saying which part differs.

        >>> MLP(2, [16, 16, 1]).architecture()
        {'type': 'MLP', 'nin': 2, 'nouts': [16, 16, 1], 'activation': 'relu'}
        """
        cls = type(self)
        if CHECKPOINT_TYPES.get(cls.__name__) is not cls:
            raise _cannot_describe(self)
        arguments = {}
        try:
            for name in cls.arguments:
                value = getattr(self, name)
                if name not in cls.optional_arguments or value != cls.optional_arguments[name]:
                    arguments[name] = list(value) if isinstance(value, list) else value  # a copy
            built = skeleton(cls, arguments)
        except (AttributeError, TypeError, ValueError) as error:  # an argument changed or deleted
            raise _cannot_describe(self, f" ({error})") from None
        # A checkpoint keeps only the arguments, so the module must be exactly what the
        # constructor builds from them: a user may have replaced, added or changed parts.
        difference = _first_difference(self._walk(named=True), built._walk(named=True))
        if difference is not None:
            call = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
            raise _cannot_describe(self, f" ({difference} is not what {cls.__name__}({call}) builds)")
        return {"type": cls.__name__, **arguments}


def _cannot_describe(module: object, why: str = "") -> NotImplementedError:
    # A checkpoint rebuilds a module from its type name and arguments alone, so a subclass
    # (whose __call__ may differ) or a user's own layer would come back as something else.
    kinds = list(CHECKPOINT_TYPES)
    names = ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else "".join(kinds)
    return NotImplementedError(
        f"{type(module).__name__} cannot describe its architecture{why}; "
        f"checkpoints support {names} as they are built (not subclasses or changed copies)"
    )


# ---------------------------------------------------------------------------------------------
# The module types a checkpoint may name: nothing else can be built from a file.

CHECKPOINT_TYPES: dict[str, type[Module]] = {}


def _register(cls: type[Module]) -> None:
    known = CHECKPOINT_TYPES.get(cls.__name__)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"a module type named {cls.__name__!r} is already registered for checkpoints "
            f"({known.__module__}.{known.__qualname__})"
        )
    CHECKPOINT_TYPES[cls.__name__] = cls


# ---------------------------------------------------------------------------------------------
# The walk. It goes through ``vars(module)`` in order and records the parameters it found
# and, to tell later whether it still holds, the attributes of every module and the items of
# every list it went through. A named walk (for ``state_entries`` and ``architecture``) also
# records each entry's name and where each module and list begins and ends: the structure
# that ``architecture`` compares with a skeleton's.


class _Walk:
    """One walk of a module. A named walk also records the entries with their names and marks
    where each module and list begins and ends."""

    __slots__ = ("entries", "marks", "named", "parameters")

    def __init__(self, module: Module, named: bool) -> None:
        self.named = named
        self.parameters: list[Value] = []
        self.entries: list[tuple[str, Any]] = []
        self.marks: list[tuple[int, tuple[Any, ...]]] = []  # (len(entries) then, a module or list)
        self._visit_module(module, "", {id(module)})

    def structure(self) -> list[tuple[Any, ...]]:
        """Every module (type and arguments), list (length) and entry (shape), in walk order."""
        structure: list[tuple[Any, ...]] = []
        done = 0
        for at, mark in [*self.marks, (len(self.entries), None)]:
            shapes = state_shapes(self.entries[done:at])
            structure += [("entry", name, shape) for name, shape in shapes.items()]
            structure += [mark] if mark is not None else []
            done = at
        return structure

    def _visit_module(self, module: Module, prefix: str, ancestors: set[int]) -> None:
        cls = type(module)
        if self.named:
            arguments = tuple([getattr(module, name, _MISSING) for name in cls.arguments])
            self.marks.append((len(self.entries), ("module", prefix[:-1], cls, arguments)))
        for name, x in vars(module).items():
            if type(x) not in _PLAIN:
                self._visit(x, prefix + name, ancestors)

    def _visit(self, x: object, name: str, ancestors: set[int]) -> None:
        named = self.named
        if isinstance(x, Value):
            self.parameters.append(x)
            if named:
                self.entries.append((name, x))
        elif isinstance(x, Module):
            if id(x) in ancestors:  # a module that holds its parent: its parameters are listed already
                return
            if _lists_its_own(type(x)):  # ask it: what it holds is its own business
                self.parameters += x.parameters()
                if named:
                    self.marks.append((len(self.entries), ("own", name, type(x))))
                    self.entries += x.state_entries(name + ".")
                return
            self._visit_module(x, name + ".", ancestors | {id(x)})
        elif isinstance(x, (list, tuple)):
            self._visit_list(x, name, ancestors)
        elif isinstance(x, _StandIn):
            self.entries.append((name, x))

    def _visit_list(self, x: list[Any] | tuple[Any, ...], name: str, ancestors: set[int]) -> None:
        if x and all(map(isinstance, x, repeat(Value))):  # a weight vector: one entry
            entry = x if isinstance(x, list) else list(x)
            self.parameters += entry
            if self.named:
                self.entries.append((name, entry))
            return
        if x and _is_matrix(x):  # the rows of a weight matrix, an entry each: all at once, in C
            rows = cast("list[list[Value]]", x)
            self.parameters += chain.from_iterable(rows)
            if self.named:
                self.entries += [(f"{name}.{i}", row) for i, row in enumerate(rows)]
        elif x and set(map(type, x)) == {_StandIn}:  # a skeleton's weight matrix
            self.entries += [(f"{name}.{i}", row) for i, row in enumerate(x)]
        else:
            for i, item in enumerate(x):
                if type(item) not in _PLAIN:
                    self._visit(item, f"{name}.{i}", ancestors)
        if self.named:
            self.marks.append((len(self.entries), ("items", name, len(x))))


_MISSING = object()


def _is_matrix(x: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``x`` is a list of non-empty lists of Values (the checks run in C, not per row)."""
    return (
        set(map(type, x)) == {list} and all(x) and all(map(isinstance, chain.from_iterable(x), repeat(Value)))
    )


_PLAIN = frozenset({int, float, str, bool, type(None)})  # attributes that hold no parameter


def _lists_its_own(cls: type[Module]) -> bool:
    """Whether a module class writes its own ``parameters()`` or ``state_entries()``."""
    return cls.parameters is not Module.parameters or cls.state_entries is not Module.state_entries


def _first_difference(walk: _Walk, built_walk: _Walk) -> str | None:
    """Where a module's structure first differs from that of the module its constructor builds."""
    shapes, built_shapes = state_shapes(walk.entries), state_shapes(built_walk.entries)
    if walk.marks == built_walk.marks and shapes == built_shapes and list(shapes) == list(built_shapes):
        return None  # the same modules and lists, and the same entries in the same order
    structure, built = walk.structure(), built_walk.structure()
    for i, item in enumerate(structure):
        if i >= len(built) or item != built[i]:
            kind, name = item[0], item[1] or "the module"
            if kind in ("module", "own"):
                return f"{name}, a {item[2].__name__},"
            return f"{name}, of {item[2]} items," if kind == "items" else name
    return None if len(structure) == len(built) else "a part it lacks"


def state_shapes(entries: Iterable[tuple[str, Any]]) -> dict[str, int | None]:
    """Each entry's shape, as ``state_problems`` takes them: a list's length, or None for one number."""
    return {
        name: entry.length if type(entry) is _StandIn else len(entry) if isinstance(entry, list) else None
        for name, entry in entries
    }


# ---------------------------------------------------------------------------------------------
# Skeletons. Loading a checkpoint checks its state against the names and shapes of the module
# it names before building it, and saving one checks that the module is what its constructor
# builds. Both build a skeleton: the constructor run with a stand-in for each weight vector
# (one object, whatever its length) and each single weight, drawing no random numbers. Its
# cost is bounded by ``limit`` stand-ins, so a file naming a model of 10**18 weights is
# refused at once.


class _StandIn:
    """A skeleton's weight vector of ``length`` numbers, or single weight (``length`` None)."""

    __slots__ = ("length",)

    def __init__(self, length: int | None) -> None:
        self.length = length


class SkeletonTooBig(Exception):
    """A skeleton that would need more stand-ins than its limit (so more parameters too)."""


class _Skeleton:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.made = 0

    def stand_ins(self, count: int, length: int | None) -> list[_StandIn]:
        self.made += count
        if self.limit is not None and self.made > self.limit:
            raise SkeletonTooBig(f"more than {self.limit}")
        return [_StandIn(length)] * count  # one object stands in for them all


_building = threading.local()  # .skeleton while a skeleton is built in this thread


def _skeleton_in_progress() -> _Skeleton | None:
    return getattr(_building, "skeleton", None)


def skeleton(cls: type[_M], arguments: dict[str, Any], limit: int | None = None) -> _M:
    """``cls(**arguments)``, with stand-ins for its weights: its ``state_entries`` give the shapes.

    The constructor checks the arguments as usual (``TypeError``, ``ValueError``); more than
    ``limit`` weight vectors and single weights raise ``SkeletonTooBig``.

    >>> bones = skeleton(Layer, {"nin": 1000, "nout": 2})
    >>> state_shapes(bones.state_entries())
    {'neurons.0.w': 1000, 'neurons.0.b': None, 'neurons.1.w': 1000, 'neurons.1.b': None}
    """
    outer = _skeleton_in_progress()
    _building.skeleton = _Skeleton(limit)
    try:
        return cls(**arguments)
    finally:
        _building.skeleton = outer


def _vector(n: int, draw: Callable[[], float]) -> list[Value]:
    """``n`` new Parameters, each starting at ``draw()`` (a stand-in, in a skeleton)."""
    bones = _skeleton_in_progress()
    if bones is not None:
        return bones.stand_ins(1, n)[0]  # type: ignore[return-value]  # (only the walk looks at it)
    return [Parameter(draw()) for _ in range(n)]


def _scalar(draw: Callable[[], float]) -> Value:
    bones = _skeleton_in_progress()
    if bones is not None:
        return bones.stand_ins(1, None)[0]  # type: ignore[return-value]
    return Parameter(draw())


def _uniform() -> float:
    return random.uniform(-1, 1)


def _zero() -> float:
    return 0.0


class Neuron(Module, checkpoint=True):
    """``activation(w . x + b)``, with weights drawn uniformly from [-1, 1] as in micrograd.

    >>> Neuron(3, nonlin=False).architecture()
    {'type': 'Neuron', 'nin': 3, 'nonlin': False, 'activation': 'linear'}
    """

    arguments = ("nin", "nonlin", "activation")

    def __init__(
        self, nin: int, nonlin: bool = True, activation: str = "relu", bias_init: str = "zero"
    ) -> None:
        nin = check_integer("Neuron", "nin", nin)
        nonlin = check_flag("Neuron", "nonlin", nonlin)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Neuron: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"Neuron: bias_init must be one of {BIAS_INITS}, got {bias_init!r}")
        self.w = _vector(nin, _uniform)
        # micrograd starts the bias at 0; the lecture draws it after the weights, like them.
        self.b = _scalar(_uniform if bias_init == "uniform" else _zero)
        self.nin = nin
        self.nonlin = nonlin
        self.activation = activation if nonlin else "linear"
        self.pack_parameters()

    def __call__(self, x: Value | float | Sequence[Value | float]) -> Value:
        if isinstance(x, (Value, numbers.Real)):  # a single input, e.g. from a one-output layer
            x = [x]
        x = cast("Sequence[Value | float]", x)  # (mypy does not count a float as a numbers.Real)
        if len(x) != len(self.w):
            raise ValueError(f"Neuron: expected {len(self.w)} inputs, got {len(x)}")
        act = dot(self.w, x, self.b)
        if self.activation == "linear":
            return act
        return getattr(act, self.activation)()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.w)}, activation={self.activation!r})"


class Layer(Module, checkpoint=True):
    """``nout`` neurons that share the same inputs.

    >>> Layer(3, 2, activation="tanh").architecture()
    {'type': 'Layer', 'nin': 3, 'nout': 2, 'nonlin': True, 'activation': 'tanh'}
    """

    arguments = ("nin", "nout", "nonlin", "activation")

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        nout = check_integer("Layer", "nout", nout)
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]
        first = self.neurons[0]  # every neuron is built with the same arguments
        self.nin, self.nout, self.nonlin, self.activation = first.nin, nout, first.nonlin, first.activation
        self.pack_parameters()

    def outputs(self, x: Value | float | Sequence[Value | float]) -> list[Value]:
        """The outputs as a list, even when there is only one."""
        return [n(x) for n in self.neurons]

    # A Value, or a list of them for several outputs. The Any (typeshed's way for a type that
    # depends on the arguments' values) leaves the caller, who knows which, free of narrowing it.
    def __call__(self, x: Value | float | Sequence[Value | float]) -> Value | Any:
        out = self.outputs(x)
        return out[0] if len(out) == 1 else out  # micrograd's convention, which MLP relies on

    def __repr__(self) -> str:
        n = self.neurons[0] if self.neurons else None
        if not isinstance(n, Neuron):  # a layer whose neurons a user replaced
            return f"{type(self).__name__}(neurons={self.neurons!r})"
        return f"{type(self).__name__}({len(n.w)}, {len(self.neurons)}, activation={n.activation!r})"


class MLP(Module, checkpoint=True):
    """A multi-layer perceptron: every layer but the last has the activation; the last is linear.

    ``linear_output=False`` puts the activation on the last layer too, and ``bias_init="uniform"``
    draws each bias from [-1, 1] after its neuron's weights instead of starting it at 0. Together
    they build the network of the backpropagation lecture, weight for weight:

    >>> random.seed(1337)
    >>> lecture = MLP(3, [4, 4, 1], activation="tanh", linear_output=False, bias_init="uniform")
    >>> lecture([2.0, 3.0, -1.0]).op      # tanh on the output too, so it lies in (-1, 1)
    'tanh'
    """

    arguments = ("nin", "nouts", "activation", "linear_output")
    optional_arguments = {"linear_output": True}  # left out by default, so older checkpoints read the same

    def __init__(
        self,
        nin: int,
        nouts: list[int],
        activation: str = "relu",
        *,
        linear_output: bool = True,
        bias_init: str = "zero",
    ) -> None:
        self.nin = nin = check_integer("MLP", "nin", nin)
        self.nouts = nouts = _layer_sizes(nouts)
        self.linear_output = check_flag("MLP", "linear_output", linear_output)
        sizes, last = [nin] + nouts, len(nouts) - 1
        self.layers = [
            Layer(
                sizes[i],
                sizes[i + 1],
                nonlin=i != last or not self.linear_output,
                activation=activation,
                bias_init=bias_init,
            )
            for i in range(len(nouts))
        ]
        self.activation = activation
        self.pack_parameters()

    def __call__(self, x: Value | float | Sequence[Value | float]) -> Value | Any:  # as Layer's
        # Every layer through its own __call__, as in micrograd and PyTorch, so a subclass that
        # overrides it, or a user's layer put into ``layers``, takes part. A layer with one
        # output returns a single Value, which the next layer's neurons take as their input.
        for layer in self.layers:
            x = layer(x)
        return x  # the last layer's output (an MLP has at least one layer)

    def __repr__(self) -> str:
        try:
            self.architecture()
        except NotImplementedError:  # changed or custom layers: show them all
            return f"{type(self).__name__}(layers={self.layers!r})"
        last = "" if self.linear_output else ", linear_output=False"
        return f"MLP({self.nin}, {self.nouts}, activation={self.activation!r}{last})"


def _layer_sizes(nouts: Iterable[int]) -> list[int]:
    """``nouts`` as a non-empty list of ints: any list-like of integers (a numpy array too)."""
    if isinstance(nouts, (str, bytes)):
        raise TypeError(f"MLP: nouts must be a list of layer sizes, got {nouts!r}")
    try:
        sizes = list(nouts)
    except TypeError:
        raise TypeError(f"MLP: nouts must be a list of layer sizes, got {nouts!r}") from None
    if not sizes:
        raise ValueError(f"MLP: nouts must be a non-empty list of layer sizes, got {nouts!r}")
    return [check_integer("MLP", "every layer size in nouts", n) for n in sizes]


# ---------------------------------------------------------------------------------------------
# Building blocks for sequence models.
#
# These follow the pure-Python GPT scripts: vectors are plain lists of Values, weights are
# lists of rows, and initial weights are drawn from a Gaussian of standard deviation 0.08 by
# the global ``random`` module, so that ``random.seed`` reproduces a model.

INIT_STD = 0.08  # the scripts' initial weights: N(0, 0.08^2)


def _gaussian_rows(rows: int, cols: int, std: float) -> list[list[Value]]:
    bones = _skeleton_in_progress()
    if bones is not None:
        return bones.stand_ins(rows, cols)  # type: ignore[return-value]  # (see _vector)
    return [[Parameter(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


def _check_length(where: str, x: Iterable[Value | float], n: int) -> list[Value | float]:
    x = list(x)
    if len(x) != n:
        raise ValueError(f"{where}: expected a vector of {n} numbers, got {len(x)}")
    return x


def softmax(logits: Iterable[Value | float]) -> list[Value]:
    """``exp(z_i) / sum_j exp(z_j)`` for each logit, as ``exp(z_i - logsumexp(z))``.

    Subtracting ``logsumexp`` (one stable node) keeps every ``exp`` at or below 1, so large
    logits cannot overflow; and since no ``.data`` is read, ``chainrule.compile`` can trace it.

    >>> [round(p.data, 4) for p in softmax([Value(0.0), Value(1000.0)])]
    [0.0, 1.0]
    """
    logits = list(logits)
    total = logsumexp(logits)
    return [(z - total).exp() for z in logits]


class Embedding(Module):
    """A table of ``num`` learned vectors of ``dim`` numbers; ``embedding(i)`` is row ``i``.

    The row is picked with ``chainrule.take``, so a token id that is an input of a compiled
    function picks the right row on every replay, not the one it picked while tracing.

    >>> random.seed(0)
    >>> table = Embedding(5, 3)
    >>> row = table(2)
    >>> row is table.weight[2], len(row)
    (True, 3)
    """

    def __init__(self, num: int, dim: int) -> None:
        self.num = check_integer("Embedding", "num", num)
        self.dim = check_integer("Embedding", "dim", dim)
        self.weight = _gaussian_rows(self.num, self.dim, INIT_STD)
        self.pack_parameters()

    arguments = ("num", "dim")

    def __call__(self, index: int | Value) -> list[Value]:
        return take(self.weight, index)

    def __repr__(self) -> str:
        return f"Embedding({self.num}, {self.dim})"


class Linear(Module):
    """``W x + b``: ``nout`` outputs, each one ``dot`` node of a weight row with the input.

    Weights start Gaussian (std 0.08, as in the GPT scripts; ``Neuron`` keeps micrograd's
    uniform draw) and the bias at zero; ``bias=False`` leaves it out, as the scripts do.

    >>> random.seed(0)
    >>> layer = Linear(3, 2, bias=False)
    >>> out = layer([1.0, 2.0, 3.0])
    >>> len(out), len(layer.parameters()), out[0].op
    (2, 6, 'dot')
    """

    def __init__(self, nin: int, nout: int, bias: bool = True) -> None:
        self.nin = check_integer("Linear", "nin", nin)
        self.nout = check_integer("Linear", "nout", nout)
        self.weight = _gaussian_rows(self.nout, self.nin, INIT_STD)
        with_bias = check_flag("Linear", "bias", bias)
        self.bias: list[Value] | None = _vector(self.nout, _zero) if with_bias else None
        self.pack_parameters()

    def __call__(self, x: Iterable[Value | float]) -> list[Value]:
        x = _check_length("Linear", x, self.nin)
        biases = self.bias if self.bias is not None else [0.0] * self.nout
        return [dot(row, x, b) for row, b in zip(self.weight, biases)]

    def __repr__(self) -> str:
        return f"Linear({self.nin}, {self.nout}, bias={self.bias is not None})"


class RMSNorm(Module):
    """Scale a vector to a root-mean-square of 1: ``x * (mean(x^2) + eps) ** -0.5``.

    As in the GPT scripts it has no learned gain, so no parameters.

    >>> norm = RMSNorm(2)
    >>> [round(v.data, 4) for v in norm([Value(3.0), Value(-4.0)])]      # rms of (3, -4) is 3.5355
    [0.8485, -1.1314]
    """

    arguments = ("dim", "eps")

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        self.dim = check_integer("RMSNorm", "dim", dim)
        self.eps = check_number("RMSNorm", "eps", eps, strict=True)

    def __call__(self, x: Iterable[Value | float]) -> list[Value]:
        x = _check_length("RMSNorm", x, self.dim)
        mean_square = sum_values([x_i * x_i for x_i in x]) / self.dim
        scale = (mean_square + self.eps) ** -0.5
        return [x_i * scale for x_i in x]

    def __repr__(self) -> str:
        return f"RMSNorm({self.dim})"


class KVCache:
    """The keys and values of the positions seen so far, one vector per position.

    Attention appends the current position's key and value before it looks at them, so a
    query only ever sees its own position and earlier ones: the cache makes it causal, with
    no mask. Start a new cache for every sequence.
    """

    def __init__(self) -> None:
        self.keys: list[list[Value]] = []
        self.values: list[list[Value]] = []

    def __len__(self) -> int:
        return len(self.keys)


class CausalSelfAttention(Module):
    """Multi-head self-attention of one position over itself and the positions before it.

    ``attention(x, cache)`` takes the current position's vector ``x``, appends its key and
    value to ``cache`` (a ``KVCache``), and returns the attended vector: for each of the
    ``n_head`` heads (``n_embd // n_head`` numbers each) the softmax of the scaled dot
    products of the query with every cached key weighs the cached values; the heads are
    joined and projected by ``out``.

    >>> random.seed(0)
    >>> attention, cache = CausalSelfAttention(8, n_head=2), KVCache()
    >>> for position in range(3):
    ...     y = attention([Value(0.1 * position)] * 8, cache)
    >>> len(y), len(cache)
    (8, 3)
    """

    arguments = ("n_embd", "n_head")

    def __init__(self, n_embd: int, n_head: int) -> None:
        n_embd = check_integer("CausalSelfAttention", "n_embd", n_embd)
        n_head = check_integer("CausalSelfAttention", "n_head", n_head)
        if n_embd % n_head:
            raise ValueError(f"CausalSelfAttention: n_embd={n_embd} is not a multiple of n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.query = Linear(n_embd, n_embd, bias=False)
        self.key = Linear(n_embd, n_embd, bias=False)
        self.value = Linear(n_embd, n_embd, bias=False)
        self.out = Linear(n_embd, n_embd, bias=False)

    def __call__(self, x: Iterable[Value | float], cache: KVCache) -> list[Value]:
        q = self.query(x)
        cache.keys.append(self.key(x))
        cache.values.append(self.value(x))
        scale = 1.0 / math.sqrt(self.head_dim)
        heads = []
        for h in range(self.n_head):
            lo, hi = h * self.head_dim, (h + 1) * self.head_dim
            scores = [dot(q[lo:hi], k[lo:hi], 0.0) * scale for k in cache.keys]
            weights = softmax(scores)
            heads += [dot(weights, [v[j] for v in cache.values], 0.0) for j in range(lo, hi)]
        return self.out(heads)

    def __repr__(self) -> str:
        return f"CausalSelfAttention({self.n_embd}, n_head={self.n_head})"


class Block(Module):
    """One transformer layer as in the GPT scripts: attention, then a ReLU MLP, each on the
    RMS-normalised input and added back to it (a residual connection).

    >>> random.seed(0)
    >>> block = Block(8, n_head=2)
    >>> len(block([Value(1.0)] * 8, KVCache())), len(block.parameters())    # 4*64 + 2*256
    (8, 768)
    """

    def __init__(self, n_embd: int, n_head: int) -> None:
        self.attention_norm = RMSNorm(n_embd)
        self.attention = CausalSelfAttention(n_embd, n_head)
        self.mlp_norm = RMSNorm(n_embd)
        self.mlp_up = Linear(n_embd, 4 * n_embd, bias=False)
        self.mlp_down = Linear(4 * n_embd, n_embd, bias=False)
        self.pack_parameters()

    def __call__(self, x: list[Value], cache: KVCache) -> list[Value]:
        attended = self.attention(self.attention_norm(x), cache)
        x = [a + b for a, b in zip(attended, x)]
        hidden = [h.relu() for h in self.mlp_up(self.mlp_norm(x))]
        return [a + b for a, b in zip(self.mlp_down(hidden), x)]

    def __repr__(self) -> str:
        return f"Block({self.attention.n_embd}, n_head={self.attention.n_head})"
