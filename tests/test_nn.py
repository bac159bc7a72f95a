"""chainrule.nn: parameter counts, activations against hand formulas, bad arguments, reprs."""

import math
import random

import pytest

from chainrule import Value
from chainrule.gpt import GPT
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


# A size that is not an integer at all is a TypeError (as everywhere in chainrule: see
# chainrule._checks); an integer out of range is a ValueError. A bool is not a size.
@pytest.mark.parametrize("nin", [0, -1])
def test_nin_out_of_range_is_a_value_error(nin):
    with pytest.raises(ValueError, match="nin"):
        Neuron(nin)


@pytest.mark.parametrize("nin", [2.5, "3", None, True, False])
def test_nin_that_is_not_an_integer_is_a_type_error(nin):
    with pytest.raises(TypeError, match="nin"):
        Neuron(nin)


@pytest.mark.parametrize("nout", [0, -2])
def test_nout_out_of_range_is_a_value_error(nout):
    with pytest.raises(ValueError, match="nout"):
        Layer(2, nout)


@pytest.mark.parametrize("nout", [1.5, "4", True])
def test_nout_that_is_not_an_integer_is_a_type_error(nout):
    with pytest.raises(TypeError, match="nout"):
        Layer(2, nout)


@pytest.mark.parametrize("nouts", [3, "16", None, 2.0])
def test_nouts_that_is_not_a_list_is_a_type_error(nouts):
    with pytest.raises(TypeError, match="nouts"):
        MLP(2, nouts)


@pytest.mark.parametrize("nonlin", ["False", None, 2, 0.5])
def test_nonlin_that_is_not_true_or_false_is_a_type_error(nonlin):
    # "False" is a non-empty string, so it would silently mean True
    with pytest.raises(TypeError, match="nonlin"):
        Neuron(2, nonlin=nonlin)


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


# ---------------------------------------------------------------------------------------------
# Composition goes through __call__ (as in micrograd and PyTorch), so custom modules take part.


class Doubled(Layer):
    """A Layer whose outputs are twice a plain Layer's: it overrides only __call__."""

    def __call__(self, x):
        out = super().__call__(x)
        return [2 * v for v in out] if isinstance(out, list) else 2 * out


class Scale(Module):
    """A user-written layer with one parameter that multiplies every input by it."""

    def __init__(self, s):
        self.s = Value(s)

    def __call__(self, x):
        xs = x if isinstance(x, list) else [x]
        out = [self.s * v for v in xs]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [self.s]


def _plain_outputs(model, x):
    """The outputs of a plain MLP's layers applied in turn, from the weights by hand (floats)."""
    for layer in model.layers:
        x = [sum(w.data * xi for w, xi in zip(n.w, x)) + n.b.data for n in layer.neurons]
        x = [max(0.0, v) if n.nonlin else v for v, n in zip(x, layer.neurons)]
    return x


def test_mlp_runs_a_layer_subclass_that_overrides_call():
    random.seed(7)
    model = MLP(2, [3, 2])
    expected = _plain_outputs(model, [0.5, -1.5])
    plain = model.layers[1]
    doubled = Doubled.__new__(Doubled)
    doubled.neurons = plain.neurons  # the same weights, and __call__ doubles
    model.layers[1] = doubled
    assert [y.data for y in model([0.5, -1.5])] == pytest.approx([2 * v for v in expected], rel=1e-14)


def test_mlp_runs_a_user_layer_appended_to_its_layers():
    random.seed(8)
    model = MLP(2, [4, 1])
    x = [1.5, -0.5]
    (expected,) = _plain_outputs(model, x)
    scale = Scale(3.0)
    model.layers.append(scale)
    out = model(x)
    assert isinstance(out, Value)  # one output stays a single Value, as in micrograd
    assert out.data == pytest.approx(3.0 * expected, rel=1e-14)
    out.backward()
    assert scale.s.grad == pytest.approx(expected, rel=1e-14)  # d(s * y)/ds = y
    # the appended layer's parameter is the model's too, and has a name in the state
    assert model.parameters()[-1] is scale.s
    assert len(model.parameters()) == 4 * 3 + 5 + 1
    state = model.state_dict()
    assert state["layers.2.0"] == 3.0
    model.load_state_dict({**state, "layers.2.0": 5.0})
    assert scale.s.data == 5.0


def test_a_neuron_subclass_that_overrides_call_runs_inside_a_layer_and_an_mlp():
    class Negated(Neuron):
        def __call__(self, x):
            return -super().__call__(x)

    random.seed(9)
    model = MLP(2, [2, 1])
    expected = _plain_outputs(model, [1.0, 2.0])[0]
    last = model.layers[1].neurons[0]
    negated = Negated(2, nonlin=False)
    negated.w, negated.b = last.w, last.b
    model.layers[1].neurons[0] = negated
    assert model([1.0, 2.0]).data == pytest.approx(-expected, rel=1e-14)


