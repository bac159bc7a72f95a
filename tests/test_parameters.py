"""Parameters: the leaves a model learns, Values in every way, listed in their model's group.

A Parameter must be a Value in every way. The oracles here are plain Values built from the same
numbers (the engine, the optimizers and chainrule.compile must give the very same floats, bit
for bit where the same arithmetic runs), independent draws from ``random`` for a model's initial
weights, and the Parameters themselves (a group's arrays must read what they hold). Checked:
arithmetic and backward (first and second order), ``pack_parameters``, copies and pickles, nn's
modules, SGD and Adam, chainrule.compile, the trace's watch over ``.data``, and that ``.data``
and ``.grad`` are Value's own slots (micrograd's update loop costs what it costs on Values).

Run this file with and without ``CHAINRULE_PURE_PYTHON=1``: the C loops and their Python
versions must agree.
"""

import copy
import math
import pickle
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import chainrule
from chainrule import Parameter, Parameters, Value, optim, pack_parameters, sum_values
from chainrule.nn import MLP, Embedding, Linear
from chainrule.optim import SGD, Adam

# ---------------------------------------------------------------------------------------------
# Helpers


def bits(x):
    """A float as something that compares equal only for the very same float (nan too, -0.0 apart)."""
    return repr(float(x)) if not isinstance(x, Value) else ("Value", repr(x.data))


def numbers(values, what="data"):
    return [bits(getattr(v, what)) for v in values]


def group_of(values):
    """The one group all these Parameters share (the test fails if they are not in one)."""
    groups = {id(v.group): v.group for v in values}
    assert len(groups) == 1, f"{len(groups)} groups"
    return next(iter(groups.values()))


def as_plain_values(params):
    """Plain-Value twins: the same numbers and grads (a Value grad as a Value of its number)."""
    twins = []
    for p in params:
        v = Value(p.data)
        g = p.grad
        v.grad = Value(g.data) if isinstance(g, Value) else g
        twins.append(v)
    return twins


# ---------------------------------------------------------------------------------------------
# 1. Arithmetic and backward on Parameters give the numbers of plain Values.

OPS = ["+", "-", "*", "/", "tanh", "exp", "relu", "dot", "sum", "neg", "rsub", "rmul"]
program = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
    min_size=1,
    max_size=10,
)
leaf_numbers = st.lists(
    st.floats(-2.0, 2.0, allow_nan=False).map(lambda x: x if x else 0.5), min_size=1, max_size=4
)


def build(leaves, steps):
    """The nodes of the program over these leaves, then a root that uses every node (and leaf 0
    twice more), so that every leaf is reused along several paths."""
    nodes = list(leaves)
    for op, i, j, k in steps:
        a, b, c = nodes[i % len(nodes)], nodes[j % len(nodes)], nodes[k % len(nodes)]
        if op == "+":
            nodes.append(a + b)
        elif op == "-":
            nodes.append(a - b)
        elif op == "*":
            nodes.append(a * b)
        elif op == "/":
            nodes.append(a / (b * b + 1.0))
        elif op == "tanh":
            nodes.append(a.tanh())
        elif op == "exp":
            nodes.append((a * 0.25).exp())
        elif op == "relu":
            nodes.append(a.relu())
        elif op == "dot":
            nodes.append(chainrule.dot([a, b], [c, 2.0], a))
        elif op == "sum":
            nodes.append(sum_values([a, b, a, 1.5]))
        elif op == "neg":
            nodes.append(-a)
        elif op == "rsub":
            nodes.append(1.5 - a)
        else:
            nodes.append(3 * a)
    root = sum_values(nodes[len(leaves) :] + [leaves[0] * leaves[0], leaves[0]])
    return nodes, root


def twin_leaves(xs, kinds, pack):
    """Plain-Value leaves, and Parameter leaves (where ``kinds`` says so) with the same numbers."""
    plain = [Value(x, label=f"x{i}") for i, x in enumerate(xs)]
    mixed = [
        Parameter(x, label=f"x{i}") if k else Value(x, label=f"x{i}")
        for i, (x, k) in enumerate(zip(xs, kinds))
    ]
    if pack:
        pack_parameters(mixed)
    return plain, mixed


