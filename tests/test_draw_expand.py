"""draw_dot(root, expand=True) and explore(root, expand=True): micrograd's chains of binary ops.

The oracle is micrograd 0.1.0 itself: the same computation is built with micrograd's Value,
run backward, and its graph (``_prev``, ``_op``, ``data``, ``grad``) is compared box by box
with the expanded drawing of chainrule's graph.
"""

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import Value, dot, sum_values, topological_order
from chainrule.chains import expand
from chainrule.cli import main
from chainrule.draw import GraphTooLargeError, draw_dot
from chainrule.explorer import explore
from chainrule.nn import MLP, Layer, Neuron

micrograd_engine = pytest.importorskip("micrograd.engine")
micrograd_nn = pytest.importorskip("micrograd.nn")
pytest.importorskip("graphviz")
MValue = micrograd_engine.Value


# ---------------------------------------------------------------------------------------------
# Boxes, as (op, data, grad, data of the distinct inputs), from either engine


def micrograd_boxes(root) -> list[tuple]:
    """Every node of micrograd's graph, walked through ``_prev`` as its trace_graph does."""
    seen, stack, boxes = {id(root)}, [root], []
    while stack:
        node = stack.pop()
        boxes.append(
            (node._op, float(node.data), float(node.grad), sorted(float(c.data) for c in node._prev))
        )
        for child in node._prev:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return boxes


def expanded_boxes(root: Value) -> list[tuple]:
    boxes = []
    for node in expand(topological_order(root)):
        inputs = {id(c): c.data for c in node.children}  # micrograd's _prev is a set: a*a has one
        boxes.append((node.op, node.data, node.grad, sorted(inputs.values())))
    return boxes


def sort_key(box):
    op, data, grad, inputs = box
    return (op, round(data, 6), round(grad, 6), [round(x, 6) for x in inputs])


def assert_same_boxes(ours: list[tuple], theirs: list[tuple]) -> None:
    """The same boxes, in any order: ops equal, numbers equal up to rounding in the last bits."""
    assert len(ours) == len(theirs)
    for mine, micro in zip(sorted(ours, key=sort_key), sorted(theirs, key=sort_key)):
        assert mine[0] == micro[0], (mine, micro)
        assert mine[1:3] == pytest.approx(micro[1:3], rel=1e-12, abs=1e-12), (mine, micro)
        assert mine[3] == pytest.approx(micro[3], rel=1e-12, abs=1e-12), (mine, micro)


def dot_boxes(root: Value) -> list[tuple[str, str, str]]:
    """The records of the DOT text: (label, 'data ...', 'grad ...') per box."""
    source = draw_dot(root, expand=True, max_nodes=None).source
    records = re.findall(r'label="\{ (?:([^|]*) \| )?(data [^|]*) \| (grad [^|]*) \}" shape=record', source)
    return [(label, data, grad) for label, data, grad in records]


def dot_ovals(root: Value) -> list[str]:
    source = draw_dot(root, expand=True, max_nodes=None).source
    return sorted(re.findall(r'n\d+_op \[label="?([^"\]]*)"? shape=ellipse\]', source))


def assert_drawing_matches_micrograd(root: Value, micro_root) -> None:
    """The expanded graph and the DOT text it draws both match micrograd's graph."""
    ours, theirs = expanded_boxes(root), micrograd_boxes(micro_root)
    assert_same_boxes(ours, theirs)
    # The DOT text draws those boxes: one record each, numbers as the lecture prints them.
    records = dot_boxes(root)
    assert len(records) == len(theirs)
    shown = sorted((data, grad) for _, data, grad in records)
    expected = sorted((f"data {d:.4f}", f"grad {g:.4f}") for _, d, g, _ in theirs)
    assert shown == expected
    assert dot_ovals(root) == sorted(op for op, *_ in theirs if op)


# ---------------------------------------------------------------------------------------------
# - and / and unary minus


def both(numbers):
    return [Value(x) for x in numbers], [MValue(x) for x in numbers]