def test_mlp_is_its_layers_called_in_turn():
    random.seed(10)
    for nouts in ([3, 1], [1, 3, 1], [4, 4, 2], [1]):
        model = MLP(3, nouts)
        x = [0.2, -0.9, 1.1]
        h = x
        for layer in model.layers:
            h = layer(h)  # a one-output layer hands a single Value on, which a Neuron accepts
        out = model(x)
        assert type(out) is type(h)
        outs, hs = (out, h) if isinstance(out, list) else ([out], [h])
        assert [v.data for v in outs] == [v.data for v in hs]
        assert [v.data for v in outs] == pytest.approx(_plain_outputs(model, x), rel=1e-14)


def test_custom_layers_have_a_readable_repr_and_a_clear_save_error(tmp_path):
    from chainrule import save

    random.seed(11)
    model = MLP(2, [3, 1])
    model.layers.append(Scale(2.0))
    text = repr(model)
    assert "Scale" in text and "Layer(2, 3" in text
    with pytest.raises(NotImplementedError, match="Scale"):
        model.architecture()
    with pytest.raises(TypeError, match="Scale"):
        save(model, tmp_path / "model.json")
    assert not (tmp_path / "model.json").exists()


def _replace_layer(model, i, layer):
    model.layers[i] = layer
    return model


def _append_layer(model, layer):
    model.layers.append(layer)
    return model


@pytest.mark.parametrize(
    "changed",
    [
        # each of these computes something MLP(nin, nouts, activation) would not rebuild
        lambda: _replace_layer(MLP(2, [3, 1]), 1, Doubled(3, 1, nonlin=False)),
        lambda: _replace_layer(MLP(2, [3, 1]), 1, Layer(3, 1)),  # the last layer is not linear
        lambda: _replace_layer(MLP(2, [3, 1]), 0, Layer(2, 3, activation="tanh")),
        lambda: _replace_layer(MLP(2, [3, 1]), 1, Layer(4, 1, nonlin=False)),  # sizes do not chain
        lambda: _append_layer(MLP(2, [3, 1]), Layer(1, 2, nonlin=False)),
    ],
)
def test_an_mlp_whose_layers_were_changed_cannot_be_saved_as_a_plain_one(changed, tmp_path):
    from chainrule import save

    random.seed(12)
    model = changed()
    with pytest.raises(NotImplementedError):
        model.architecture()
    with pytest.raises(TypeError, match="save"):
        save(model, tmp_path / "model.json")
    assert "MLP(" in repr(model)


def test_subclasses_cannot_be_saved_as_their_base_class(tmp_path):
    from chainrule import save

    class Wide(MLP):
        def __call__(self, x):
            return super().__call__(x) * 10

    for module in (Wide(2, [1]), Doubled(2, 2), Scale(1.0)):
        with pytest.raises(NotImplementedError, match=type(module).__name__):
            module.architecture()
        with pytest.raises(TypeError):
            save(module, tmp_path / "m.json")


def test_an_empty_or_custom_mlp_still_has_a_repr_and_parameters():
    model = MLP(2, [1])
    model.layers = []
    assert repr(model) == "MLP(layers=[])"
    assert model.parameters() == []
    assert model([1.0, 2.0]) == [1.0, 2.0]  # no layers: the input, as micrograd's MLP does


def test_the_lecture_network_round_trips_through_a_checkpoint(tmp_path):
    import random

    import chainrule

    random.seed(3)
    model = MLP(3, [4, 4, 1], activation="tanh", linear_output=False, bias_init="uniform")
    assert all(n.b.data != 0.0 for layer in model.layers for n in layer.neurons)
    assert model.architecture()["linear_output"] is False
    path = tmp_path / "lecture.json"
    chainrule.save(model, path)
    loaded = chainrule.load(path)
    assert repr(loaded) == repr(model) == "MLP(3, [4, 4, 1], activation='tanh', linear_output=False)"
    for x in ([2.0, 3.0, -1.0], [0.5, 1.0, 1.0]):
        assert loaded(x).data == model(x).data and loaded(x).op == "tanh"


def test_a_default_mlp_architecture_has_no_linear_output_key():
    assert "linear_output" not in MLP(2, [3, 1]).architecture()


@pytest.mark.parametrize("bad", ["normal", 0, None])
def test_a_bad_bias_init_is_refused(bad):
    with pytest.raises(ValueError, match="bias_init"):
        MLP(2, [3, 1], bias_init=bad)


# ---------------------------------------------------------------------------------------------
# Parameters found by walking the attributes, as torch.nn.Module finds them.


