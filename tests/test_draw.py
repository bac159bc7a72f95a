"""Tests for chainrule.draw: the DOT text, the size limit, rendering with and without `dot`, files."""

import html
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest

import chainrule
from chainrule import Value
from chainrule.draw import (
    GraphTooLargeError,
    GraphvizNotFoundError,
    draw_dot,
    save_graph,
)

pytest.importorskip("graphviz")

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

RECORD = re.compile(r'^\s*(\w+) \[label="(.*)" shape=record\]$', re.MULTILINE)
OP_NODE = re.compile(r'^\s*(\w+) \[label="?(.*?)"? shape=ellipse\]$', re.MULTILINE)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)$", re.MULTILINE)


def records(source):
    """{node name: record label} for every Value box in the DOT text."""
    return dict(RECORD.findall(source))


def op_nodes(source):
    return dict(OP_NODE.findall(source))


def svg_texts(svg):
    """The text shown in an SVG picture (dot writes '-' as '&#45;', so unescape)."""
    return [html.unescape(text) for text in re.findall(r"<text[^>]*>(.*?)</text>", svg)]


def edges(source):
    """Every edge as (tail, head), repeats kept."""
    return EDGE.findall(source)


def lecture_example():
    """The a/b/d/e/f example, after backward.

    f = d*e = (a*b)*(a+b) at a = -2, b = 3:  d = -6, e = 1, f = -6.
    By hand: df/dd = e = 1, df/de = d = -6,
             df/da = b*(a+b) + a*b = 2ab + b^2 = -12 + 9 = -3,
             df/db = a*(a+b) + a*b = a^2 + 2ab = 4 - 12 = -8.
    """
    a, b = Value(-2.0, label="a"), Value(3.0, label="b")
    d = a * b
    d.label = "d"
    e = a + b
    e.label = "e"
    f = d * e
    f.label = "f"
    f.backward()
    return f


# ---------------------------------------------------------------------------------------------
# The DOT text


def test_one_record_per_value_with_label_data_and_grad():
    source = draw_dot(lecture_example()).source
    assert sorted(records(source).values()) == sorted(
        [
            "{ a | data -2.0000 | grad -3.0000 }",
            "{ b | data 3.0000 | grad -8.0000 }",
            "{ d | data -6.0000 | grad 1.0000 }",
            "{ e | data 1.0000 | grad -6.0000 }",
            "{ f | data -6.0000 | grad 1.0000 }",
        ]
    )


def test_an_op_node_feeds_each_computed_value_from_its_children():
    source = draw_dot(lecture_example()).source
    boxes = {label.split(" | ")[0].strip("{ "): name for name, label in records(source).items()}
    ops = op_nodes(source)
    assert sorted(ops.values()) == ["*", "*", "+"]  # d, e and f are computed; a and b are leaves
    edge_list = edges(source)
    made_by = {head: tail for tail, head in edge_list if tail in ops}  # result box -> its op node

    def op_and_inputs(result):
        op = made_by[boxes[result]]
        return ops[op], sorted(tail for tail, head in edge_list if head == op)

    assert op_and_inputs("d") == ("*", sorted([boxes["a"], boxes["b"]]))
    assert op_and_inputs("e") == ("+", sorted([boxes["a"], boxes["b"]]))
    assert op_and_inputs("f") == ("*", sorted([boxes["d"], boxes["e"]]))
    assert len(edge_list) == 3 + 2 * 3  # op -> result for 3 results, 2 inputs each


def test_a_value_used_twice_sends_two_edges():
    a = Value(3.0, label="a")
    b = a + a
    b.backward()  # b = 2a, so db/da = 2
    source = draw_dot(b).source
    (a_name,) = [name for name, label in records(source).items() if label.startswith("{ a |")]
    (op_name,) = op_nodes(source)
    assert Counter(edges(source))[(a_name, op_name)] == 2
    assert "{ a | data 3.0000 | grad 2.0000 }" in records(source).values()


def test_every_argument_of_an_n_ary_node_gets_an_edge():
    w = [Value(1.0), Value(2.0)]
    x = [Value(3.0), Value(4.0)]
    out = chainrule.dot(w, x, Value(0.5))
    source = draw_dot(out).source
    (op_name,) = op_nodes(source)
    assert len([edge for edge in edges(source) if edge[1] == op_name]) == 5  # w1 w2 x1 x2 b