@hsettings(max_examples=150)
@given(leaf_numbers, program, st.lists(st.booleans(), min_size=4, max_size=4), st.booleans())
def test_parameters_give_plain_values_numbers_and_gradients_bit_for_bit(xs, steps, kinds, pack):
    kinds[0] = True  # at least one Parameter
    plain, mixed = twin_leaves(xs, kinds, pack)
    plain_nodes, plain_root = build(plain, steps)
    mixed_nodes, mixed_root = build(mixed, steps)
    assert isinstance(mixed[0], Parameter)
    assert numbers(mixed_nodes) == numbers(plain_nodes)
    for _ in range(2):  # the second pass adds the same gradients again on top of the first
        plain_root.backward()
        mixed_root.backward()
        assert numbers(mixed_nodes, "grad") == numbers(plain_nodes, "grad")
        assert all(type(p.grad) is float for p in mixed)
        assert [p.group.grad[p.index] for p in mixed if isinstance(p, Parameter)] == [
            p.grad for p in mixed if isinstance(p, Parameter)
        ]  # the group's arrays read what the Parameters hold


@hsettings(max_examples=100)
@given(leaf_numbers, program, st.booleans())
def test_create_graph_gradients_of_parameters_are_values_as_for_plain_values(xs, steps, pack):
    plain, params = twin_leaves(xs, [True] * len(xs), pack)
    _, plain_root = build(plain, steps)
    _, param_root = build(params, steps)
    plain_root.backward(create_graph=True)
    param_root.backward(create_graph=True)
    for p, v in zip(params, plain):
        assert type(p.grad) is type(v.grad)
        assert bits(p.grad) == bits(v.grad)
        if isinstance(p.grad, Value):  # the group's array reads its number
            assert p.group.grad[p.index] == p.grad.data
    # Second order: differentiate a weighted sum of the gradients, from zeroed leaf grads.
    plain_total = sum_values([(k + 1) * v.grad for k, v in enumerate(plain)])
    param_total = sum_values([(k + 1) * p.grad for k, p in enumerate(params)])
    assert bits(param_total.data) == bits(plain_total.data)
    for leaf in plain + params:
        leaf.grad = 0.0
    plain_total.backward()
    param_total.backward()
    assert numbers(params, "grad") == numbers(plain, "grad")


def test_second_order_of_a_parameter_matches_the_hand_derivative():
    # d/dx (x^3) = 3x^2, d/dx (3x^2) = 6x: an independent check of the create_graph path.
    x = Parameter(1.25)
    (x * x * x).backward(create_graph=True)
    g = x.grad
    assert isinstance(g, Value) and g.data == 3 * 1.25**2
    x.grad = 0.0
    g.backward()
    assert x.grad == 6 * 1.25


# ---------------------------------------------------------------------------------------------
# 2. pack_parameters


def test_pack_parameters_lists_them_in_order_and_leaves_numbers_and_gradients_alone():
    a, b, c, d = Parameter(1.0), Parameter(2.0), Parameter(3.0), Parameter(4.0)
    plain = Value(9.0)
    g = Value(7.0)
    a.grad, b.grad, c.grad, d.grad = 0.5, None, g, -1.25
    group = pack_parameters([c, plain, a, c, b, d])  # c twice; a plain Value among them
    assert isinstance(group, Parameters) and len(group) == 4
    assert group.members == (c, a, b, d)
    assert [(p.group, p.index) for p in (c, a, b, d)] == [(group, 0), (group, 1), (group, 2), (group, 3)]
    assert list(group.data) == [3.0, 1.0, 2.0, 4.0]
    assert (a.grad, b.grad, d.grad) == (0.5, None, -1.25) and c.grad is g
    assert list(group.grad) == [7.0, 0.5, 0.0, -1.25]  # a Value's number, None as 0
    assert type(plain) is Value and plain.data == 9.0  # left alone

    # The arrays read what the Parameters hold now.
    a.data, a.grad = 11.0, 4.0
    assert group.data[1] == 11.0 and group.grad[1] == 4.0


def test_a_parameter_alone_is_in_a_group_of_its_own():
    p = Parameter(2.5)
    assert p.group.members == (p,) and p.index == 0 and list(p.group.data) == [2.5]


def test_pack_parameters_without_parameters_returns_none_and_changes_nothing():
    v = Value(1.0)
    assert pack_parameters([]) is None
    assert pack_parameters([v, Value(2.0)]) is None
    assert v.data == 1.0 and type(v) is Value