class Affine(Module):
    """A user's module that defines only __init__ and __call__: a weight vector, a scale, a bias."""

    def __init__(self, n):
        self.w = [Value(float(i + 1)) for i in range(n)]
        self.sizes = [n, 1]  # numbers, not parameters
        self.name = "affine"
        self.scale = Value(2.0)
        self.bias = Value(0.5)

    def __call__(self, x):
        return self.scale * sum((w * xi for w, xi in zip(self.w, x)), self.bias)


class Stack(Module):
    """Nested containers: a list of modules, a tuple, a list of lists of Values, a sub-module."""

    def __init__(self):
        self.first = Affine(2)
        self.rest = [Affine(1), Affine(3)]
        self.pair = (Value(7.0), Value(8.0))
        self.grid = [[Value(1.0), Value(2.0)], [Value(3.0)]]
        self.nothing = None


def test_a_user_module_gets_its_parameters_by_walking_its_attributes():
    a = Affine(3)
    assert a.parameters() == [*a.w, a.scale, a.bias]  # the order the attributes were set in
    assert [name for name, _ in a.named_parameters()] == ["w.0", "w.1", "w.2", "scale", "bias"]
    assert list(a.state_dict()) == ["w", "scale", "bias"]
    out = a([1.0, 1.0, 1.0])
    out.backward()
    assert a.scale.grad == 6.5 and [w.grad for w in a.w] == [2.0, 2.0, 2.0]
    a.zero_grad()
    assert all(p.grad == 0.0 for p in a.parameters())


def test_nested_containers_are_walked_in_order_with_dotted_names():
    s = Stack()
    expected = [
        *s.first.parameters(),
        *s.rest[0].parameters(),
        *s.rest[1].parameters(),
        *s.pair,
        *s.grid[0],
        *s.grid[1],
    ]
    assert s.parameters() == expected and len(expected) == 4 + 3 + 5 + 2 + 3
    assert list(s.state_dict()) == [
        "first.w", "first.scale", "first.bias",
        "rest.0.w", "rest.0.scale", "rest.0.bias",
        "rest.1.w", "rest.1.scale", "rest.1.bias",
        "pair", "grid.0", "grid.1",
    ]  # fmt: skip
    assert dict(s.named_parameters())["grid.1.0"] is s.grid[1][0]
    state = s.state_dict()
    state["rest.1.w"] = [9.0, 9.5, 10.0]
    state["pair"] = [0.25, 0.75]
    Stack().load_state_dict(state)  # a fresh one takes it: the names depend on the structure only
    s.load_state_dict(state)
    assert [w.data for w in s.rest[1].w] == [9.0, 9.5, 10.0] and s.pair[1].data == 0.75


def _stack_by_hand(s):
    """A Stack's parameters, listed by hand in its attributes' order."""
    first = s.first.parameters() if "first" in vars(s) else []
    rest = [p for module in s.rest for p in module.parameters()]
    extra = [s.extra] if "extra" in vars(s) else []
    return [*first, *rest, *s.pair, *s.grid[0], *s.grid[1], *extra]


def test_the_walk_sees_every_change_to_attributes_and_lists():
    s = Stack()
    assert s.parameters() == _stack_by_hand(s)
    changes = [
        lambda: s.rest.append(Affine(1)),  # a list grows
        lambda: s.rest.__setitem__(0, Affine(2)),  # an item is replaced, the length is the same
        lambda: s.first.w.__setitem__(1, Value(5.0)),  # a weight inside a weight vector
        lambda: setattr(s, "extra", Value(1.0)),  # a new attribute
        lambda: delattr(s, "first"),  # a deleted one
        lambda: s.grid[1].append(Value(4.0)),  # a list inside a list
        lambda: setattr(s.rest[1], "scale", Value(3.0)),  # an attribute of a module inside
    ]
    for change in changes:
        change()
        assert s.parameters() == _stack_by_hand(s)
        assert [p for _, p in s.named_parameters()] == _stack_by_hand(s)
    assert s.parameters() is not s.parameters()  # a new list every time: changing it changes nothing
    s.parameters().clear()
    assert s.parameters() == _stack_by_hand(s)


def test_a_module_that_holds_its_parent_is_walked_once():
    parent = Affine(1)
    parent.child = Affine(1)
    parent.child.parent = parent  # a back reference must not loop
    child = parent.child
    assert parent.parameters() == [*parent.w, parent.scale, parent.bias, *child.w, child.scale, child.bias]
    assert child.parameters() == [*child.w, child.scale, child.bias, *parent.w, parent.scale, parent.bias]


