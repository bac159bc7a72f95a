"""chainrule.nn: parameter counts, activations against hand formulas, bad arguments, reprs."""

import math
import random

import pytest

from chainrule import Value
from chainrule.nn import MLP, Layer, Module, Neuron


def _neuron(weights, bias, activation="relu", nonlin=True):
    """A Neuron with the given weights and bias instead of random ones."""
    n = Neuron(len(weights), nonlin=nonlin, activation=activation)
    for w, x in zip(n.w, weights):
        w.data = x
    n.b.data = bias
    return n


# ---------------------------------------------------------------------------------------------
# Parameters


def test_parameter_counts():
    # a neuron with n inputs has n weights and a bias; a layer has nout such neurons
    assert len(Neuron(3).parameters()) == 4
    assert len(Layer(3, 4).parameters()) == 4 * 4
    # MLP(2, [16, 16, 1]): 16 * (2 + 1) + 16 * (16 + 1) + 1 * (16 + 1) = 48 + 272 + 17 = 337
    assert len(MLP(2, [16, 16, 1]).parameters()) == 337
    assert Module().parameters() == []


def test_parameters_are_distinct_values_and_bias_starts_at_zero():
    random.seed(0)
    model = MLP(3, [4, 2])
    params = model.parameters()
    assert len(set(params)) == len(params)
    for layer in model.layers:
        for n in layer.neurons:
            assert n.b.data == 0.0
            assert all(-1.0 <= w.data <= 1.0 for w in n.w)


def test_weights_are_drawn_from_the_global_random_module():
    random.seed(42)
    a = [p.data for p in MLP(2, [3, 1]).parameters()]
    random.seed(42)
    b = [p.data for p in MLP(2, [3, 1]).parameters()]
    assert a == b


def test_zero_grad_resets_parameters():
    random.seed(1)
    layer = Layer(2, 3)
    for out in layer([1.0, 2.0]):
        out.backward()
    layer.zero_grad()
    assert all(p.grad == 0.0 for p in layer.parameters())


# ---------------------------------------------------------------------------------------------
# Activations, against the formulas written out by hand.

W, B, X = [0.5, -0.25, 0.75], 0.1, [1.0, 2.0, -0.4]
Z = 0.5 * 1.0 + -0.25 * 2.0 + 0.75 * -0.4 + 0.1  # w . x + b = -0.2


@pytest.mark.parametrize(
    "activation, formula, slope",
    [
        ("relu", lambda z: max(0.0, z), lambda z: 1.0 if z > 0 else 0.0),
        ("tanh", math.tanh, lambda z: 1 - math.tanh(z) ** 2),
        ("sigmoid", lambda z: 1 / (1 + math.exp(-z)), lambda z: math.exp(-z) / (1 + math.exp(-z)) ** 2),
        ("linear", lambda z: z, lambda z: 1.0),
    ],
)
@pytest.mark.parametrize("bias", [B, B + 1.0], ids=["z<0", "z>0"])
def test_neuron_activation_matches_its_formula(activation, formula, slope, bias):
    z = Z - B + bias
    n = _neuron(W, bias, activation)
    assert n.activation == activation
    out = n([Value(x) for x in X])
    assert out.data == pytest.approx(formula(z), rel=1e-14, abs=1e-15)
    out.backward()
    # d out / d w_i = act'(z) * x_i,  d out / d b = act'(z)
    assert [w.grad for w in n.w] == pytest.approx([slope(z) * x for x in X], rel=1e-14, abs=1e-15)
    assert n.b.grad == pytest.approx(slope(z), rel=1e-14, abs=1e-15)


def test_default_activation_is_relu_and_nonlin_false_is_linear():
    assert Neuron(2).activation == "relu"
    n = _neuron([1.0, 1.0], 0.0, nonlin=False)
    assert n.activation == "linear"
    assert n([-1.0, -2.0]).data == -3.0  # no relu: the negative sum comes through