def test_packing_again_moves_everything_to_the_new_group():
    pytest.importorskip("numpy")
    params = [Parameter(float(i)) for i in range(5)]
    first = pack_parameters(params)
    second = pack_parameters(params[::-1])
    assert [p.index for p in params] == [4, 3, 2, 1, 0] and all(p.group is second for p in params)
    params[0].data = -5.0
    data, grad = second.numpy()
    assert data.tolist() == [4.0, 3.0, 2.0, 1.0, -5.0] and grad.tolist() == [0.0] * 5
    assert first.members == tuple(params)  # the old group keeps its list


# ---------------------------------------------------------------------------------------------
# 3. .data and .grad are Value's own slots


def test_a_parameters_data_and_grad_are_values_own_slots():
    # Nothing of Parameter's own stands between micrograd's update loop and the numbers.
    assert "data" not in Parameter.__dict__ and "grad" not in Parameter.__dict__
    p, v = Parameter(1.5), Value(1.5)
    for x in (2, True, Fraction(1, 3), None, Value(0.5)):
        p.data = v.data = x  # whatever a Value's slot takes, a Parameter's takes
        assert p.data is v.data or p.data == v.data
    p.data, p.grad = 1.5, 0.25
    p.data -= 0.1 * p.grad
    assert p.data == 1.5 - 0.1 * 0.25
    with pytest.raises(AttributeError):
        del p.index


@pytest.mark.parametrize("name", ["data", "grad"])
def test_a_value_subclass_cannot_redefine_data_or_grad(name):
    # Regression: a subclass with a data property read one number on the fast path (the
    # property) and another through apply, detect_anomaly and compiled calls (the slot).
    with pytest.raises(TypeError, match=f"redefines '{name}'"):
        type("Shadowing", (Value,), {name: property(lambda self: 3.0), "__slots__": ()})
    with pytest.raises(TypeError, match=f"redefines '{name}'"):
        type("Shadowing", (Parameter,), {"__slots__": (name,)})