@pytest.mark.parametrize(
    "build",
    [
        lambda a, b: a - b,
        lambda a, b: a / b,
        lambda a, b: -a,
        lambda a, b: a - a,  # one value on both sides of the chain
        lambda a, b: a / a,
        lambda a, b: (a - b) / (b - a) - a / b,
        lambda a, b: -(a * b) / -b,
    ],
)
def test_minus_and_divide_draw_as_micrograds_chains(build):
    (a, b), (ma, mb) = both([2.5, -1.5])
    root, micro_root = build(a, b), build(ma, mb)
    root.backward()
    micro_root.backward()
    assert_drawing_matches_micrograd(root, micro_root)


def test_the_links_of_a_chain_get_their_numbers_from_the_chain_rule():
    a, b = Value(6.0, label="a"), Value(3.0, label="b")
    c = a / b
    c.backward(gradient=2.0)  # an incoming gradient other than 1
    nodes = {node.op: node for node in expand(topological_order(c))}
    # b**-1 holds 1/b and gets c's gradient times the other factor, a.
    assert nodes["**-1"].data == 1 / 3.0
    assert nodes["**-1"].grad == 2.0 * 6.0
    # The last box is c itself: its own label, data and gradient.
    assert nodes["*"].value is c and nodes["*"].grad == 2.0
    # b's box shows b's real gradient: the chain through b**-1 gives the same number.
    assert nodes["**-1"].grad * (-1.0 * 3.0**-2) == pytest.approx(b.grad, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Neurons, layers and MLPs against micrograd.nn with the same weights


def copy_weights(ours, theirs) -> None:
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        p.data = q.data = random.uniform(-1, 1)


def test_a_neuron_draws_micrograds_ten_boxes_where_the_compact_drawing_has_seven():
    random.seed(0)
    neuron, micro = Neuron(2), micrograd_nn.Neuron(2)
    copy_weights(neuron, micro)
    neuron.b.data = micro.b.data = 0.75  # so that the bias's place in the chain shows in the numbers
    x = [1.5, -2.0]
    out, micro_out = neuron(x), micro(x)
    assert micro_out.data > 0  # relu passes it, so every gradient is nonzero
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)
    compact = draw_dot(out).source
    assert compact.count("shape=record") == len(topological_order(out)) == 7
    assert len(micrograd_boxes(micro_out)) == 10 == len(dot_boxes(out))


@pytest.mark.parametrize("nin", [1, 3, 5])
def test_a_neuron_with_value_inputs_matches_micrograd(nin):
    random.seed(nin)
    neuron, micro = Neuron(nin, nonlin=False), micrograd_nn.Neuron(nin, nonlin=False)
    copy_weights(neuron, micro)
    x, mx = both([random.uniform(-2, 2) for _ in range(nin)])
    out, micro_out = neuron(x), micro(mx)
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)


def test_a_layer_summed_with_sum_values_matches_micrograds_layer_summed_with_sum():
    random.seed(3)
    layer, micro = Layer(3, 4), micrograd_nn.Layer(3, 4)
    copy_weights(layer, micro)
    x, mx = both([0.5, -1.0, 2.0])
    out, micro_out = sum_values(layer(x)), sum(micro(mx))
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)


def test_the_lectures_mlp_and_loss_match_micrograd():
    random.seed(4)
    model, micro = MLP(3, [4, 4, 1]), micrograd_nn.MLP(3, [4, 4, 1])
    copy_weights(model, micro)
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0]]
    ys = [1.0, -1.0, -1.0]

    def loss(model, Value):
        # Targets as Values: micrograd folds a plain number's -y into one box (see chains.py).
        return sum((model(x) - Value(y)) ** 2 for x, y in zip(xs, ys))

    out, micro_out = loss(model, Value), loss(micro, MValue)
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)


# ---------------------------------------------------------------------------------------------
# sum_values and dot


@pytest.mark.parametrize("n", [1, 2, 5])
def test_sum_values_draws_as_pythons_sum(n):
    xs, mxs = both([random.uniform(-3, 3) for _ in range(n)])
    out, micro_out = sum_values(xs) * 2.0, sum(mxs) * 2.0
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)


