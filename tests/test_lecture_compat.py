"""The backpropagation lecture's notebook cells run on chainrule and give the lecture's numbers.

The lecture that introduced micrograd builds its engine live: Values made by hand with children
and labels, gradients first set by hand, then each op's ``_backward`` closure called by hand in
reverse order, a tanh added as a user closure, and finally an ``MLP(3, [4, 4, 1])`` with tanh on
every layer trained on four examples. Each cell below is written once, as a function of the
``Value`` class, and replayed on

- ``LectureValue``: an engine written the lecture's way in this file (closures in ``_backward``,
  ``_prev`` a set, a recursive topological sort), the reference;
- ``chainrule.Value``;
- micrograd 0.1.0 itself where the cell only uses what micrograd has (``+ * **``, relu, closures).

Expected gradients are not copied from the notebook: they come from the chain rule written out
in the test, finite differences, or PyTorch (float64) when it is installed.
"""

import math
import random

import pytest

import chainrule
import chainrule.nn

# ---------------------------------------------------------------------------------------------
# The reference: an engine written the way the lecture writes it.


class LectureValue:
    """A scalar whose every op leaves behind a closure that pushes its gradient to its children."""

    def __init__(self, data, _children=(), _op="", label=""):
        self.data = data
        self.grad = 0.0
        self._backward = lambda: None  # a leaf has nothing to pass on
        self._prev = set(_children)
        self._op = _op
        self.label = label

    def __add__(self, other):
        other = other if isinstance(other, LectureValue) else LectureValue(other)
        out = LectureValue(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, LectureValue) else LectureValue(other)
        out = LectureValue(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k):  # a number exponent only, as in the lecture
        out = LectureValue(self.data**k, (self,), f"**{k}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    # The lecture builds these from the ops above.
    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1

    def tanh(self):
        # The lecture's formula, written with exp.
        t = (math.exp(2 * self.data) - 1) / (math.exp(2 * self.data) + 1)
        out = LectureValue(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t**2) * out.grad

        out._backward = _backward
        return out

    def exp(self):
        out = LectureValue(math.exp(self.data), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad  # d(e^x)/dx is e^x itself

        out._backward = _backward
        return out

    def relu(self):  # micrograd's, for the op names
        out = LectureValue(max(0.0, self.data), (self,), "ReLU")

        def _backward():
            self.grad += (out.data > 0) * out.grad

        out._backward = _backward
        return out

    def backward(self):
        order, visited = [], set()

        def visit(node):
            if node not in visited:
                visited.add(node)
                for child in node._prev:
                    visit(child)
                order.append(node)

        visit(self)
        self.grad = 1.0
        for node in reversed(order):
            node._backward()


try:
    import micrograd.engine

    class MicrogradValue(micrograd.engine.Value):
        """micrograd 0.1.0's Value, with the ``label`` keyword the lecture's version adds."""

        def __init__(self, data, _children=(), _op="", label=""):
            super().__init__(data, _children, _op)
            self.label = label

    MICROGRAD = pytest.param(MicrogradValue, id="micrograd")
except ImportError:
    MICROGRAD = pytest.param(None, id="micrograd", marks=pytest.mark.skip("micrograd is not installed"))

LECTURE = pytest.param(LectureValue, id="lecture")
CHAINRULE = pytest.param(chainrule.Value, id="chainrule")
# Cells that need only + * ** relu and closures also run on micrograd itself.
ENGINES = [LECTURE, CHAINRULE]
ENGINES_AND_MICROGRAD = [LECTURE, CHAINRULE, MICROGRAD]


def close(x, y, tol=1e-12):
    return abs(x - y) <= tol * max(1.0, abs(y))


# ---------------------------------------------------------------------------------------------
# Cell: L = (a*b + c) * f, labelled, with gradients set by hand


def expression(Value, a=2.0, b=-3.0, c=10.0, f=-2.0):
    """The lecture's first graph; every node labelled the lecture's way."""
    a = Value(a, label="a")
    b = Value(b, label="b")
    c = Value(c, label="c")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    f = Value(f, label="f")
    L = d * f
    L.label = "L"
    return dict(a=a, b=b, c=c, e=e, d=d, f=f, L=L)


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_expression_forward_labels_and_children(Value):
    v = expression(Value)
    assert v["L"].data == -8.0
    assert [v[k].label for k in "abcedfL"] == list("abcedfL")
    assert v["L"]._op == "*" and v["d"]._op == "+" and v["a"]._op == ""
    assert v["L"]._prev == {v["d"], v["f"]}
    assert v["d"]._prev == {v["e"], v["c"]}


def manual_grads(v):
    """The lecture's hand derivation: the chain rule applied from L down, one node at a time."""
    v["L"].grad = 1.0
    v["f"].grad = v["d"].data * v["L"].grad  # dL/df = d
    v["d"].grad = v["f"].data * v["L"].grad  # dL/dd = f
    v["c"].grad = v["d"].grad  # a + node passes its gradient on unchanged
    v["e"].grad = v["d"].grad
    v["a"].grad = v["b"].data * v["e"].grad  # de/da = b
    v["b"].grad = v["a"].data * v["e"].grad


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_expression_hand_set_grads_match_finite_differences_and_backward(Value):
    by_hand = expression(Value)
    manual_grads(by_hand)
    h = 1e-6
    for name in "abcf":  # the lecture's numerical check, as a central difference per leaf
        up = expression(Value, **{name: by_hand[name].data + h})["L"].data
        down = expression(Value, **{name: by_hand[name].data - h})["L"].data
        assert by_hand[name].grad == pytest.approx((up - down) / (2 * h), rel=1e-6)
    automatic = expression(Value)
    automatic["L"].backward()
    for name in "abcdefL":
        assert automatic[name].grad == by_hand[name].grad, name


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_expression_nudging_the_leaves_along_the_gradient_raises_L(Value):
    v = expression(Value)
    v["L"].backward()
    step = 0.01
    nudged = expression(Value, **{k: v[k].data + step * v[k].grad for k in "abcf"})
    assert nudged["L"].data > v["L"].data


# ---------------------------------------------------------------------------------------------
# Cells: one neuron, o = tanh(x1*w1 + x2*w2 + b), backpropagated by hand and automatically

NEURON_INPUTS = dict(x1=2.0, x2=0.0, w1=-3.0, w2=1.0, b=6.8813735870195432)


def expected_neuron_grads():
    """The chain rule written out: do/dn = 1 - tanh(n)^2, then through the sums and products."""
    p = NEURON_INPUTS
    n = p["x1"] * p["w1"] + p["x2"] * p["w2"] + p["b"]
    do_dn = 1 - math.tanh(n) ** 2
    return dict(
        o=1.0,
        n=do_dn,
        b=do_dn,
        x1w1x2w2=do_dn,
        x1w1=do_dn,
        x2w2=do_dn,
        x1=p["w1"] * do_dn,
        w1=p["x1"] * do_dn,
        x2=p["w2"] * do_dn,
        w2=p["x2"] * do_dn,
    )


def lecture_tanh(Value):
    """A user adding tanh to an engine the lecture's way: a node and a closure for its backward."""

    def tanh(self):
        x = self.data
        t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
        out = Value(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t**2) * out.grad

        out._backward = _backward
        return out

    return tanh


def neuron(Value, tanh=None):
    """The lecture's neuron, built step by step with labels; ``tanh`` replaces the method if given."""
    x1 = Value(NEURON_INPUTS["x1"], label="x1")
    x2 = Value(NEURON_INPUTS["x2"], label="x2")
    w1 = Value(NEURON_INPUTS["w1"], label="w1")
    w2 = Value(NEURON_INPUTS["w2"], label="w2")
    b = Value(NEURON_INPUTS["b"], label="b")
    x1w1 = x1 * w1
    x1w1.label = "x1*w1"
    x2w2 = x2 * w2
    x2w2.label = "x2*w2"
    x1w1x2w2 = x1w1 + x2w2
    x1w1x2w2.label = "x1*w1 + x2*w2"
    n = x1w1x2w2 + b
    n.label = "n"
    o = n.tanh() if tanh is None else tanh(n)
    o.label = "o"
    return dict(x1=x1, x2=x2, w1=w1, w2=w2, b=b, x1w1=x1w1, x2w2=x2w2, x1w1x2w2=x1w1x2w2, n=n, o=o)


def backward_by_hand(v):
    """The lecture's manual cell: seed o, then call each node's _backward from the top down."""
    v["o"].grad = 1.0
    v["o"]._backward()
    v["n"]._backward()
    v["b"]._backward()  # a leaf: the lecture calls it to show that it does nothing
    v["x1w1x2w2"]._backward()
    v["x2w2"]._backward()
    v["x1w1"]._backward()


def assert_neuron_grads(v):
    for name, grad in expected_neuron_grads().items():
        assert close(v[name].grad, grad), (name, v[name].grad, grad)


@pytest.mark.parametrize("Value", ENGINES)
def test_neuron_forward(Value):
    v = neuron(Value)
    assert close(v["o"].data, math.tanh(v["n"].data))
    assert close(v["o"].data, math.sqrt(0.5), 1e-9)  # b was chosen so that n = atanh(1/sqrt(2))
    assert v["o"]._op == "tanh" and v["o"]._prev == {v["n"]}


@pytest.mark.parametrize("Value", ENGINES)
def test_neuron_manual_backward_cells(Value):
    v = neuron(Value)
    backward_by_hand(v)
    assert_neuron_grads(v)


@pytest.mark.parametrize("Value", ENGINES)
def test_neuron_backward(Value):
    v = neuron(Value)
    v["o"].backward()
    assert_neuron_grads(v)


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_closure_tanh_manual_backward_cells(Value):
    v = neuron(Value, tanh=lecture_tanh(Value))
    assert v["o"]._op == "tanh" and v["o"]._prev == {v["n"]}
    backward_by_hand(v)
    assert_neuron_grads(v)


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_closure_tanh_backward(Value):
    v = neuron(Value, tanh=lecture_tanh(Value))
    v["o"].backward()
    assert_neuron_grads(v)


def test_neuron_grads_match_pytorch():
    torch = pytest.importorskip("torch")
    leaves = {k: torch.tensor([x], dtype=torch.float64, requires_grad=True) for k, x in NEURON_INPUTS.items()}
    o = torch.tanh(leaves["x1"] * leaves["w1"] + leaves["x2"] * leaves["w2"] + leaves["b"])
    o.backward()
    expected = expected_neuron_grads()
    for name, leaf in leaves.items():
        assert close(leaf.grad.item(), expected[name]), name


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_closure_op_mixed_with_built_in_ops(Value):
    """A user closure in the middle of built-in ops, its input and output each used twice."""
    tanh = lecture_tanh(Value)
    x, w, b = Value(0.7, label="x"), Value(-1.3, label="w"), Value(0.4, label="b")
    t = tanh(x * w + b)
    y = t * x + t * t
    y.backward()
    # y = t x + t^2 with t = tanh(x w + b): the chain rule by hand
    tt = math.tanh(0.7 * -1.3 + 0.4)
    dy_dt = 0.7 + 2 * tt
    dt_dh = 1 - tt**2
    assert close(y.data, tt * 0.7 + tt * tt)
    assert close(x.grad, tt + dy_dt * dt_dh * -1.3)
    assert close(w.grad, dy_dt * dt_dh * 0.7)
    assert close(b.grad, dy_dt * dt_dh)


def tanh_from_exp(n):
    """The lecture's tanh broken into smaller ops: one exp, used twice, and a division."""
    e = (2 * n).exp()
    return (e - 1) / (e + 1)


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_a_hand_made_node_without_a_closure_passes_nothing_on(Value):
    """Until a ``_backward`` is assigned, a node built by hand is a dead end, as in the lecture."""
    a = Value(2.0, label="a")
    made = Value(5.0, (a,), "custom")
    assert made._op == "custom" and made._prev == {a}
    total = made * a
    total.backward()
    assert a.grad == 5.0  # only the product's own path: made's data, nothing through made


@pytest.mark.parametrize("Value", ENGINES)
def test_tanh_from_exp_and_division(Value):
    """The lecture's check that the broken-down tanh gives the same gradients as the whole one."""
    v = neuron(Value, tanh=tanh_from_exp)
    assert close(v["o"].data, math.tanh(v["n"].data))
    v["o"].backward()
    assert_neuron_grads(v)


def trace(root):
    """The lecture's graph walk for drawing: every node and every (child, parent) edge."""
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)

    build(root)
    return nodes, edges


@pytest.mark.parametrize("Value", ENGINES)
def test_the_drawing_walk_sees_the_lecture_graph(Value):
    v = neuron(Value)
    nodes, edges = trace(v["o"])
    assert nodes == set(v.values())
    assert {(child.label, parent.label) for child, parent in edges} == {
        ("x1", "x1*w1"),
        ("w1", "x1*w1"),
        ("x2", "x2*w2"),
        ("w2", "x2*w2"),
        ("x1*w1", "x1*w1 + x2*w2"),
        ("x2*w2", "x1*w1 + x2*w2"),
        ("x1*w1 + x2*w2", "n"),
        ("b", "n"),
        ("n", "o"),
    }
    assert {node.label: node._op for node in nodes} == {
        "x1": "",
        "x2": "",
        "w1": "",
        "w2": "",
        "b": "",
        "x1*w1": "*",
        "x2*w2": "*",
        "x1*w1 + x2*w2": "+",
        "n": "+",
        "o": "tanh",
    }


# ---------------------------------------------------------------------------------------------
# Cells: the bug of a value used twice, and micrograd's graph attributes


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_a_value_added_to_itself(Value):
    a = Value(3.0, label="a")
    b = a + a
    b.label = "b"
    b.backward()
    assert b.data == 6.0
    assert a.grad == 2.0  # one from each use; an engine that overwrites instead of adding gives 1


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_values_reused_across_branches(Value):
    a = Value(-2.0, label="a")
    b = Value(3.0, label="b")
    d = a * b
    d.label = "d"
    e = a + b
    e.label = "e"
    f = d * e
    f.label = "f"
    f.backward()
    # f = ab(a + b): df/da = 2ab + b^2, df/db = a^2 + 2ab
    assert a.grad == 2 * -2.0 * 3.0 + 3.0**2
    assert b.grad == (-2.0) ** 2 + 2 * -2.0 * 3.0


@pytest.mark.parametrize("Value", ENGINES_AND_MICROGRAD)
def test_prev_is_a_set_of_the_children(Value):
    a, b = Value(2.0), Value(3.0)
    twice = a + a
    assert isinstance(twice._prev, (set, frozenset))
    assert twice._prev == {a}  # a set: an input used twice appears once
    assert (a * b)._prev == {a, b}
    assert (a**2)._prev == {a}
    assert len(a._prev) == 0


def op_name_cases():
    """(expression, the engine whose _op is the oracle): micrograd where it has the op."""
    oracle = MICROGRAD.values[0] or LectureValue
    return [
        pytest.param(lambda a, b: a + b, oracle, id="add"),
        pytest.param(lambda a, b: a * b, oracle, id="mul"),
        pytest.param(lambda a, b: a**2, oracle, id="square"),
        pytest.param(lambda a, b: a**3, oracle, id="cube"),
        pytest.param(lambda a, b: a.relu(), oracle, id="relu"),
        pytest.param(lambda a, b: a.tanh(), LectureValue, id="tanh"),
        pytest.param(lambda a, b: a.exp(), LectureValue, id="exp"),
    ]


@pytest.mark.parametrize("make, Oracle", op_name_cases())
def test_op_names_are_micrograds(make, Oracle):
    ours = make(chainrule.Value(0.5), chainrule.Value(2.0))
    theirs = make(Oracle(0.5), Oracle(2.0))
    assert ours._op == theirs._op
    assert chainrule.Value(0.5)._op == Oracle(0.5)._op == ""


def test_op_names_spelled_out():
    a = chainrule.Value(0.5)
    assert [(a + a)._op, (a * a)._op, (a**2)._op, a.relu()._op, a.tanh()._op, a.exp()._op] == [
        "+",
        "*",
        "**2",
        "ReLU",
        "tanh",
        "exp",
    ]


# ---------------------------------------------------------------------------------------------
# The lecture's network: MLP(3, [4, 4, 1]), tanh on every layer, trained on four examples.
#
# The lecture's Neuron draws its weights and then its bias, all from random.uniform(-1, 1):
#     w = [uniform(-1, 1) for each input], b = uniform(-1, 1)
# (micrograd's library version starts the bias at 0 instead), and squashes every neuron's
# output with tanh, the last layer's included. chainrule builds that network with
# MLP(nin, nouts, activation="tanh", linear_output=False, bias_init="uniform").


class LectureNeuron:
    def __init__(self, nin):
        self.w = [LectureValue(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = LectureValue(random.uniform(-1, 1))

    def __call__(self, x):
        activation = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return activation.tanh()

    def parameters(self):
        return self.w + [self.b]


class LectureLayer:
    def __init__(self, nin, nout):
        self.neurons = [LectureNeuron(nin) for _ in range(nout)]

    def __call__(self, x):
        outs = [n(x) for n in self.neurons]
        return outs[0] if len(outs) == 1 else outs

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]


class LectureMLP:
    def __init__(self, nin, nouts):
        sizes = [nin] + nouts
        self.layers = [LectureLayer(sizes[i], sizes[i + 1]) for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


XS = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
YS = [1.0, -1.0, -1.0, 1.0]


def lecture_network():
    return chainrule.nn.MLP(3, [4, 4, 1], activation="tanh", linear_output=False, bias_init="uniform")


def train(model, steps=20, lr=0.05):
    """The lecture's training loop: sum of squared errors, zero the grads, backward, step."""
    losses = []
    for _ in range(steps):
        ypred = [model(x) for x in XS]
        loss = sum((yout - ygt) ** 2 for ygt, yout in zip(YS, ypred))
        for p in model.parameters():
            p.grad = 0.0
        loss.backward()
        for p in model.parameters():
            p.data += -lr * p.grad
        losses.append(loss.data)
    return losses


def test_lecture_network_has_the_lectures_weights():
    random.seed(1337)
    reference = LectureMLP(3, [4, 4, 1])
    random.seed(1337)
    ours = lecture_network()
    assert len(ours.parameters()) == len(reference.parameters()) == 41
    assert [p.data for p in ours.parameters()] == [p.data for p in reference.parameters()]


def test_lecture_network_output_is_squashed():
    random.seed(0)
    ours = lecture_network()
    random.seed(0)
    reference = LectureMLP(3, [4, 4, 1])
    for x in XS:
        out = ours(x)
        assert -1.0 < out.data < 1.0
        assert out._op == "tanh"
        assert close(out.data, reference(x).data)


def test_lecture_training_loop_gives_the_lectures_losses():
    random.seed(1337)
    reference_losses = train(LectureMLP(3, [4, 4, 1]))
    random.seed(1337)
    model = lecture_network()
    losses = train(model)
    for step, (ours, theirs) in enumerate(zip(losses, reference_losses, strict=True)):
        assert close(ours, theirs), (step, ours, theirs)
    assert losses[-1] < 0.5 * losses[0]  # and it learns, as in the lecture


@pytest.mark.parametrize("extra", [(), ("tanh",)], ids=["local grads", "closure"])
def test_a_node_built_by_hand_inside_a_compiled_function_is_refused(extra):
    pytest.importorskip("numpy")
    import math as _math

    def f(x):
        t = _math.tanh(x.data)
        third = extra[0] if extra else (1 - t * t,)
        return chainrule.Value(t, (x,), third) * 2.0

    with pytest.warns(chainrule.TraceWarning), pytest.raises(NotImplementedError, match="by hand"):
        chainrule.compile(f)(0.5)