def test_a_parameter_subclass_works_as_a_parameter():
    # A regression test: without the C module, engine._read_data once checked
    # `type(value) is Parameter`, so a subclass fell to Value's empty `data` slot.
    class MyParameter(Parameter):
        __slots__ = ()

    w = MyParameter(2.0)
    y = Value(1.0) + w * 3.0 + w.softplus() + chainrule.dot([w], [Value(0.5)], 0.0)
    assert y.data == 1.0 + 6.0 + math.log1p(math.exp(2.0)) + 1.0
    y.backward()
    assert w.grad == pytest.approx(3.0 + 1.0 / (1.0 + math.exp(-2.0)) + 0.5, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# 4. Copies and pickles


@pytest.mark.parametrize("how", ["copy", "pickle"])
@pytest.mark.parametrize("grad", [0.75, None, "value"])
def test_copy_and_pickle_give_an_independent_parameter_in_a_group_of_its_own(how, grad):
    params = [Parameter(float(i), label=f"p{i}") for i in range(3)]
    group = pack_parameters(params)
    p = params[1]
    p.grad = original = Value(0.75) if grad == "value" else grad
    q = copy.copy(p) if how == "copy" else pickle.loads(pickle.dumps(p))
    assert type(q) is Parameter and q is not p
    assert q.group is not group and q.group.members == (q,) and q.index == 0
    assert (q.data, q.label) == (1.0, "p1")
    assert q.grad == (None if grad is None else 0.75) and not isinstance(q.grad, Value)
    q.data, q.grad = 5.0, 6.0
    assert p.data == 1.0 and list(group.data) == [0.0, 1.0, 2.0]
    assert p.grad is original if grad != 0.75 else p.grad == 0.75


def test_deepcopy_of_a_model_shares_one_new_group_with_equal_numbers_and_grads():
    random.seed(5)
    model = MLP(3, [4, 2])
    sum_values(model([1.0, -2.0, 0.5])).backward()
    params = model.parameters()
    params[2].grad = None
    params[4].grad = Value(1.25)
    clone = copy.deepcopy(model)
    copies = clone.parameters()
    group = group_of(copies)
    assert group is not group_of(params)
    assert [(p.group, p.index) for p in copies] == [(group, k) for k in range(len(copies))]
    assert all(type(p) is Parameter for p in copies)
    assert numbers(copies) == numbers(params)
    assert copies[2].grad is None and copies[4].grad == 1.25  # a Value grad is copied as its number
    expected = [bits(p.grad) for k, p in enumerate(params) if k not in (2, 4)]
    assert [bits(p.grad) for k, p in enumerate(copies) if k not in (2, 4)] == expected
    before = numbers(params), [p.grad for p in params]
    for p in copies:
        p.data += 1.0
        p.grad = 9.0
    clone.pack_parameters()
    assert (numbers(params), [p.grad for p in params]) == before
    assert numbers(clone([1.0, -2.0, 0.5])) != numbers(model([1.0, -2.0, 0.5]))


# ---------------------------------------------------------------------------------------------
# 5. nn's modules


def check_packed(module):
    params = module.parameters()
    assert params and all(type(p) is Parameter for p in params)
    group = group_of(params)
    assert len(group) == len(params)
    assert all((p.group, p.index) == (group, k) for k, p in enumerate(params))
    assert list(group.data) == [p.data for p in params]
    return group


@pytest.mark.parametrize("bias_init", ["zero", "uniform"])
@pytest.mark.parametrize("seed", [0, 1337])
def test_an_mlp_is_packed_and_draws_micrograds_weights(seed, bias_init):
    sizes = [3, 4, 4, 1]
    random.seed(seed)
    model = MLP(sizes[0], sizes[1:], activation="tanh", bias_init=bias_init)
    check_packed(model)
    # micrograd's order: for each layer, each neuron draws its weights, then (lecture) its bias.
    random.seed(seed)
    expected = []
    for nin, nout in zip(sizes, sizes[1:]):
        for _ in range(nout):
            expected += [random.uniform(-1, 1) for _ in range(nin)]
            expected.append(random.uniform(-1, 1) if bias_init == "uniform" else 0.0)
    assert [p.data for p in model.parameters()] == expected


def test_linear_embedding_and_gpt_are_packed_and_draw_their_gaussians_in_order():
    from chainrule.gpt import GPT

    def gaussians(n):
        return [random.gauss(0.0, 0.08) for _ in range(n)]

    random.seed(3)
    linear = Linear(3, 2)
    check_packed(linear)
    random.seed(3)
    assert [p.data for p in linear.parameters()] == gaussians(6) + [0.0, 0.0]

    random.seed(4)
    table = Embedding(5, 3)
    check_packed(table)
    random.seed(4)
    assert [p.data for p in table.parameters()] == gaussians(15)
    assert table(2) is table.weight[2]

    random.seed(6)
    model = GPT(5, n_layer=2, n_head=2, n_embd=4, block_size=3)
    check_packed(model)
    n = len(model.parameters())
    assert n == 5 * 4 + 3 * 4 + 5 * 4 + 2 * (4 * 4 * 4 + 2 * 4 * 16)
    random.seed(6)
    assert [p.data for p in model.parameters()] == gaussians(n)


def test_state_dict_round_trip_keeps_the_model_packed():
    random.seed(8)
    source = MLP(2, [3, 2])
    random.seed(9)
    target = MLP(2, [3, 2])
    assert numbers(target.parameters()) != numbers(source.parameters())
    for p in target.parameters():
        p.grad = 0.5
    target.load_state_dict(source.state_dict())
    group = check_packed(target)
    assert numbers(target.parameters()) == numbers(source.parameters())
    assert list(group.data) == [p.data for p in source.parameters()]
    assert all(p.grad == 0.5 for p in target.parameters())  # gradients are kept
    assert target.state_dict() == source.state_dict()


def test_module_zero_grad_zeroes_parameters_with_any_gradient():
    random.seed(2)
    model = MLP(2, [3, 1])
    params = model.parameters()
    for k, p in enumerate(params):
        p.grad = float(k + 1)
    params[1].grad, params[3].grad = None, Value(2.0)
    model.zero_grad()
    assert [p.grad for p in params] == [0.0] * len(params)
    assert all(type(p.grad) is float for p in params)


# ---------------------------------------------------------------------------------------------
# 6. Optimizers


def gradient_pattern(step, i):
    return math.sin(1.7 * i + 0.9 * step) * (1 + i % 3)


OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd momentum decay": lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: Adam(ps, lr=0.01),
    "adam decay": lambda ps: Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
}


