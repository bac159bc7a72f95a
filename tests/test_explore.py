"""Tests for chainrule.explore, without a browser: the page's HTML, its data, its layouts, the command.

The page itself (buttons, numbers, keyboard, no requests) is tested in a real browser in
test_explore_browser.py.
"""

import html
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from chainrule import Value, topological_order
from chainrule.cli import main
from chainrule.draw import GraphTooLargeError
from chainrule.explorer import NODE_HEIGHT, OP_HEIGHT, OP_WIDTH, Explorer, explore
from chainrule.expression import evaluate

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'


def lecture_graph():
    """The lecture's reuse example: d = a*b; e = a + b; f = d*e with a=-2, b=3."""
    return evaluate("d = a*b; e = a + b; f = d*e", {"a": -2, "b": 3}).output


def embedded(page: Explorer) -> dict:
    """The graph data the page's script reads."""
    match = re.search(r'<script type="application/json" id="chainrule-graph">(.*?)</script>', page.html, re.S)
    assert match, "the page embeds its graph as JSON"
    return json.loads(match.group(1))


# ---------------------------------------------------------------------------------------------
# The page is one self-contained file


def test_the_page_is_self_contained_and_names_no_network_address():
    page = explore(lecture_graph())
    text = page.html
    # Every http(s) address in the page is the SVG namespace name, which is an identifier, not fetched.
    assert set(re.findall(r"https?://[^\s\"')]*", text)) == {"http://www.w3.org/2000/svg"}
    # No attribute loads anything: no src at all, and the only href is the empty data: icon.
    assert not re.search(r"\ssrc\s*=", text)
    assert re.findall(r"\shref\s*=\s*\"([^\"]*)\"", text) == ["data:,"]
    assert "@import" not in text and "url(" not in text
    assert "fetch(" not in text and "XMLHttpRequest" not in text and "eval(" not in text
    # The browser itself is told to refuse any request the page might make.
    assert "default-src 'none'" in text
    # Script and style are inline.
    assert text.count("<script>") == 1 and text.count("<style>") == 1


def test_the_page_has_the_controls_with_their_names():
    text = explore(lecture_graph()).html
    for name, element in (("Step", "step"), ("Run backward", "run"), ("Reset", "reset")):
        assert f'<button type="button" id="{element}">{name}</button>' in text
    assert re.search(
        r'<label class="switch"><input type="checkbox" role="switch" id="overwrite"[^>]*> overwrite</label>',
        text,
    )


def test_the_embedded_data_holds_the_graph_and_chainrules_local_derivatives():
    root = lecture_graph()
    data = embedded(explore(root))
    order = topological_order(root)
    assert [n["name"] for n in data["nodes"]] == [v.label for v in order] == ["a", "b", "d", "e", "f"]
    assert [n["data"] for n in data["nodes"]] == [v.data for v in order]
    assert data["root"] == 4
    # One step per computed value, in reverse topological order (f, then e, then d), each with
    # d(node)/d(child) per input: d(d*e)/dd = e = 1, d(d*e)/de = d = -6; a + b gives 1 and 1;
    # d(a*b)/da = b = 3, d(a*b)/db = a = -2.
    assert data["steps"] == [
        {"node": 4, "shares": [[2, 1.0], [3, -6.0]]},
        {"node": 3, "shares": [[0, 1.0], [1, 1.0]]},
        {"node": 2, "shares": [[0, 3.0], [1, -2.0]]},
    ]
    assert data["nodes"][4]["formula"] == "d * e"
    assert data["nodes"][0]["formula"] is None  # a leaf


def test_a_value_used_twice_in_one_op_gets_two_shares():
    a = Value(3.0, label="a")
    data = embedded(explore(a * a))
    assert data["steps"] == [{"node": 1, "shares": [[0, 3.0], [0, 3.0]]}]  # d(a*a)/da = a, once per use
    assert data["nodes"][1]["children"] == [0, 0]


def test_local_derivatives_follow_each_op_rule():
    # One node of each function of the expression language, with its derivative worked out by hand.
    x = Value(0.5, label="x")
    cases = {
        "exp": (x.exp(), 1.6487212707001282),  # exp(0.5)
        "tanh": (x.tanh(), 1 - 0.46211715726000974**2),  # 1 - tanh(0.5)^2
        "relu": (x.relu(), 1.0),
        "log": (x.log(), 2.0),  # 1/x
        "**": (x**3, 0.75),  # 3 x^2
        "/": (x / 4, 0.25),
    }
    for op, (value, expected) in cases.items():
        shares = embedded(explore(value))["steps"][0]["shares"]
        assert shares[0][1] == pytest.approx(expected, rel=1e-12), op
    # A constant exponent gets no gradient, so no share goes to it.
    assert len(embedded(explore(x**3))["steps"][0]["shares"]) == 1