def test_dot_with_a_constant_zero_bias_draws_as_the_gpt_scripts_sum():
    # nn.Linear(bias=False) calls dot(w, x, 0.0) where the scripts write sum(wi * xi ...).
    ws, mws = both([0.3, -0.7, 1.1])
    xs, mxs = both([2.0, 0.5, -1.0])
    out, micro_out = dot(ws, xs, 0.0), sum(w * x for w, x in zip(mws, mxs))
    out.backward()
    micro_out.backward()
    assert_drawing_matches_micrograd(out, micro_out)


def test_an_empty_dot_stays_one_node():
    b = Value(2.0, label="b")
    out = dot([], [], b)
    out.backward()
    assert [(n.op, n.data) for n in expand(topological_order(out))] == [("", 2.0), ("dot", 2.0)]


# ---------------------------------------------------------------------------------------------
# Any expression of the ops micrograd has, against micrograd


OPS = ["+", "-", "*", "/", "neg", "square", "relu", "sum", "dot"]


def build(program, leaves, Value, sum_values, dot):
    """Run ``program`` (a list of (op, i, j, k)) over ``leaves`` with one engine's functions."""
    values = list(leaves)
    for op, i, j, k in program:
        x, y, z = values[i % len(values)], values[j % len(values)], values[k % len(values)]
        if op == "+":
            values.append(x + y)
        elif op == "-":
            values.append(x - y)
        elif op == "*":
            values.append(x * y)
        elif op == "/":
            if abs(y.data) < 0.1:  # keep the numbers tame; the shapes are what matter
                continue
            values.append(x / y)
        elif op == "neg":
            values.append(-x)
        elif op == "square":
            values.append(x**2)
        elif op == "relu":
            values.append(x.relu())
        elif op == "sum":
            values.append(sum_values([x, y, z]))
        else:
            values.append(dot([x, y], [z, x], y))
    return values[-1] * 1.0  # a root that is never a leaf


@settings(max_examples=60, deadline=None)
@given(
    numbers=st.lists(st.floats(-3, 3).filter(lambda v: abs(v) > 0.2), min_size=3, max_size=3),
    program=st.lists(
        st.tuples(st.sampled_from(OPS), st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)),
        min_size=1,
        max_size=6,
    ),
)
def test_any_expression_draws_as_micrograd_builds_it(numbers, program):
    leaves, micro_leaves = both(numbers)

    def micro_dot(w, x, b):
        return sum((wi * xi for wi, xi in zip(w, x)), b)  # micrograd's Neuron

    root = build(program, leaves, Value, sum_values, dot)
    micro_root = build(program, micro_leaves, MValue, sum, micro_dot)
    if abs(root.data) > 1e6:
        return  # a chain of squares can overflow 4 decimals' comparison; not what is tested
    root.backward()
    micro_root.backward()
    assert_same_boxes(expanded_boxes(root), micrograd_boxes(micro_root))


# ---------------------------------------------------------------------------------------------
# The default drawing and the real graph stay as they were


def graph_state(root: Value) -> list[tuple]:
    return [(v.op, v.data, v.grad, v.label, tuple(map(id, v.children))) for v in topological_order(root)]


def test_expanding_leaves_the_graph_and_the_default_drawing_alone():
    random.seed(5)
    neuron = Neuron(3)
    a = Value(1.5, label="a")
    root = neuron([a, a / 2.0, -a]) - a
    root.backward()
    before, compact = graph_state(root), draw_dot(root).source
    draw_dot(root, expand=True)
    explore(root, expand=True, layout="layered")
    assert graph_state(root) == before
    assert draw_dot(root).source == draw_dot(root, expand=False).source == compact
    assert compact.count("shape=record") == len(topological_order(root))
    assert "label=dot shape=ellipse" in compact and 'label="-" shape=ellipse' in compact