def test_a_numpy_array_attribute_is_no_parameter_and_no_trouble():
    np = pytest.importorskip("numpy")
    a = Affine(2)
    a.table = [np.zeros(3), np.ones(2)]
    assert len(a.parameters()) == 4
    a.table[0] = np.zeros(3)  # a different array: comparing it with the old one is ambiguous
    assert len(a.parameters()) == 4


def test_copies_and_pickles_walk_their_own_parameters():
    import copy
    import pickle

    random.seed(13)
    model = MLP(2, [3, 1])
    model.parameters()  # walked (and kept) before the copy
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        ours, theirs = model.parameters(), clone.parameters()
        assert [p.data for p in ours] == [p.data for p in theirs]
        assert not {id(p) for p in ours} & {id(p) for p in theirs}
        assert clone.state_dict() == model.state_dict()


def test_parameters_keep_the_hand_written_orders():
    # The order every module listed by hand before the walk (micrograd's for Neuron, Layer, MLP).
    random.seed(14)
    model = MLP(3, [4, 2])
    by_hand = [p for layer in model.layers for n in layer.neurons for p in n.w + [n.b]]
    assert model.parameters() == by_hand
    assert model.pack_parameters().members == tuple(by_hand)


# ---------------------------------------------------------------------------------------------
# The checkpoint registry


class Gain(Module, checkpoint=True):
    """A user's module registered for checkpoints: its arguments are read from its attributes."""

    arguments = ("n", "start")
    optional_arguments = {"start": 1.0}

    def __init__(self, n, start=1.0):
        self.n, self.start = n, start
        self.g = [Value(start) for _ in range(n)]

    def __call__(self, x):
        return [g * xi for g, xi in zip(self.g, x)]


def test_a_registered_user_module_round_trips_through_a_checkpoint(tmp_path):
    import chainrule

    gain = Gain(3)
    gain.g[1].data = 4.0
    assert gain.architecture() == {"type": "Gain", "n": 3}  # start left out: it has its default
    assert Gain(2, start=0.5).architecture() == {"type": "Gain", "n": 2, "start": 0.5}
    chainrule.save(gain, tmp_path / "gain.json")
    loaded = chainrule.load(tmp_path / "gain.json")
    assert type(loaded) is Gain and [g.data for g in loaded.g] == [1.0, 4.0, 1.0]
    gain.g.append(Value(1.0))  # no longer what Gain(3) builds
    with pytest.raises(NotImplementedError, match=r"Gain cannot describe its architecture \(g is not what"):
        gain.architecture()


def test_two_module_types_cannot_share_a_checkpoint_name():
    with pytest.raises(ValueError, match="'Gain' is already registered"):

        class Gain(Module, checkpoint=True):
            pass


def test_a_changed_mlp_says_which_part_differs():
    random.seed(15)
    model = MLP(2, [3, 1])
    model.layers[1].neurons[0] = Neuron(3, activation="tanh")
    with pytest.raises(NotImplementedError, match=r"layers\.1\.neurons\.0, a Neuron, is not what MLP\("):
        model.architecture()
    model = MLP(2, [3, 1])
    model.layers[0].neurons[2].w.append(Value(0.0))
    with pytest.raises(NotImplementedError, match=r"layers\.0\.neurons\.2\.w is not what MLP\("):
        model.architecture()


def test_a_parent_takes_its_parts_walks_with_the_same_result_as_walking_them():
    random.seed(16)
    fresh, warmed = Stack(), Stack()
    for part in [warmed.first, *warmed.rest]:
        part.parameters()  # each part walked (and its walk kept) before the parent
    warmed.rest[1].w[0] = Value(9.0)  # one part changed since: walked again
    fresh.rest[1].w[0] = Value(9.0)
    assert list(warmed.state_dict()) == list(fresh.state_dict())
    assert warmed.parameters() == _stack_by_hand(warmed)
    gpt_parts = GPT(5, n_layer=2, n_head=2, n_embd=4, block_size=3)
    names = [name for name, _ in gpt_parts.named_parameters()]
    assert names[:2] == ["token_embedding.weight.0.0", "token_embedding.weight.0.1"]
    assert "blocks.1.attention.out.weight.3.3" in names and len(names) == len(gpt_parts.parameters())


def test_describing_a_module_draws_no_random_numbers_and_builds_no_weights(monkeypatch):
    from chainrule import nn

    random.seed(17)
    model = MLP(2, [3, 1], activation="tanh")

    def refuse(*args, **kwargs):
        raise AssertionError("a Parameter was built")

    monkeypatch.setattr(nn, "Parameter", refuse)  # the skeleton architecture() compares with has none
    random.seed(5)
    expected = random.random()
    random.seed(5)
    assert model.architecture()["nouts"] == [3, 1]
    assert repr(model) == "MLP(2, [3, 1], activation='tanh')"
    assert random.random() == expected