def test_unlabelled_values_get_generated_names_and_constants_their_number():
    a = Value(2.0, label="a")
    data = embedded(explore((a * 3).tanh()))
    assert [n["name"] for n in data["nodes"]] == ["a", "3", "v2", "v3"]
    assert [n["labelled"] for n in data["nodes"]] == [True, False, False, False]
    assert data["nodes"][3]["formula"] == "tanh(v2)"


def test_numbers_that_json_cannot_hold_become_strings_the_page_reads():
    big = Value(1e308, label="big")
    data = embedded(explore(big * 10))
    assert data["nodes"][2]["data"] == "Infinity"
    assert data["steps"][0]["shares"] == [[0, 10.0], [1, 1e308]]


def test_a_hostile_label_is_data_not_markup():
    x = Value(1.0, label=HOSTILE)
    page = explore(x * 2, title=HOSTILE)
    assert "<script>alert" not in page.html and "<img" not in page.html
    assert page.html.count("</script>") == 2  # the data's and the script's own
    assert embedded(page)["nodes"][0]["name"] == HOSTILE  # JSON gives it back unchanged
    assert html.escape(HOSTILE) in page.html  # the title, escaped


def test_explore_leaves_the_values_alone():
    root = lecture_graph()
    root.backward()
    before = [(v.data, v.grad) for v in topological_order(root)]
    explore(root)
    assert [(v.data, v.grad) for v in topological_order(root)] == before


def test_chainrule_explore_stays_the_function_after_the_module_is_imported():
    import chainrule.explorer  # noqa: F401  (a submodule named explore would shadow the function)

    assert chainrule.explore is explore


# ---------------------------------------------------------------------------------------------
# Size guard and bad arguments


def test_a_graph_over_the_limit_is_refused_saying_how_large_it_is(tmp_path):
    total = sum(Value(i) for i in range(10))  # 10 numbers, the 0 that sum starts from, 10 additions
    target = tmp_path / "big.html"
    with pytest.raises(GraphTooLargeError, match=r"the graph has 21 Values, more than max_nodes=5") as caught:
        explore(total, target, max_nodes=5)
    assert (caught.value.size, caught.value.max_nodes) == (21, 5)
    assert not target.exists()
    assert explore(total, max_nodes=21).size == 21
    assert explore(total, max_nodes=None).size == 21


def test_the_default_limit_refuses_a_huge_graph():
    a = Value(1.0)
    total = a
    for _ in range(1000):
        total = total + a
    with pytest.raises(GraphTooLargeError, match="1001 Values"):
        explore(total)


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"root": 3.0}, TypeError),
        ({"layout": "circle"}, ValueError),
        ({"max_nodes": 0}, ValueError),
        ({"max_nodes": 2.5}, TypeError),
    ],
)
def test_bad_arguments_are_refused(arguments, error):
    arguments = {"root": Value(1.0), **arguments}
    with pytest.raises(error):
        explore(**arguments)


# ---------------------------------------------------------------------------------------------
# Layouts


def boxes(data):
    """(left, top, right, bottom) of every value's box and op oval, as the page draws them."""
    result = []
    for node in data["nodes"]:
        result.append(
            (
                node["x"] - node["width"] / 2,
                node["y"] - NODE_HEIGHT / 2,
                node["x"] + node["width"] / 2,
                node["y"] + NODE_HEIGHT / 2,
            )
        )
        if node["children"]:
            x, y = node["op_x"], node["op_y"]
            result.append((x - OP_WIDTH / 2, y - OP_HEIGHT / 2, x + OP_WIDTH / 2, y + OP_HEIGHT / 2))
    return result


def assert_readable_layout(data):
    """Nothing overlaps, everything is on the page, and edges run left to right."""
    shapes = boxes(data)
    for i, first in enumerate(shapes):
        assert first[0] >= 0 and first[1] >= 0 and first[2] <= data["width"] and first[3] <= data["height"]
        for second in shapes[i + 1 :]:
            apart = (
                first[2] <= second[0]
                or second[2] <= first[0]
                or first[3] <= second[1]
                or second[3] <= first[1]
            )
            assert apart, (first, second)
    for node in data["nodes"]:
        if node["children"]:
            assert node["op_x"] < node["x"]
            assert all(data["nodes"][c]["x"] < node["op_x"] for c in node["children"])


def reuse_chain():
    x = Value(0.5, label="x")
    h = x * x + x
    h.label = "h"
    k = (h * x).tanh() + h.exp() - 3
    k.label = "k"
    return k