def test_empty_label_leaves_out_the_label_field():
    source = draw_dot(Value(2.0) * 3).source
    assert set(records(source).values()) == {
        "{ data 2.0000 | grad 0.0000 }",
        "{ data 3.0000 | grad 0.0000 }",
        "{ data 6.0000 | grad 0.0000 }",
    }


def test_numbers_have_four_decimals_and_nan_inf_are_readable():
    values = [Value(float("nan"), label="n"), Value(float("inf")), Value(-float("inf")), Value(1e300)]
    total = chainrule.sum_values(values)
    labels = set(records(draw_dot(total).source).values())
    assert "{ n | data nan | grad 0.0000 }" in labels
    assert "{ data inf | grad 0.0000 }" in labels
    assert "{ data -inf | grad 0.0000 }" in labels
    assert "{ data 1.0000e+300 | grad 0.0000 }" in labels  # not a 300-digit number


def test_record_special_characters_are_escaped():
    x = Value(1.0, label='w{1}|<in>"q"\\')
    source = draw_dot(x).source
    assert records(source) == {"n0": r"{ w\{1\}\|\<in\>\"q\"\\ | data 1.0000 | grad 0.0000 }"}


def test_rankdir_tb_drops_the_braces_so_boxes_stay_one_row():
    source = draw_dot(Value(1.0, label="x"), rankdir="TB").source
    assert "rankdir=TB" in source
    assert records(source) == {"n0": "x | data 1.0000 | grad 0.0000"}


def test_same_graph_gives_the_same_source():
    first = draw_dot(lecture_example()).source
    second = draw_dot(lecture_example()).source  # new Values, new id()s
    assert first == second
    root = lecture_example()
    assert draw_dot(root).source == draw_dot(root).source


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(TypeError, match="root must be a chainrule Value, not float"):
        draw_dot(2.0)
    with pytest.raises(ValueError, match="rankdir must be one of"):
        draw_dot(Value(1.0), rankdir="sideways")
    with pytest.raises(ValueError, match="max_nodes must be at least 1"):
        draw_dot(Value(1.0), max_nodes=0)
    with pytest.raises(TypeError, match="max_nodes must be an integer"):
        draw_dot(Value(1.0), max_nodes=10.5)
    with pytest.raises(ValueError, match="unknown format"):
        draw_dot(Value(1.0), format="nonsense")


# ---------------------------------------------------------------------------------------------
# Size limit


def test_a_40000_node_graph_is_refused_quickly_and_the_error_says_its_size():
    x = Value(0.0)
    for _ in range(20_000):
        x = x + 1.0  # each step makes two Values: the constant 1.0 and the sum
    nodes = 1 + 2 * 20_000
    start = time.perf_counter()
    with pytest.raises(GraphTooLargeError) as refused:
        draw_dot(x)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    message = str(refused.value)
    assert f"has {nodes} Values" in message
    assert "max_nodes=1000" in message  # the default limit
    assert f"max_nodes={nodes}" in message  # how to draw it anyway
    assert isinstance(refused.value, ValueError)


def test_max_nodes_is_inclusive_and_none_means_no_limit():
    x = Value(1.0) * 2  # 3 Values
    assert len(records(draw_dot(x, max_nodes=3).source)) == 3
    with pytest.raises(GraphTooLargeError, match="has 3 Values, more than max_nodes=2"):
        draw_dot(x, max_nodes=2)
    assert len(records(draw_dot(x, max_nodes=None).source)) == 3


# ---------------------------------------------------------------------------------------------
# Rendering with Graphviz's dot


@needs_dot
def test_renders_a_real_svg_with_the_labels_and_numbers():
    svg = draw_dot(lecture_example()).pipe(encoding="utf-8")
    assert "<svg" in svg
    texts = svg_texts(svg)
    for expected in ["a", "b", "d", "e", "f", "data -2.0000", "grad -3.0000", "grad -8.0000", "*", "+"]:
        assert expected in texts


@needs_dot
def test_escaped_labels_render_back_to_the_original_text():
    label = 'w{1}|<in>"q"\\'
    svg = draw_dot(Value(1.0, label=label)).pipe(encoding="utf-8")
    texts = svg_texts(svg)
    assert label in texts


@needs_dot
def test_jupyter_display_gives_svg():
    bundle = draw_dot(Value(1.0, label="x"))._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]


