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
from collections.abc import Iterable, Sequence
from typing import Any, cast

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


class Module:
    """Anything with parameters: they can be listed and their gradients reset."""

    def parameters(self) -> list[Value]:
        return []

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
        return pack_parameters(self.parameters())

    # Checkpoints. A module names its numbers in ``state_entries``; ``state_dict`` reads them
    # out as plain floats, ``load_state_dict`` writes them back, and ``architecture`` says how
    # to build the module again (``chainrule.save``/``load`` put the two together in a file).

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        """The named parameters, as ``(name, Value)`` or ``(name, list of Values)`` pairs.

        Neuron, Layer and MLP give dotted names such as ``"layers.0.neurons.3.w"``; this
        default, for other modules, numbers the parameters: ``"0"``, ``"1"``, ...
        """
        return [(f"{prefix}{i}", p) for i, p in enumerate(self.parameters())]

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
        shapes = {name: len(e) if isinstance(e, list) else None for name, e in entries.items()}
        problems = state_problems(state, shapes)
        if problems:
            raise CheckpointError(f"the state does not fit {self!r}: " + "; ".join(problems))
        for name, entry in entries.items():
            if isinstance(entry, list):
                for v, x in zip(entry, state[name], strict=True):
                    v.data = float(x)
            else:
                entry.data = float(state[name])

    def architecture(self) -> dict[str, Any]:
        """What the module is, as a JSON-ready dict from which ``chainrule.save``/``load`` rebuild it."""
        raise _cannot_describe(self)


def _cannot_describe(module: object, why: str = "") -> NotImplementedError:
    # A checkpoint rebuilds a module from its type name and sizes alone, so a subclass (whose
    # __call__ may differ) or a user's own layer would come back as something else.
    return NotImplementedError(
        f"{type(module).__name__} cannot describe its architecture{why}; "
        "checkpoints support Neuron, Layer, MLP and GPT as they are built (not subclasses or changed copies)"
    )


class Neuron(Module):
    """``activation(w . x + b)``, with weights drawn uniformly from [-1, 1] as in micrograd."""

    def __init__(
        self, nin: int, nonlin: bool = True, activation: str = "relu", bias_init: str = "zero"
    ) -> None:
        nin = check_integer("Neuron", "nin", nin)
        nonlin = check_flag("Neuron", "nonlin", nonlin)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Neuron: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"Neuron: bias_init must be one of {BIAS_INITS}, got {bias_init!r}")
        self.w: list[Value] = [Parameter(random.uniform(-1, 1)) for _ in range(nin)]
        # micrograd starts the bias at 0; the lecture draws it after the weights, like them.
        self.b = Parameter(random.uniform(-1, 1) if bias_init == "uniform" else 0.0)
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

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [(f"{prefix}w", self.w), (f"{prefix}b", self.b)]

    def architecture(self) -> dict[str, Any]:
        """The neuron's size and activation, for checkpoints.

        >>> Neuron(3, nonlin=False).architecture()
        {'type': 'Neuron', 'nin': 3, 'nonlin': False, 'activation': 'linear'}
        """
        if type(self) is not Neuron:
            raise _cannot_describe(self)
        return {"type": "Neuron", "nin": len(self.w), "nonlin": self.nonlin, "activation": self.activation}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.w)}, activation={self.activation!r})"