@pytest.mark.parametrize("graph", [lecture_graph, reuse_chain])
def test_the_built_in_layout_is_readable(graph):
    page = explore(graph(), layout="layered")
    assert page.layout == "layered"
    assert_readable_layout(embedded(page))


@needs_dot
@pytest.mark.parametrize("graph", [lecture_graph, reuse_chain])
def test_graphviz_lays_out_the_page_when_dot_is_installed(graph):
    page = explore(graph())
    assert page.layout == "graphviz"
    assert_readable_layout(embedded(page))


def test_without_dot_the_built_in_layout_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder with no program named dot
    page = explore(lecture_graph())
    assert page.layout == "layered"
    assert_readable_layout(embedded(page))
    assert explore(lecture_graph(), layout="graphviz").layout == "layered"  # asked for, but missing


def test_a_failing_dot_falls_back_to_the_built_in_layout(monkeypatch, tmp_path):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert explore(lecture_graph()).layout == "layered"


# ---------------------------------------------------------------------------------------------
# Files and Jupyter


def test_the_page_is_written_to_the_path(tmp_path):
    target = tmp_path / "page.html"
    page = explore(lecture_graph(), target)
    assert page.path == target
    assert target.read_text(encoding="utf-8") == page.html
    assert str(target) in repr(page)


def test_writing_into_a_missing_folder_names_the_file(tmp_path):
    target = tmp_path / "missing" / "page.html"
    with pytest.raises(FileNotFoundError, match=re.escape(str(target))):
        explore(lecture_graph(), target)


def test_jupyter_shows_the_page_in_an_iframe():
    page = explore(lecture_graph())
    shown = page._repr_html_()
    match = re.fullmatch(r'<iframe srcdoc="([^"]*)" [^>]*></iframe>', shown)
    assert match
    assert html.unescape(match.group(1)) == page.html


def test_the_script_and_style_are_package_data():
    # An installed (not editable) chainrule needs these files; pyproject.toml lists them.
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11 and later)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["setuptools"]["package-data"]["chainrule"]
    assert {"explorer_page/*.js", "explorer_page/*.css"} <= set(shipped)
    folder = resources.files("chainrule") / "explorer_page"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith((".js", ".css"))) == [
        "explorer.css",
        "explorer.js",
    ]


# ---------------------------------------------------------------------------------------------
# The command


def test_the_command_writes_the_page(tmp_path, capsys):
    target = tmp_path / "seed.html"
    status = main(["explore", "d = a*b; e = a + b; f = d*e", "a=-2", "b=3", "--out", str(target)])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0] == "f = -6"
    assert out[1].startswith(f"wrote {target}: 5 values, laid out by ")
    text = target.read_text(encoding="utf-8")
    assert "d = a*b; e = a + b; f = d*e a=-2 b=3" in text  # the title says what was explored
    assert [n["name"] for n in embedded(Explorer(text, 5, "")).get("nodes")] == ["a", "b", "d", "e", "f"]


def test_the_command_opens_the_page_when_asked(tmp_path, capsys, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    target = tmp_path / "b.html"
    assert main(["explore", "b = a + a", "a=3", "--out", str(target), "--open"]) == 0
    assert opened == [target.resolve().as_uri()]
    monkeypatch.setattr("webbrowser.open", lambda url: False)
    assert main(["explore", "b = a + a", "a=3", "--out", str(target), "--open"]) == 0
    assert "could not start a web browser" in capsys.readouterr().out


def test_the_command_writes_explore_html_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", "b = a + a", "a=3"]) == 0
    assert (tmp_path / "explore.html").is_file()


@pytest.mark.parametrize(
    "arguments, status, message",
    [
        (["b = a +", "a=1"], 2, "col"),
        (["a * b", "a=1"], 2, "missing value for 'b'"),
        (["x ** y", "x=-1", "y=2"], 2, "cannot compute the gradient"),
        (["+".join(["a"] * 1200), "a=1"], 2, "it has 1200 values, more than 1000"),
        (["a", "a=1", "--out", "missing-folder/page.html"], 1, "missing-folder/page.html"),
        (["-a", "a=1"], 2, "chainrule explore -- '-a*b'"),
    ],
)
def test_command_errors_are_one_line(arguments, status, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", *arguments]) == status
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("chainrule: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_command_runs_as_a_program(tmp_path):
    target = tmp_path / "page.html"
    done = subprocess.run(
        [sys.executable, "-m", "chainrule", "explore", "b = a + a", "a=3", "--out", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("b = 6\n")
    assert target.is_file()
