"""numpy integers are accepted wherever Python ints are, and numpy bools wherever bools are.

``np.int64(2)`` is not an ``int`` (it does not subclass it), but it is a ``numbers.Integral``,
and people get one from every array they index or list. A bool, Python's or numpy's, is still
not a size.
"""

import json
import random

import pytest

from chainrule import Value, save
from chainrule.nn import MLP, Layer, Neuron

np = pytest.importorskip("numpy")

INTEGER_TYPES = [np.int64, np.int32, np.int8, np.uint16, np.uint64]


@pytest.mark.parametrize("integer", INTEGER_TYPES)
def test_mlp_layer_and_neuron_sizes_may_be_numpy_integers(integer, tmp_path):
    random.seed(0)
    plain = [p.data for p in MLP(2, [16, 16, 1]).parameters()]
    for nin, nouts in [
        (integer(2), [16, 16, 1]),
        (2, list(np.array([16, 16, 1], dtype=integer))),
        (2, np.array([16, 16, 1], dtype=integer)),
        (integer(2), (integer(16), integer(16), integer(1))),
    ]:
        random.seed(0)
        model = MLP(nin, nouts)
        assert [p.data for p in model.parameters()] == plain  # the same network
        # the sizes come out as Python ints, so the architecture is JSON-ready and saves
        architecture = model.architecture()
        assert architecture == {"type": "MLP", "nin": 2, "nouts": [16, 16, 1], "activation": "relu"}
        assert type(architecture["nin"]) is int and all(type(n) is int for n in architecture["nouts"])
        json.dumps(architecture)
        save(model, tmp_path / "model.json")
        assert repr(model) == "MLP(2, [16, 16, 1], activation='relu')"
    assert len(Neuron(integer(3)).parameters()) == 4
    assert len(Layer(integer(3), integer(2)).parameters()) == 8


def test_numpy_bools_are_flags_but_not_sizes(tmp_path):
    linear = Neuron(2, nonlin=np.False_)
    assert linear.nonlin is False and linear.activation == "linear"
    assert Neuron(2, nonlin=np.True_).nonlin is True
    assert Layer(2, 3, nonlin=np.False_).architecture()["nonlin"] is False
    save(linear, tmp_path / "neuron.json")  # JSON has no numpy bool: it must be a plain one
    for size in (np.True_, np.False_, True):
        with pytest.raises(TypeError, match="nin"):
            Neuron(size)
        with pytest.raises(TypeError, match="nout"):
            Layer(2, size)
        with pytest.raises(TypeError, match="nouts"):
            MLP(2, [4, size])


def test_a_neuron_takes_a_single_numpy_number():
    n = Neuron(1, nonlin=False)
    n.w[0].data, n.b.data = 2.0, 1.0
    for x in (np.int64(3), np.float32(3.0), np.float64(3.0)):
        assert n(x).data == 7.0
    assert n(np.array([3.0])).data == 7.0


def test_a_numpy_scalar_is_not_a_list_of_layer_sizes():
    with pytest.raises(TypeError, match="nouts"):
        MLP(2, np.int64(3))


def test_losses_take_numpy_class_indices():
    from chainrule.losses import cross_entropy, hinge

    logits = [Value(1.0), Value(3.0), Value(-2.0)]
    expected = cross_entropy(logits, 1).data
    assert cross_entropy(logits, np.int64(1)).data == expected
    assert cross_entropy([logits, logits], np.array([1, 1])).data == pytest.approx(expected, rel=1e-15)
    assert hinge([Value(0.5)], np.array([-1])).data == 1.5
    with pytest.raises(TypeError):
        cross_entropy(logits, np.True_)  # a bool is not a class


def test_optimizer_schedule_takes_numpy_integers():
    from chainrule.optim import SGD, linear_decay

    schedule = linear_decay(1.0, 0.0, np.int64(4))
    assert [schedule(k) for k in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    p = Value(1.0)
    p.grad = 1.0
    SGD([p], lr=np.int64(1), momentum=np.float32(0.0)).step()
    assert p.data == 0.0


def test_datasets_take_numpy_integers():
    pytest.importorskip("sklearn")
    from chainrule.datasets import blobs, circles, moons

    assert moons(n_samples=np.int64(20), seed=np.uint32(1)) == moons(n_samples=20, seed=1)
    assert circles(n_samples=np.int32(20), seed=np.int64(1)) == circles(n_samples=20, seed=1)
    data = blobs(n_samples=np.int64(20), centers=np.int8(3), n_features=np.int64(2), seed=np.int64(1))
    assert data == blobs(n_samples=20, centers=3, n_features=2, seed=1)
    # centres given as an array, as scikit-learn takes them
    array_centres = blobs(n_samples=4, centers=np.array([[0, 0], [5, 5]]), cluster_std=0.0)
    assert array_centres == blobs(n_samples=4, centers=[[0, 0], [5, 5]], cluster_std=0.0)
    for bad in (np.True_, True):
        with pytest.raises(TypeError, match="n_samples"):
            moons(n_samples=bad)
        with pytest.raises(TypeError, match="seed"):
            moons(seed=bad)


def test_train_takes_numpy_integers_and_bools():
    pytest.importorskip("sklearn")
    from chainrule.training import train

    options = dict(steps=2, samples=20, seed=3, hidden=[4], batch_size=8, compile=False)
    expected = train("moons", **options).losses
    numpy_options = dict(
        steps=np.int64(2),
        samples=np.int64(20),
        seed=np.int64(3),
        hidden=np.array([4]),
        batch_size=np.int64(8),
        compile=np.False_,
    )
    assert train("moons", **numpy_options).losses == expected


def test_draw_and_grad_take_numpy_integers():
    from chainrule.functional import grad

    assert grad(lambda x, y: x * y, argnums=np.int64(1))(3.0, 4.0) == 3.0
    pytest.importorskip("graphviz")
    from chainrule import draw_dot

    x = Value(1.0)
    y = (x * 2 + 1) * 3
    assert draw_dot(y, max_nodes=np.int64(100)).source == draw_dot(y, max_nodes=100).source


def test_from_architecture_takes_numpy_integers_and_bools():
    np = pytest.importorskip("numpy")
    from chainrule.serialize import from_architecture

    layer = from_architecture(
        {"type": "Layer", "nin": np.int64(3), "nout": np.int32(2), "nonlin": np.True_, "activation": "tanh"}
    )
    assert repr(layer) == "Layer(3, 2, activation='tanh')"


def test_autograd_grad_of_a_numpy_constant_is_zero():
    np = pytest.importorskip("numpy")
    from chainrule import Value, autograd

    assert autograd.grad(np.float64(2.0), [Value(1.0)]) == [0.0]