class Layer(Module):
    """``nout`` neurons that share the same inputs."""

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        nout = check_integer("Layer", "nout", nout)
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]
        self.pack_parameters()

    def outputs(self, x: Value | float | Sequence[Value | float]) -> list[Value]:
        """The outputs as a list, even when there is only one."""
        return [n(x) for n in self.neurons]

    # A Value, or a list of them for several outputs. The Any (typeshed's way for a type that
    # depends on the arguments' values) leaves the caller, who knows which, free of narrowing it.
    def __call__(self, x: Value | float | Sequence[Value | float]) -> Value | Any:
        out = self.outputs(x)
        return out[0] if len(out) == 1 else out  # micrograd's convention, which MLP relies on

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [
            entry for i, n in enumerate(self.neurons) for entry in n.state_entries(f"{prefix}neurons.{i}.")
        ]

    def architecture(self) -> dict[str, Any]:
        """The layer's sizes and activation, for checkpoints.

        >>> Layer(3, 2, activation="tanh").architecture()
        {'type': 'Layer', 'nin': 3, 'nout': 2, 'nonlin': True, 'activation': 'tanh'}
        """
        if type(self) is not Layer or not self.neurons:
            raise _cannot_describe(self)
        # Layer(nin, nout, ...) builds every neuron with the same arguments; a checkpoint can
        # only rebuild a layer whose neurons (which a user may have replaced) still agree.
        neurons = [_described(n, f"neurons[{i}]") for i, n in enumerate(self.neurons)]
        if any(n != neurons[0] for n in neurons):
            raise _cannot_describe(self, " (its neurons differ in size or activation)")
        n = neurons[0]
        return {
            "type": "Layer",
            "nin": n["nin"],
            "nout": len(neurons),
            "nonlin": n["nonlin"],
            "activation": n["activation"],
        }

    def __repr__(self) -> str:
        n = self.neurons[0] if self.neurons else None
        if not isinstance(n, Neuron):  # a layer whose neurons a user replaced
            return f"{type(self).__name__}(neurons={self.neurons!r})"
        return f"{type(self).__name__}({len(n.w)}, {len(self.neurons)}, activation={n.activation!r})"


def _described(module: object, where: str) -> dict[str, Any]:
    """``module.architecture()``, with an error that says where in its container it sits."""
    if not isinstance(module, Module):
        raise NotImplementedError(f"{where} is a {type(module).__name__}, not a chainrule.nn Module")
    try:
        return module.architecture()
    except NotImplementedError as error:
        raise NotImplementedError(f"{where}: {error}") from None