def test_missing_dot_explains_how_to_install_and_keeps_the_source(monkeypatch, tmp_path):
    graph = draw_dot(lecture_example())
    monkeypatch.setenv("PATH", "")  # no program named dot can be found
    for render in (graph.pipe, graph._repr_mimebundle_, lambda: graph.render(outfile=tmp_path / "g.svg")):
        with pytest.raises(GraphvizNotFoundError) as missing:
            render()
        message = str(missing.value)
        assert "apt-get install graphviz" in message
        assert "brew install graphviz" in message
        assert "conda install -c conda-forge graphviz" in message
    assert "{ a | data -2.0000 | grad -3.0000 }" in graph.source


def test_missing_graphviz_python_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    with pytest.raises(ImportError, match=r"chainrule\[viz\]"):
        draw_dot(Value(1.0))


def test_import_chainrule_does_not_import_graphviz():
    check = "import sys, chainrule; chainrule.draw_dot; assert 'graphviz' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


# ---------------------------------------------------------------------------------------------
# save_graph


@needs_dot
def test_save_graph_writes_svg_and_png(tmp_path):
    root = lecture_example()
    svg_path = save_graph(root, tmp_path / "graph.svg")
    assert svg_path == tmp_path / "graph.svg"
    svg = svg_path.read_text(encoding="utf-8")
    assert "<svg" in svg and "grad -8.0000" in svg_texts(svg)
    png = save_graph(root, str(tmp_path / "graph.PNG")).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.PNG", "graph.svg"]  # no leftovers


def test_save_graph_writes_dot_source_without_the_dot_program(monkeypatch, tmp_path):
    root = lecture_example()
    monkeypatch.setenv("PATH", "")
    path = save_graph(root, tmp_path / "graph.dot", rankdir="TB")
    assert path.read_text(encoding="utf-8") == draw_dot(root, rankdir="TB").source


def test_failed_save_leaves_the_old_file_and_no_partial_file(monkeypatch, tmp_path):
    target = tmp_path / "graph.svg"
    target.write_text("previous picture")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizNotFoundError):
        save_graph(lecture_example(), target)
    assert target.read_text() == "previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.svg"]


def test_save_graph_refuses_unknown_formats_and_missing_folders(tmp_path):
    root = Value(1.0)
    with pytest.raises(ValueError, match="without a suffix"):
        save_graph(root, tmp_path / "graph")
    with pytest.raises(ValueError, match="cannot write '.xyz' files"):
        save_graph(root, tmp_path / "graph.xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_graph(root, tmp_path / "missing" / "graph.dot")
    with pytest.raises(TypeError, match="format comes from the file name"):
        save_graph(root, tmp_path / "graph.svg", format="png")
    with pytest.raises(GraphTooLargeError):
        save_graph(root * 2, tmp_path / "graph.dot", max_nodes=1)
    assert list(tmp_path.iterdir()) == []


def test_save_graph_onto_a_folder_names_the_path_not_a_temporary_file(tmp_path):
    target = tmp_path / "taken.dot"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        save_graph(Value(1.0), target)
    assert refused.value.filename == str(target)
    assert ".tmp" not in str(refused.value)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.dot"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------
# Gradients that are Values: after backward(create_graph=True)


def test_a_graph_with_value_gradients_shows_the_numbers_inside():
    x = Value(0.5, label="x")
    y = x**4
    y.label = "y"
    y.backward(create_graph=True)  # x.grad = 4 x^3 = 0.5, as a Value with its own graph
    assert isinstance(x.grad, Value)
    boxes = records(draw_dot(y).source).values()
    assert "{ x | data 0.5000 | grad 0.5000 }" in boxes
    assert "{ y | data 0.0625 | grad 1.0000 }" in boxes  # y.grad is the Value 1.0


def test_the_graph_of_a_gradient_can_be_drawn_and_saved(tmp_path):
    x = Value(3.0, label="x")
    (x * x * x).backward(create_graph=True)  # x.grad = 3 x^2 = 27
    gradient = x.grad
    gradient.backward(create_graph=True)  # d/dx 3 x^2 = 6 x = 18 accumulates into x.grad: 27 + 18
    source = draw_dot(gradient).source
    assert "{ x | data 3.0000 | grad 45.0000 }" in records(source).values()
    path = save_graph(gradient, tmp_path / "gradient.dot")
    assert path.read_text(encoding="utf-8") == source


def test_a_missing_folder_is_reported_before_rendering(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")  # rendering would fail for want of dot; the folder comes first
    with pytest.raises(FileNotFoundError, match="folder does not exist") as missing:
        save_graph(Value(1.0), tmp_path / "missing" / "graph.svg")
    assert missing.value.filename == str(tmp_path / "missing")