def packed_and_plain_models(seed=11):
    """An MLP (its Parameters packed) and a list of plain-Value twins of its parameters."""
    random.seed(seed)
    model = MLP(3, [8, 8, 1])
    return model, as_plain_values(model.parameters())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_optimizer_gives_packed_parameters_the_numbers_of_plain_values(name):
    pytest.importorskip("numpy")
    model, plain = packed_and_plain_models()
    params = model.parameters()
    fast, slow = OPTIMIZERS[name](params), OPTIMIZERS[name](plain)
    for step in range(5):
        step_both(fast, slow, params, plain, step)
        assert list(group_of(params).data) == [v.data for v in plain]


def step_both(fast, slow, params, plain, step):
    """One step of each optimizer, from the same gradients; then the same numbers."""
    fast.zero_grad()
    slow.zero_grad()
    assert all(p.grad == 0.0 for p in params)
    for i, (p, v) in enumerate(zip(params, plain)):
        p.grad = v.grad = gradient_pattern(step, i)
    fast.step()
    slow.step()
    assert numbers(params) == numbers(plain), f"step {step}"


@pytest.mark.parametrize("name", ["sgd momentum decay", "adam decay"])
def test_an_optimizer_on_parameters_without_numpy_takes_the_same_steps(name, monkeypatch):
    # The scalar loop, through each Parameter's .data and .grad, against the vectorized pass.
    pytest.importorskip("numpy")
    model, plain = packed_and_plain_models()
    params = model.parameters()
    monkeypatch.setattr(optim, "_NUMPY", None)
    scalar = OPTIMIZERS[name](params)
    for step in range(3):
        for i, p in enumerate(params):
            p.grad = gradient_pattern(step, i)
        scalar.step()
    monkeypatch.undo()
    vectorized = OPTIMIZERS[name](plain)
    for step in range(3):
        for i, v in enumerate(plain):
            v.grad = gradient_pattern(step, i)
        vectorized.step()
    assert [p.data for p in params] == pytest.approx([v.data for v in plain], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_zero_grad_zeroes_exactly_the_optimizers_parameters(layer):
    model, _ = packed_and_plain_models()
    params = model.parameters()
    chosen = model.layers[layer].parameters()
    optimizer = SGD(chosen, lr=0.1)
    for i, p in enumerate(params):
        p.grad = i + 1.0
    optimizer.zero_grad()
    chosen_ids = set(map(id, chosen))
    assert [p.grad for p in params] == [0.0 if id(p) in chosen_ids else i + 1.0 for i, p in enumerate(params)]


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("repack", ["all", "middle", "reversed"])
def test_an_optimizer_follows_its_parameters_to_a_new_group(name, repack):
    # Regression: runs found before the Parameters moved must not update the old arrays.
    pytest.importorskip("numpy")
    model, plain = packed_and_plain_models()
    params = model.parameters()
    fast, slow = OPTIMIZERS[name](params), OPTIMIZERS[name](plain)
    for step in range(4):
        if step == 2:
            old = group_of(params)
            if repack == "all":
                model.pack_parameters()
            elif repack == "middle":
                pack_parameters(params[10:40])
            else:
                pack_parameters(params[::-1])
            assert all(p.group is not old for p in params[10:40])
        step_both(fast, slow, params, plain, step)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_optimizer_with_a_value_or_none_gradient_in_the_group_falls_back(name):
    pytest.importorskip("numpy")
    model, plain = packed_and_plain_models()
    params = model.parameters()
    fast, slow = OPTIMIZERS[name](params), OPTIMIZERS[name](plain)
    for step in range(3):
        for i, (p, v) in enumerate(zip(params, plain)):
            p.grad = v.grad = gradient_pattern(step, i)
        params[3].grad, plain[3].grad = Value(0.5), Value(0.5)
        if step == 1:
            params[7].grad = plain[7].grad = None  # skips the step, as in PyTorch
        fast.step()
        slow.step()
        assert numbers(params) == numbers(plain), f"step {step}"
        assert isinstance(params[3].grad, Value)


def test_an_optimizer_after_backward_with_create_graph():
    pytest.importorskip("numpy")
    random.seed(12)
    model = MLP(2, [8, 1], activation="tanh")
    params = model.parameters()
    plain = [Value(p.data) for p in params]
    optimizer, twin = Adam(params, lr=0.05), Adam(plain, lr=0.05)
    x = [0.3, -1.2]
    model(x).backward(create_graph=True)
    # The same network written out on the plain Values: 8 tanh neurons of (w1, w2, b), then a
    # linear neuron of 8 weights and a bias.
    hidden = [chainrule.dot(plain[3 * j : 3 * j + 2], x, plain[3 * j + 2]).tanh() for j in range(8)]
    chainrule.dot(plain[24:32], hidden, plain[32]).backward(create_graph=True)
    assert all(isinstance(g, Value) for g in [p.grad for p in params] + [v.grad for v in plain])
    assert numbers(params, "grad") == numbers(plain, "grad")
    before = numbers(params)
    optimizer.step()
    twin.step()
    assert numbers(params) == numbers(plain) != before


# ---------------------------------------------------------------------------------------------
# 7. chainrule.compile


def mse_of(model, X, y):
    from chainrule.losses import mse

    return mse([model(x) for x in X], y)


def compiled_and_eager_mlps(seed=21):
    random.seed(seed)
    fast = MLP(3, [6, 5, 1], activation="tanh")
    random.seed(seed)
    eager = MLP(3, [6, 5, 1], activation="tanh")
    return fast, eager


def assert_close(a, b, what):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        x = x.data if isinstance(x, Value) else x
        y = y.data if isinstance(y, Value) else y
        assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15), f"{what}[{i}]: {x!r} != {y!r}"