def test_gradients_made_with_create_graph_show_their_numbers():
    a, b = Value(2.0), Value(-4.0)
    c = a / b - a
    c.backward(create_graph=True)
    float_grads = [n.grad for n in expand(topological_order(c))]
    a.grad = b.grad = c.grad = 0.0
    for v in topological_order(c):
        v.grad = 0.0
    c.backward()
    assert float_grads == [n.grad for n in expand(topological_order(c))]


def test_the_chains_count_towards_max_nodes():
    a, b = Value(6.0), Value(3.0)
    c = a / b  # 3 Values, 4 boxes when expanded
    draw_dot(c, max_nodes=3)
    with pytest.raises(GraphTooLargeError, match=r"expand=True the graph has 4 boxes") as caught:
        draw_dot(c, expand=True, max_nodes=3)
    assert (caught.value.size, caught.value.max_nodes) == (4, 3)
    with pytest.raises(GraphTooLargeError):
        explore(c, expand=True, max_nodes=3)


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_expand_must_be_a_bool(flag):
    with pytest.raises(TypeError, match="expand must be True or False"):
        draw_dot(Value(1.0), expand=flag)
    with pytest.raises(TypeError, match="expand must be True or False"):
        explore(Value(1.0), expand=flag)


# ---------------------------------------------------------------------------------------------
# The explorer


def embedded(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="chainrule-graph">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def page_backward(data: dict) -> list[float]:
    """What the page's script does: seed the root with 1, then add share * grad step by step."""
    grads = [0.0] * len(data["nodes"])
    grads[data["root"]] = 1.0
    for step in data["steps"]:
        for child, share in step["shares"]:
            grads[child] += share * grads[step["node"]]
    return grads


def page_boxes(data: dict) -> list[tuple]:
    boxes = []
    for node, grad in zip(data["nodes"], page_backward(data)):
        inputs = {c: data["nodes"][c]["data"] for c in node["children"]}  # distinct inputs
        boxes.append((node["op"], node["data"], grad, sorted(inputs.values())))
    return boxes


def test_explore_steps_through_micrograds_graph():
    random.seed(6)
    neuron, micro = Neuron(3), micrograd_nn.Neuron(3)
    copy_weights(neuron, micro)
    x, mx = both([1.0, -0.5, 2.0])
    out, micro_out = neuron(x) / (x[0] - x[1]), micro(mx) / (mx[0] - mx[1])
    micro_out.backward()
    page = explore(out, expand=True, layout="layered")
    data = embedded(page.html)
    assert page.size == len(data["nodes"]) == len(micrograd_boxes(micro_out))
    assert_same_boxes(page_boxes(data), micrograd_boxes(micro_out))
    formulas = [n["formula"] for n in data["nodes"]]
    assert any(f is not None and f.endswith(" ** -1") for f in formulas)
    # The default page still has one box per Value.
    assert explore(out, layout="layered").size == len(topological_order(out))


def test_chainrule_explore_expand_writes_the_expanded_page(tmp_path, capsys):
    target = tmp_path / "page.html"
    status = main(["explore", "c = a / b - a", "a=6", "b=3", "--expand", "--out", str(target)])
    assert status == 0
    ma, mb = MValue(6.0), MValue(3.0)
    micro_out = ma / mb - ma
    micro_out.backward()
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"wrote {target}: {len(micrograd_boxes(micro_out))} values")
    data = embedded(target.read_text(encoding="utf-8"))
    assert_same_boxes(page_boxes(data), micrograd_boxes(micro_out))
    names = [n["name"] for n in data["nodes"]]
    assert "a" in names and "b" in names and "-1" in names  # the -1 of a * -1 is a box of its own
    # Without --expand the page has the three Values a, b, a / b and c = a / b - a.
    main(["explore", "c = a / b - a", "a=6", "b=3", "--out", str(target)])
    assert len(embedded(target.read_text(encoding="utf-8"))["nodes"]) == 4


def test_the_public_api_takes_expand():
    assert chainrule.explore(Value(2.0) - Value(1.0), expand=True, layout="layered").size == 5
