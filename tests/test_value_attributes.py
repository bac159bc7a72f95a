"""Values take attributes of their own, as the micrograd-family scripts set them (issue 21).

A Value keeps backward's parts in slots and anything else (a label, ``p.m``, a drawing's colour)
in an instance dict made only when the first such attribute is set, so memory per node stays
at most 160 bytes on the memory benchmark's measure (checked here by counting allocations).
"""

import copy
import importlib.util
import math
import pickle
import random
from pathlib import Path

import pytest

import chainrule
from chainrule import Value, nn


def test_a_value_a_computed_node_and_a_parameter_take_new_attributes():
    leaf = Value(1.0)
    node = (leaf * leaf).relu()
    parameter = nn.MLP(2, [3, 1]).parameters()[0]
    for v in (leaf, node, parameter):
        assert vars(v) == {}  # no dict until one is set
        v.m = 0
        v.tag = "x"
        assert (v.m, v.tag) == (0, "x")
        del v.m
        with pytest.raises(AttributeError):
            v.m  # noqa: B018


def test_attributes_do_not_change_the_numbers():
    x, y = Value(1.5), Value(-2.0)
    x.note = "input"
    out = (x * y + x).tanh()
    out.colour = "red"
    out.backward()
    t = math.tanh(1.5 * -2.0 + 1.5)
    assert x.grad == pytest.approx((1 - t * t) * (-2.0 + 1.0), rel=1e-15)
    assert y.grad == pytest.approx((1 - t * t) * 1.5, rel=1e-15)


def test_label_default_set_and_repr():
    a, b = Value(1.0), Value(2.0, label="b")
    assert a.label == "" and vars(a) == {}
    assert b.label == "b" and repr(b) == "Value(data=2.0, grad=0.0, label='b')"
    c = a + b
    assert c.label == ""
    c.label = "c"
    assert repr(c) == "Value(data=3.0, grad=0.0, label='c')"
    assert Value(1.0, label="").label == "" and vars(Value(1.0, label="")) == {}


def test_copies_of_a_leaf_keep_its_attributes_as_pytorch_keeps_a_tensors_dict():
    torch = pytest.importorskip("torch")
    t = torch.tensor(2.0)
    t.m = [1.0]
    assert copy.deepcopy(t).m == [1.0] and copy.deepcopy(t).m is not t.m  # PyTorch's behaviour
    v = Value(2.0, label="w")
    v.grad = 0.5
    v.m = [1.0]
    deep, shallow, pickled = copy.deepcopy(v), copy.copy(v), pickle.loads(pickle.dumps(v))
    for w in (deep, shallow, pickled):
        assert (w.data, w.grad, w.label, w.m) == (2.0, 0.5, "w", [1.0])
    assert deep.m is not v.m and shallow.m is v.m


def per_node(Value):
    """The memory benchmark's measure (benchmarks/bench_memory.py, loaded by its path): bytes per
    node of y = (v*w + x).relu()."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_memory.py"
    spec = importlib.util.spec_from_file_location("bench_memory", path)
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    return bench_memory.bytes_per_node_of_rows(Value)


@pytest.mark.skipif(chainrule.engine._graph is None, reason="the bound is for the C-built engine")
def test_memory_per_node_is_at_most_160_bytes():
    # An allocation count, not a timing: deterministic. 184 before attributes were allowed.
    assert per_node(Value) <= 160


# --- Eureka Labs' course-micrograd style: an AdamW that keeps its moments on the parameters


class AdamW:
    def __init__(self, parameters, lr=1e-1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0):
        self.parameters = parameters
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        for p in self.parameters:
            p.m = 0.0
            p.v = 0.0

    def step(self):
        self.t += 1
        for p in self.parameters:
            if p.grad is None:
                continue
            p.m = self.beta1 * p.m + (1 - self.beta1) * p.grad
            p.v = self.beta2 * p.v + (1 - self.beta2) * (p.grad**2)
            m_hat = p.m / (1 - self.beta1**self.t)
            v_hat = p.v / (1 - self.beta2**self.t)
            p.data -= self.lr * (m_hat / (v_hat**0.5 + self.eps) + self.weight_decay * p.data)

    def zero_grad(self):
        for p in self.parameters:
            p.grad = 0.0


def loss_of(model, rows):
    total = Value(0.0)
    for x, y in rows:
        total = total + (model(x) - y) ** 2
    return total


def test_adamw_storing_m_and_v_on_parameters_matches_torch():
    torch = pytest.importorskip("torch")
    random.seed(1)
    model = nn.MLP(2, [4, 1])
    parameters = model.parameters()
    rows = [([0.5, -1.0], 1.0), ([1.5, 0.25], -0.5), ([-0.75, 2.0], 0.25)]
    weights = torch.tensor([p.data for p in parameters], dtype=torch.float64, requires_grad=True)
    reference = torch.optim.AdamW([weights], lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    mine = AdamW(parameters, lr=0.05)
    for _ in range(5):
        mine.zero_grad()
        loss_of(model, rows).backward()
        weights.grad = torch.tensor([p.grad for p in parameters], dtype=torch.float64)
        reference.step()
        mine.step()
        assert [p.data for p in parameters] == pytest.approx(weights.detach().tolist(), rel=1e-12, abs=1e-14)
    assert all(hasattr(p, "m") and hasattr(p, "v") for p in parameters)


def test_adamw_by_hand_for_one_parameter():
    w = Value(1.0)
    optimizer = AdamW([w], lr=0.1, weight_decay=0.0)
    (w * w).backward()  # grad 2
    optimizer.step()
    # m = 0.1 * 2, v = 0.05 * 4; bias-corrected m_hat = 2, v_hat = 4: a step of lr * 2 / (2 + eps)
    assert w.m == pytest.approx(0.2) and w.v == pytest.approx(0.2)
    assert w.data == pytest.approx(1.0 - 0.1 * 2.0 / (2.0 + 1e-8), rel=1e-15)


# --- the course's model-building helper, which tags nodes for its drawing


def neuron_with_colours(weights, inputs, bias, colour):
    out = bias
    for w, x in zip(weights, inputs):
        product = w * x
        setattr(product, "_vis_color", colour)  # noqa: B010 (the course script's own style)
        out = out + product
    setattr(out, "_vis_color", colour)  # noqa: B010
    return out.tanh()


def test_a_model_helper_that_tags_nodes_with_setattr():
    ws, xs, b = [Value(0.5), Value(-1.0)], [Value(2.0), Value(3.0)], Value(0.25)
    out = neuron_with_colours(ws, xs, b, "lightblue")
    tagged = [n for n in chainrule.topological_order(out) if getattr(n, "_vis_color", None) == "lightblue"]
    assert len(tagged) == 3  # two products and the sum
    out.backward()
    t = math.tanh(0.5 * 2.0 - 3.0 + 0.25)
    assert ws[0].grad == pytest.approx((1 - t * t) * 2.0, rel=1e-15)
    assert b.grad == pytest.approx(1 - t * t, rel=1e-15)