def test_a_compiled_loss_reads_and_writes_a_models_parameters_afresh_at_every_call():
    np = pytest.importorskip("numpy")
    fast, eager = compiled_and_eager_mlps()
    f = chainrule.compile(lambda X, y: mse_of(fast, X, y))
    rng = np.random.default_rng(0)
    for call in range(4):
        X, y = rng.normal(size=(4, 3)), rng.normal(size=4)
        if call == 2:  # new numbers, written through the Parameters
            for p, q in zip(fast.parameters(), eager.parameters()):
                p.data = q.data = p.data * 0.5 + 0.125
        if call == 3:  # a new group
            old = group_of(fast.parameters())
            fast.pack_parameters()
            assert group_of(fast.parameters()) is not old
        fast.zero_grad()
        eager.zero_grad()
        loss = f(X, y)
        expected = mse_of(eager, X.tolist(), y.tolist())
        assert math.isclose(loss.data, expected.data, rel_tol=1e-12)
        loss.backward()
        expected.backward()
        assert_close([p.grad for p in fast.parameters()], [p.grad for p in eager.parameters()], "grads")
        assert loss.grad == 1.0
    assert len(f.tapes) == 1


def test_compiled_gradients_accumulate_over_two_backward_calls():
    np = pytest.importorskip("numpy")
    fast, eager = compiled_and_eager_mlps()
    f = chainrule.compile(lambda X, y: mse_of(fast, X, y))
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(3, 3)), rng.normal(size=3)
    f(X, y)  # the trace
    for _ in range(2):
        f(X, y).backward()
        mse_of(eager, X.tolist(), y.tolist()).backward()
    assert_close([p.grad for p in fast.parameters()], [p.grad for p in eager.parameters()], "grads")
    assert any(p.grad != 0.0 for p in fast.parameters())


def test_a_plain_value_among_the_externals_is_read_as_the_parameters_are():
    np = pytest.importorskip("numpy")
    fast, eager = compiled_and_eager_mlps()
    fast_scale, eager_scale = Value(0.7), Value(0.7)
    f = chainrule.compile(lambda X, y: mse_of(fast, X, y) * fast_scale)
    rng = np.random.default_rng(2)
    for call in range(3):
        X, y = rng.normal(size=(4, 3)), rng.normal(size=4)
        fast_scale.data = eager_scale.data = 0.7 + call
        fast.zero_grad()
        eager.zero_grad()
        fast_scale.grad = eager_scale.grad = 0.0
        loss = f(X, y)
        expected = mse_of(eager, X.tolist(), y.tolist()) * eager_scale
        assert math.isclose(loss.data, expected.data, rel_tol=1e-12)
        loss.backward()
        expected.backward()
        assert_close(
            [p.grad for p in fast.parameters()] + [fast_scale.grad],
            [p.grad for p in eager.parameters()] + [eager_scale.grad],
            "grads",
        )