def test_neuron_takes_numbers_values_and_a_single_scalar():
    n = _neuron([2.0], 1.0, "linear")
    assert n([3.0]).data == 7.0
    assert n(3.0).data == 7.0
    assert n(Value(3.0)).data == 7.0


def test_mlp_hidden_layers_use_the_activation_and_the_last_layer_is_linear():
    random.seed(5)
    model = MLP(2, [3, 2], activation="tanh")
    assert all(n.activation == "tanh" for n in model.layers[0].neurons)
    assert all(n.activation == "linear" and not n.nonlin for n in model.layers[1].neurons)
    # the MLP is its layers applied in turn, computed here by hand from the weights
    x = [0.3, -0.7]
    hidden = [
        math.tanh(sum(w.data * xi for w, xi in zip(n.w, x)) + n.b.data) for n in model.layers[0].neurons
    ]
    expected = [sum(w.data * h for w, h in zip(n.w, hidden)) + n.b.data for n in model.layers[1].neurons]
    assert [y.data for y in model(x)] == pytest.approx(expected, rel=1e-14)


def test_layer_and_mlp_return_a_single_value_for_one_output():
    random.seed(2)
    assert isinstance(Layer(2, 1)([1.0, 2.0]), Value)
    assert isinstance(Layer(2, 1).outputs([1.0, 2.0]), list)
    assert len(Layer(2, 3)([1.0, 2.0])) == 3
    assert isinstance(MLP(2, [4, 1])([1.0, 2.0]), Value)
    assert len(MLP(2, [4, 3])([1.0, 2.0])) == 3


def test_mlp_with_a_one_neuron_hidden_layer_works():
    random.seed(3)
    model = MLP(2, [16, 1, 1])
    out = model([0.5, -0.5])
    assert isinstance(out, Value)
    out.backward()
    # 16 * 3 + 1 * 17 + 1 * 2 = 67 parameters
    assert len(model.parameters()) == 67


# ---------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize("nin", [0, -1, 2.5, "3", None, True])
def test_bad_nin_is_a_value_error(nin):
    with pytest.raises(ValueError, match="nin"):
        Neuron(nin)


@pytest.mark.parametrize("nout", [0, -2, 1.5, "4"])
def test_bad_nout_is_a_value_error(nout):
    with pytest.raises(ValueError, match="nout"):
        Layer(2, nout)


@pytest.mark.parametrize("activation", ["softmax", "ReLU", "", None])
def test_unknown_activation_is_a_value_error(activation):
    with pytest.raises(ValueError, match="activation"):
        Neuron(2, activation=activation)
    with pytest.raises(ValueError, match="activation"):
        MLP(2, [3, 1], activation=activation)


@pytest.mark.parametrize("nin, nouts", [(0, [3]), (2, [3, 0]), (2, [3, -1])])
def test_bad_mlp_sizes_are_value_errors(nin, nouts):
    with pytest.raises(ValueError):
        MLP(nin, nouts)


def test_mlp_without_layers_is_a_value_error():
    # MLP(2, []) has no layers: it would have no parameters and hand its input back unchanged
    # (and its repr fails). It should be refused when it is built.
    with pytest.raises(ValueError, match="nouts"):
        MLP(2, [])


@pytest.mark.parametrize("inputs", [[1.0], [1.0, 2.0, 3.0], []])
def test_wrong_number_of_inputs_is_a_value_error(inputs):
    random.seed(0)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        Neuron(2)(inputs)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        MLP(2, [3, 1])(inputs)


# ---------------------------------------------------------------------------------------------
# Reprs


def test_reprs_are_readable():
    assert repr(Neuron(3)) == "Neuron(3, activation='relu')"
    assert repr(Neuron(3, nonlin=False)) == "Neuron(3, activation='linear')"
    layer = repr(Layer(3, 4, activation="tanh"))
    assert layer.startswith("Layer(") and "3" in layer and "4" in layer and "tanh" in layer
    mlp = repr(MLP(2, [16, 16, 1]))
    assert mlp.startswith("MLP(") and "[16, 16, 1]" in mlp
