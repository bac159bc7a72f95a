"""A small neural-net library on top of Value, compatible with micrograd's ``nn``.

>>> import random; random.seed(0)
>>> from chainrule.nn import MLP
>>> model = MLP(2, [4, 1])
>>> out = model([1.0, -2.0])      # one output, so a single Value
>>> len(model.parameters())
17
"""

from __future__ import annotations

import numbers
import random

from ._checks import check_flag, check_integer
from .engine import Value, dot

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
BIAS_INITS = ("zero", "uniform")


class Module:
    """Anything with parameters: they can be listed and their gradients reset."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0

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
        state = {}
        for name, entry in self.state_entries():
            state[name] = [v.data for v in entry] if isinstance(entry, list) else entry.data
        return state

    def load_state_dict(self, state: dict) -> None:
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
        # serialize.py imports this module (for the types a checkpoint may name), so import it here.
        from .serialize import CheckpointError, state_problems

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

    def architecture(self) -> dict:
        """What the module is, as a JSON-ready dict from which ``chainrule.save``/``load`` rebuild it."""
        raise _cannot_describe(self)


def _cannot_describe(module, why: str = "") -> NotImplementedError:
    # A checkpoint rebuilds a module from its type name and sizes alone, so a subclass (whose
    # __call__ may differ) or a user's own layer would come back as something else.
    return NotImplementedError(
        f"{type(module).__name__} cannot describe its architecture{why}; "
        "checkpoints support Neuron, Layer and MLP as they are built (not subclasses or changed copies)"
    )


class Neuron(Module):
    """``activation(w . x + b)``, with weights drawn uniformly from [-1, 1] as in micrograd."""

    def __init__(self, nin: int, nonlin: bool = True, activation: str = "relu", bias_init: str = "zero"):
        nin = check_integer("Neuron", "nin", nin)
        nonlin = check_flag("Neuron", "nonlin", nonlin)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Neuron: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"Neuron: bias_init must be one of {BIAS_INITS}, got {bias_init!r}")
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        # micrograd starts the bias at 0; the lecture draws it after the weights, like them.
        self.b = Value(random.uniform(-1, 1) if bias_init == "uniform" else 0.0)
        self.nonlin = nonlin
        self.activation = activation if nonlin else "linear"

    def __call__(self, x):
        if isinstance(x, (Value, numbers.Real)):  # a single input, e.g. from a one-output layer
            x = [x]
        if len(x) != len(self.w):
            raise ValueError(f"Neuron: expected {len(self.w)} inputs, got {len(x)}")
        act = dot(self.w, x, self.b)
        if self.activation == "linear":
            return act
        return getattr(act, self.activation)()

    def parameters(self):
        return self.w + [self.b]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [(f"{prefix}w", self.w), (f"{prefix}b", self.b)]

    def architecture(self) -> dict:
        """The neuron's size and activation, for checkpoints.

        >>> Neuron(3, nonlin=False).architecture()
        {'type': 'Neuron', 'nin': 3, 'nonlin': False, 'activation': 'linear'}
        """
        if type(self) is not Neuron:
            raise _cannot_describe(self)
        return {"type": "Neuron", "nin": len(self.w), "nonlin": self.nonlin, "activation": self.activation}

    def __repr__(self):
        return f"{type(self).__name__}({len(self.w)}, activation={self.activation!r})"


class Layer(Module):
    """``nout`` neurons that share the same inputs."""

    def __init__(self, nin: int, nout: int, **kwargs):
        nout = check_integer("Layer", "nout", nout)
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def outputs(self, x) -> list[Value]:
        """The outputs as a list, even when there is only one."""
        return [n(x) for n in self.neurons]

    def __call__(self, x):
        out = self.outputs(x)
        return out[0] if len(out) == 1 else out  # micrograd's convention, which MLP relies on

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [
            entry for i, n in enumerate(self.neurons) for entry in n.state_entries(f"{prefix}neurons.{i}.")
        ]

    def architecture(self) -> dict:
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

    def __repr__(self):
        n = self.neurons[0] if self.neurons else None
        if not isinstance(n, Neuron):  # a layer whose neurons a user replaced
            return f"{type(self).__name__}(neurons={self.neurons!r})"
        return f"{type(self).__name__}({len(n.w)}, {len(self.neurons)}, activation={n.activation!r})"


def _described(module, where: str) -> dict:
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
    ):
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

    def __call__(self, x):
        # Every layer through its own __call__, as in micrograd and PyTorch, so a subclass that
        # overrides it, or a user's layer put into ``layers``, takes part. A layer with one
        # output returns a single Value, which the next layer's neurons take as their input.
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def state_entries(self, prefix: str = "") -> list[tuple[str, Value | list[Value]]]:
        return [
            entry
            for i, layer in enumerate(self.layers)
            for entry in layer.state_entries(f"{prefix}layers.{i}.")
        ]

    def architecture(self) -> dict:
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

    def __repr__(self):
        try:
            architecture = self.architecture()
        except NotImplementedError:  # changed or custom layers: show them all
            return f"{type(self).__name__}(layers={self.layers!r})"
        nin, nouts = architecture["nin"], architecture["nouts"]
        last = "" if self.linear_output else ", linear_output=False"
        return f"MLP({nin}, {nouts}, activation={self.activation!r}{last})"


def _layer_sizes(nouts) -> list[int]:
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