def test_a_compiled_backward_adds_to_gradients_that_are_objects_or_none():
    np = pytest.importorskip("numpy")
    fast, eager = compiled_and_eager_mlps()
    f = chainrule.compile(lambda X, y: mse_of(fast, X, y))
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(4, 3)), rng.normal(size=4)
    f(X, y)
    for model in (fast, eager):
        model.zero_grad()
        params = model.parameters()
        params[3].grad, params[5].grad, params[8].grad = Value(0.5), None, 0.25
    loss = f(X, y)
    loss.backward()
    mse_of(eager, X.tolist(), y.tolist()).backward()
    fast_params, eager_params = fast.parameters(), eager.parameters()
    assert isinstance(fast_params[3].grad, Value) and isinstance(eager_params[3].grad, Value)
    assert type(fast_params[5].grad) is float
    assert_close([p.grad for p in fast_params], [p.grad for p in eager_params], "grads")
    # Once the object is gone, the same gradients again.
    fast.zero_grad()
    eager.zero_grad()
    f(X, y).backward()
    mse_of(eager, X.tolist(), y.tolist()).backward()
    assert_close([p.grad for p in fast.parameters()], [p.grad for p in eager.parameters()], "grads")


# ---------------------------------------------------------------------------------------------
# 8. The trace's watch over a Parameter's .data

TRACE_WARNS = """
import warnings
import chainrule
from chainrule import Parameter, Value, engine
from chainrule.compiler import tracing
assert (engine._graph is None) == {pure}
w = Parameter(2.0)
chainrule.pack_parameters([Parameter(1.0), w])

def fn(x):
    y = x * w                  # an op: quiet
    if w.data > 1.0:           # the user's code reading a Parameter's number: warned
        y = y * 2.0
    return y

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    f = chainrule.compile(fn)
    assert f(1.5).data == 6.0
messages = [str(c.message) for c in caught if issubclass(c.category, chainrule.TraceWarning)]
assert len(messages) == 1, messages
assert messages[0].startswith("chainrule.compile: the traced function read .data of a Value made"), messages
assert Value.__dict__["data"] is tracing._PLAIN["data"]  # the slot is back
w.data = 3.0
assert f(1.5).data == 9.0      # replayed with the new number (the frozen branch stays taken)
print("ok")
"""


@pytest.mark.parametrize("pure", [False, True], ids=["c", "pure-python"])
def test_reading_a_parameters_data_while_tracing_warns_in_both_modes(pure, run_python):
    pytest.importorskip("numpy")
    done = run_python(TRACE_WARNS.format(pure=pure), env={"CHAINRULE_PURE_PYTHON": "1" if pure else "0"})
    assert done.stdout.strip() == "ok"


def test_reading_or_writing_a_parameter_while_tracing_warns_here():
    pytest.importorskip("numpy")
    w = Parameter(2.0)

    def fn(x):
        y = x * w
        w.grad  # noqa: B018
        w.data = w.data  # read, then written
        return y

    with pytest.warns(chainrule.TraceWarning) as caught:
        chainrule.compile(fn)(1.0)
    assert [str(c.message).split(" of ")[0] for c in caught] == [
        "chainrule.compile: the traced function read .grad",
        "chainrule.compile: the traced function read .data",
        "chainrule.compile: the traced function wrote .data",
    ]
    assert all(c.filename == __file__ for c in caught)


def test_parameters_take_the_engines_fast_paths_as_values_do(monkeypatch):
    # parameters.py registers Parameter with the engine (engine.py does not import it): the
    # fast ops build their node directly, never calling apply, for Parameters as for Values.
    from chainrule import engine

    def no_apply(*args, **kwargs):
        raise AssertionError("apply was called: a Parameter missed the fast path")

    monkeypatch.setattr(engine, "apply", no_apply)
    a, b = Parameter(2.0), Parameter(3.0)
    results = [a * b, a + b, a - b, a / b, a * 2.0, 2.0 + a, engine.dot([a], [b], a), sum_values([a, b])]
    assert all(type(result) is Value for result in results)
    assert (a * b).data == 6.0 and engine.dot([a], [b], a).data == 8.0