class MLP(Module):
    """A multi-layer perceptron: every layer but the last has the activation; the last is linear.

    ``linear_output=False`` puts the activation on the last layer too, and ``bias_init="uniform"``
    draws each bias from [-1, 1] after its neuron's weights instead of starting it at 0. Together
    they build the network of the backpropagation lecture, weight for weight:

    >>> random.seed(1337)
    >>> lecture = MLP(3, [4, 4, 1], activation="tanh", linear_output=False, bias_init="uniform")
    >>> lecture([2.0, 3.0, -1.0]).op      # tanh on the output too, so it lies in (-1, 1)
    'tanh'
    """

    def __init__(
        self,
        nin: int,
        nouts: list[int],
        activation: str = "relu",
        *,
        linear_output: bool = True,
        bias_init: str = "zero",
    ) -> None:
        nin = check_integer("MLP", "nin", nin)
        nouts = _layer_sizes(nouts)
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

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [
            entry
            for i, layer in enumerate(self.layers)
            for entry in layer.state_entries(f"{prefix}layers.{i}.")
        ]

    def architecture(self) -> dict[str, Any]:
        """The network's sizes and activation, for checkpoints.

        >>> MLP(2, [16, 16, 1]).architecture()
        {'type': 'MLP', 'nin': 2, 'nouts': [16, 16, 1], 'activation': 'relu'}
        """
        if type(self) is not MLP or not self.layers:
            raise _cannot_describe(self)
        layers = [_described(layer, f"layers[{i}]") for i, layer in enumerate(self.layers)]
        nin, nouts = layers[0]["nin"], [layer["nout"] for layer in layers]
        # A checkpoint keeps only (nin, nouts, activation), so the layers must be exactly the
        # ones MLP(nin, nouts, activation) builds: sizes that chain, the activation on every
        # hidden layer and a linear last layer. A user may have replaced or added layers.
        sizes, last = [nin] + nouts, len(nouts) - 1
        built = [
            {
                "type": "Layer",
                "nin": sizes[i],
                "nout": sizes[i + 1],
                "nonlin": i != last or not self.linear_output,
                "activation": self.activation if i != last or not self.linear_output else "linear",
            }
            for i in range(len(nouts))
        ]
        if layers != built:
            raise _cannot_describe(self, f" (its layers are not the ones MLP({nin}, {nouts}) builds)")
        architecture = {"type": "MLP", "nin": nin, "nouts": nouts, "activation": self.activation}
        if not self.linear_output:  # left out by default, so older checkpoints read the same
            architecture["linear_output"] = False
        return architecture

    def __repr__(self) -> str:
        try:
            architecture = self.architecture()
        except NotImplementedError:  # changed or custom layers: show them all
            return f"{type(self).__name__}(layers={self.layers!r})"
        nin, nouts = architecture["nin"], architecture["nouts"]
        last = "" if self.linear_output else ", linear_output=False"
        return f"MLP({nin}, {nouts}, activation={self.activation!r}{last})"


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
    return [[Parameter(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


def _check_length(where: str, x: Iterable[Value | float], n: int) -> list[Value | float]:
    x = list(x)
    if len(x) != n:
        raise ValueError(f"{where}: expected a vector of {n} numbers, got {len(x)}")
    return x


def _rows_entries(prefix: str, rows: list[list[Value]]) -> list[tuple[str, Value | list[Value]]]:
    """A weight matrix's checkpoint entries: one list of numbers per row, ``weight.0``, ``weight.1``..."""
    return [(f"{prefix}weight.{i}", row) for i, row in enumerate(rows)]


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

    def __call__(self, index: int | Value) -> list[Value]:
        return take(self.weight, index)

    def parameters(self) -> list[Value]:
        return [p for row in self.weight for p in row]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return _rows_entries(prefix, self.weight)

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
        self.bias: list[Value] | None = (
            [Parameter(0.0) for _ in range(self.nout)] if check_flag("Linear", "bias", bias) else None
        )
        self.pack_parameters()

    def __call__(self, x: Iterable[Value | float]) -> list[Value]:
        x = _check_length("Linear", x, self.nin)
        biases = self.bias if self.bias is not None else [0.0] * self.nout
        return [dot(row, x, b) for row, b in zip(self.weight, biases)]

    def parameters(self) -> list[Value]:
        return [p for row in self.weight for p in row] + (self.bias or [])

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        entries = _rows_entries(prefix, self.weight)
        return entries + ([(f"{prefix}bias", self.bias)] if self.bias is not None else [])

    def __repr__(self) -> str:
        return f"Linear({self.nin}, {self.nout}, bias={self.bias is not None})"


class RMSNorm(Module):
    """Scale a vector to a root-mean-square of 1: ``x * (mean(x^2) + eps) ** -0.5``.

    As in the GPT scripts it has no learned gain, so no parameters.

    >>> norm = RMSNorm(2)
    >>> [round(v.data, 4) for v in norm([Value(3.0), Value(-4.0)])]      # rms of (3, -4) is 3.5355
    [0.8485, -1.1314]
    """

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

    def _layers(self) -> list[tuple[str, Linear]]:
        return [("query", self.query), ("key", self.key), ("value", self.value), ("out", self.out)]

    def parameters(self) -> list[Value]:
        return [p for _, layer in self._layers() for p in layer.parameters()]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [e for name, layer in self._layers() for e in layer.state_entries(f"{prefix}{name}.")]

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

    def parameters(self) -> list[Value]:
        return self.attention.parameters() + self.mlp_up.parameters() + self.mlp_down.parameters()

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return (
            self.attention.state_entries(f"{prefix}attention.")
            + self.mlp_up.state_entries(f"{prefix}mlp_up.")
            + self.mlp_down.state_entries(f"{prefix}mlp_down.")
        )

    def __repr__(self) -> str:
        return f"Block({self.attention.n_embd}, n_head={self.attention.n_head})"
