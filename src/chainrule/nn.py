"""A small neural-net library on top of Value, compatible with micrograd's ``nn``.

>>> import random; random.seed(0)
>>> from chainrule.nn import MLP
>>> model = MLP(2, [4, 1])
>>> out = model([1.0, -2.0])      # one output, so a single Value
>>> len(model.parameters())
17
"""

from __future__ import annotations

import random

from .engine import Value, dot

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")


class Module:
    """Anything with parameters: they can be listed and their gradients reset."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """``activation(w . x + b)``, with weights drawn uniformly from [-1, 1] as in micrograd."""

    def __init__(self, nin: int, nonlin: bool = True, activation: str = "relu"):
        if not isinstance(nin, int) or isinstance(nin, bool) or nin < 1:
            raise ValueError(f"Neuron: nin must be a positive integer, got {nin!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Neuron: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.nonlin = nonlin
        self.activation = activation if nonlin else "linear"

    def __call__(self, x):
        if isinstance(x, (Value, int, float)):  # a single input
            x = [x]
        if len(x) != len(self.w):
            raise ValueError(f"Neuron: expected {len(self.w)} inputs, got {len(x)}")
        act = dot(self.w, x, self.b)
        if self.activation == "linear":
            return act
        return getattr(act, self.activation)()

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"Neuron({len(self.w)}, activation={self.activation!r})"


class Layer(Module):
    """``nout`` neurons that share the same inputs."""

    def __init__(self, nin: int, nout: int, **kwargs):
        if not isinstance(nout, int) or isinstance(nout, bool) or nout < 1:
            raise ValueError(f"Layer: nout must be a positive integer, got {nout!r}")
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def outputs(self, x) -> list[Value]:
        """The outputs as a list, even when there is only one."""
        return [n(x) for n in self.neurons]

    def __call__(self, x):
        out = self.outputs(x)
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        n = self.neurons[0]
        return f"Layer({len(n.w)}, {len(self.neurons)}, activation={n.activation!r})"


class MLP(Module):
    """A multi-layer perceptron: every layer but the last has the activation; the last is linear."""

    def __init__(self, nin: int, nouts: list[int], activation: str = "relu"):
        sizes = [nin] + list(nouts)
        self.layers = [
            Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, activation=activation)
            for i in range(len(nouts))
        ]
        self.activation = activation

    def __call__(self, x):
        for layer in self.layers:
            x = layer.outputs(x)
        return x[0] if len(x) == 1 else x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        nin = len(self.layers[0].neurons[0].w)
        nouts = [len(layer.neurons) for layer in self.layers]
        return f"MLP({nin}, {nouts}, activation={self.activation!r})"
