"""The backpropagation explorer: one HTML page that steps through the backward pass of a graph.

The page draws the graph as the lecture does (a box ``label | data | grad`` per Value, a small
oval for the op that made it) and has three buttons: **Step** runs one node's backward rule and
shows the update ``child.grad += local * node.grad`` with its numbers, **Run backward** runs the
remaining steps, **Reset** starts again. A switch named **overwrite** shows the lecture's bug,
``child.grad = local * node.grad``, next to the correct gradients: a value used twice keeps only
the last contribution it received.

Division of labour, so that there is one implementation of calculus, not two: Python works out
every node's local derivatives here with chainrule's own backward rules (``ops.py``), and the
page's script only multiplies and adds them, in the order chainrule's ``backward`` uses. So after
"Run backward" the page shows the same gradients as ``backward()`` (to the last bit for + - * and
the functions whose local derivative chainrule stores; ops whose rule divides, such as ``/``,
may differ in the last digit, since the page multiplies by 1/y where the rule divides by y).

The page is a single file: its script, its style and the graph are all inside, and it makes no
network request (its Content-Security-Policy forbids them), so it works offline from a
``file://`` URL and in Jupyter.

>>> from chainrule import Value
>>> a = Value(3.0, label="a")
>>> page = explore(a + a)
>>> page.size, "<button" in page.html     # a and a + a: one Value used twice
(2, True)
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import ops
from ._files import write_atomically
from .chains import Node, as_nodes
from .draw import GraphvizNotFoundError, GraphvizTimeoutError, expanded_within, nodes_within, run_dot
from .engine import Value

__all__ = ["DEFAULT_MAX_NODES", "Explorer", "explore"]

# A page of 1000 Values opens in about a second; Graphviz takes longer to lay out larger graphs.
DEFAULT_MAX_NODES = 1000
LAYOUTS = ("auto", "graphviz", "layered")

# Sizes in CSS pixels, shared by the layout here and the drawing in the page's script.
CHAR_WIDTH = 7.5  # of the 12px monospace font the boxes use
NAME_CHARS = 16  # longer names are cut short in the box (the details panel shows them whole)
NUMBER_CHARS = 11  # the widest number the boxes show, e.g. -99999.9999 or -1.234e+300
BOX_HEIGHT = 42  # two lines: the numbers, and "correct ..." in overwrite mode
NODE_HEIGHT = 60  # the box and, under it, the contributions a reused value received
OP_WIDTH, OP_HEIGHT = 40, 28
COLUMN_GAP, ROW_GAP, MARGIN = 36, 14, 16


def _hint(op_name: str) -> str | None:
    """What the op's rule says, for the reader: the hint in its record in ops.py (where its
    numbers come from too); None for a leaf or an op that has none."""
    op = ops.OPS.get(op_name)
    return None if op is None else op.hint


INFIX = ("+", "-", "*", "/")
POWERS = ("**", "pow", "rpow")

_ASSETS = resources.files(__package__) / "explorer_page"


@dataclass(frozen=True)
class Explorer:
    """The explorer page of one graph: ``html`` is the whole page; shown inline in Jupyter.

    ``size`` is the number of Values, ``layout`` says who placed the boxes ('graphviz' or
    'layered', the built-in layout), and ``path`` is the file written, if any.
    """

    html: str
    size: int
    layout: str
    path: Path | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (whole or not at all; through a symlink) and return the path."""
        path = Path(path)
        write_atomically(path, [self.html.encode("utf-8")])
        return path

    def _repr_html_(self) -> str:
        # An iframe keeps the page's script and style apart from the notebook's own.
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="chainrule explorer" '
            'style="width: 100%; height: 640px; border: 1px solid #ccc;"></iframe>'
        )

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"Explorer(size={self.size}, layout={self.layout!r}{where})"


def explore(
    root: Value,
    path: str | os.PathLike | None = None,
    *,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    layout: str = "auto",
    title: str | None = None,
    expand: bool = False,
) -> Explorer:
    """The explorer page for the graph that computed ``root``; also written to ``path`` if given.

    The page starts with every gradient at zero, whatever the Values' ``grad`` holds now, and
    does not change the Values. ``layout`` is 'auto' (Graphviz's ``dot`` when it is installed,
    else the built-in layered layout), 'graphviz' or 'layered'. A graph with more than
    ``max_nodes`` Values is refused with ``GraphTooLargeError``; pass None for no limit.
    ``title`` is shown at the top of the page (default: the root's label). ``expand=True``
    draws and steps through the graph micrograd's engine builds for the same computation, as
    ``draw_dot(root, expand=True)`` draws it: ``dot``, ``sum``, ``-`` and ``/`` become chains of
    ``+``, ``*``, ``*-1`` and ``**-1`` (see ``chainrule.chains``); ``size`` then counts their links.

    >>> from chainrule import Value
    >>> a, b = Value(-2.0, label="a"), Value(3.0, label="b")
    >>> page = explore((a * b) * (a + b), layout="layered")
    >>> page.size, page.layout
    (5, 'layered')
    >>> explore(sum(Value(i) for i in range(10)), max_nodes=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chainrule.draw.GraphTooLargeError: explore: the graph has 21 Values, more than max_nodes=5...
    """
    if not isinstance(root, Value):
        raise TypeError(f"explore: root must be a chainrule Value, not {type(root).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"explore: layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(expand, bool):
        raise TypeError(f"explore: expand must be True or False, not {expand!r}")
    order = nodes_within(
        root,
        max_nodes,
        "explore",
        "A page this large is slow to lay out and hard to follow",
        "build",
        "explore a smaller expression",
    )
    if expand:
        boxes = expanded_within(order, max_nodes, "explore", "explore a smaller expression")
    else:
        boxes = as_nodes(order)
    graph = _graph_data(boxes)
    used = _place(graph, layout)
    if title is None:
        title = graph["nodes"][-1]["name"]
    page = Explorer(html=_page(graph, title), size=len(boxes), layout=used)
    if path is not None:
        page = Explorer(page.html, page.size, page.layout, page.save(path))
    return page


# ---------------------------------------------------------------------------------------------
# The graph as data for the page


def _graph_data(order: list[Node]) -> dict:
    """Nodes (in topological order, with names, formulas and box sizes) and the backward steps.

    Each step is one computed node, in the order ``backward`` visits them (reverse topological
    order), with its *shares*: ``[child index, d(node)/d(child)]`` per input, as chainrule's
    rule for the node's op gives them. The page multiplies each by the node's gradient.
    """
    index = {value: i for i, value in enumerate(order)}
    names = [_name(value, i) for i, value in enumerate(order)]
    nodes: list[dict[str, Any]] = []
    for i, value in enumerate(order):
        children = [index[child] for child in value.children]
        nodes.append(
            {
                "name": names[i],
                "labelled": bool(value.label),
                "data": _number(value.data),
                "op": value.op,
                "children": children,
                "formula": _formula(value.op, [names[c] for c in children]) if children else None,
                "hint": _hint(value.rule),
            }
        )
        nodes[-1]["cells"] = _cell_widths(names[i], value.data)
        nodes[-1]["width"] = round(sum(nodes[-1]["cells"]))
    steps = []
    for value in reversed(order):
        if value.children:
            steps.append({"node": index[value], "shares": _shares(value, index)})
    return {"nodes": nodes, "root": len(order) - 1, "steps": steps}


def _shares(value: Node, index: dict) -> list:
    """``[child index, local derivative]`` for each input of ``value`` that gets a gradient."""
    # From the op's rule in ops.py (or a hand-made node's stored local gradients or closure),
    # or for a link of an expanded chain, from the chain (chains.py).
    return [[index[child], _number(local)] for child, local in value.local_gradients()]


def _name(value: Node, i: int) -> str:
    """The value's label; a number for an unlabelled leaf (a constant); else v<index>."""
    if value.label:
        return " ".join(str(value.label).split())  # one line in a box
    if not value.children:
        return repr(value.data).removesuffix(".0")
    return f"v{i}"


def _formula(op: str, child_names: list[str]) -> str:
    """How a value was made by ``op``, in the expression language: ``a * b``, ``exp(x)``, ``x ** 2``."""
    if op in INFIX and len(child_names) == 2:
        return f"{child_names[0]} {op} {child_names[1]}"
    if op in POWERS and len(child_names) == 2:
        return f"{child_names[0]} ** {child_names[1]}"
    if op == "neg" and len(child_names) == 1:
        return f"-{child_names[0]}"
    if op.startswith("**") and len(child_names) == 1:  # expanded: micrograd's '**2', '**-1'
        return f"{child_names[0]} ** {op[2:]}"
    return f"{op or 'op'}({', '.join(child_names)})"


def _number(x: float) -> float | str:
    """A float for JSON, which has no inf or nan: those become strings the page's Number() reads."""
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _cell_widths(name: str, data: float) -> list[float]:
    """The widths of a value's three cells: its name, 'data 1.2345', 'correct -1.2345'."""
    # The data never changes, so its cell fits it; the gradient's cell fits the widest number.
    data_text = f"{data:.3e}" if abs(data) >= 1e5 else f"{data:.4f}"  # as the page shows it
    return [
        max(3, min(len(name), NAME_CHARS)) * CHAR_WIDTH + 14,
        len("data " + data_text) * CHAR_WIDTH + 14,
        len("correct ") * CHAR_WIDTH + NUMBER_CHARS * CHAR_WIDTH + 14,
    ]


# ---------------------------------------------------------------------------------------------
# Layout: where each box and op oval goes (centres, in pixels), left to right like the lecture's


def _place(graph: dict, layout: str) -> str:
    """Give every node ``x, y`` (and computed ones ``op_x, op_y``); return the layout used."""
    if layout in ("auto", "graphviz") and shutil.which("dot") is not None:
        positions = _graphviz_positions(graph["nodes"])
        if positions is not None:
            _store(graph, positions)
            return "graphviz"
    _store(graph, _layered_positions(graph["nodes"]))
    return "layered"


def _store(graph: dict, positions: dict) -> None:
    """Copy ``positions`` ({name: (x, y)}, names as in the DOT text) into the nodes; size the page."""
    for i, node in enumerate(graph["nodes"]):
        node["x"], node["y"] = positions[f"n{i}"]
        if node["children"]:
            node["op_x"], node["op_y"] = positions[f"n{i}_op"]
    graph["width"] = round(max(n["x"] + n["width"] / 2 for n in graph["nodes"]) + MARGIN)
    graph["height"] = round(max(n["y"] + NODE_HEIGHT / 2 for n in graph["nodes"]) + MARGIN)


def _graphviz_positions(nodes: list[dict]) -> dict | None:
    """Ask ``dot -Tplain`` where the boxes go; None if it fails or takes too long.

    Too long is ``chainrule.draw.DOT_TIMEOUT_SECONDS``, the limit ``save_graph`` has too.
    """
    inch = 72.0  # Graphviz measures in inches, and a CSS pixel is 1/96 in; 72 keeps sizes as drawn
    lines = [
        "digraph {",
        f"rankdir=LR; nodesep={ROW_GAP / inch:.3f}; ranksep={COLUMN_GAP / inch:.3f};",
        'node [shape=box fixedsize=true label=""];',
    ]
    for i, node in enumerate(nodes):
        lines.append(f"n{i} [width={node['width'] / inch:.3f} height={NODE_HEIGHT / inch:.3f}];")
        if node["children"]:
            lines.append(f"n{i}_op [width={OP_WIDTH / inch:.3f} height={OP_HEIGHT / inch:.3f}];")
            lines.append(f"n{i}_op -> n{i};")
            lines.extend(f"n{child} -> n{i}_op;" for child in node["children"])
    lines.append("}")
    try:
        plain = run_dot(["-Tplain"], "\n".join(lines).encode("utf-8")).decode("utf-8")
    except (GraphvizNotFoundError, GraphvizTimeoutError, subprocess.CalledProcessError, OSError):
        return None
    # Lines 'graph scale width height' and 'node name x y width height ...', y pointing up.
    positions, height = {}, 0.0
    for line in plain.splitlines():
        fields = line.split()
        if fields[:1] == ["graph"]:
            height = float(fields[3])
        elif fields[:1] == ["node"]:
            positions[fields[1]] = (float(fields[2]), float(fields[3]))
    return {
        name: (round(x * inch + MARGIN, 1), round((height - y) * inch + MARGIN, 1))
        for name, (x, y) in positions.items()
    }


def _layered_positions(nodes: list[dict]) -> dict:
    """The built-in layout: columns by depth, inputs on the left, each op just left of its value.

    A value's column is twice its depth (the longest path from an input), its op's column the
    one before. Within a column, nodes are ordered by the average position of their neighbours
    (the barycenter heuristic), sweeping right and left a few times to untangle the edges.
    """
    column: dict[str, int] = {}
    for i, node in enumerate(nodes):  # topological order: children first
        depth = 1 + max((column[f"n{c}"] // 2 for c in node["children"]), default=-1)
        column[f"n{i}"] = 2 * depth
        if node["children"]:
            column[f"n{i}_op"] = 2 * depth - 1
    # Neighbours to the left and to the right of each node.
    left: dict[str, list[str]] = {name: [] for name in column}
    right: dict[str, list[str]] = {name: [] for name in column}
    for i, node in enumerate(nodes):
        if node["children"]:
            op = f"n{i}_op"
            left[f"n{i}"].append(op)
            right[op].append(f"n{i}")
            for c in node["children"]:
                left[op].append(f"n{c}")
                right[f"n{c}"].append(op)
    columns: list[list[str]] = [[] for _ in range(max(column.values()) + 1)]
    for name in column:  # in topological order, a sensible start
        columns[column[name]].append(name)
    rank = {name: r for names in columns for r, name in enumerate(names)}
    for sweep in range(4):
        neighbours, sequence = (left, columns[1:]) if sweep % 2 == 0 else (right, columns[-2::-1])
        for names in sequence:
            names.sort(key=lambda name: _barycenter(name, neighbours, rank))
            rank.update((name, r) for r, name in enumerate(names))
    return _stack(columns, nodes)


def _barycenter(name: str, neighbours: dict, rank: dict) -> float:
    around = neighbours[name]
    return sum(rank[n] for n in around) / len(around) if around else rank[name]


def _stack(columns: list[list[str]], nodes: list[dict]) -> dict:
    """Pixel centres: columns side by side, each column's nodes stacked and centred vertically."""

    def size(name: str) -> tuple[float, float]:
        if name.endswith("_op"):
            return OP_WIDTH, OP_HEIGHT
        return nodes[int(name[1:])]["width"], NODE_HEIGHT

    heights = [sum(size(n)[1] + ROW_GAP for n in names) - ROW_GAP for names in columns]
    tallest = max(heights)
    positions: dict[str, tuple[float, float]] = {}
    x: float = MARGIN
    for names, height in zip(columns, heights):
        width = max((size(n)[0] for n in names), default=0.0)
        y = MARGIN + (tallest - height) / 2
        for name in names:
            h = size(name)[1]
            positions[name] = (round(x + width / 2, 1), round(y + h / 2, 1))
            y += h + ROW_GAP
        x += width + COLUMN_GAP
    return positions


# ---------------------------------------------------------------------------------------------
# The page


def _asset(name: str) -> str:
    text = (_ASSETS / name).read_text(encoding="utf-8")
    assert "</" not in text, f"{name} must not contain '</', which could end its inline element"
    return text


def _page(graph: dict, title: str) -> str:
    sizes = {
        "charWidth": CHAR_WIDTH,
        "nameChars": NAME_CHARS,
        "boxHeight": BOX_HEIGHT,
        "nodeHeight": NODE_HEIGHT,
        "opWidth": OP_WIDTH,
        "opHeight": OP_HEIGHT,
    }
    data = json.dumps({**graph, "sizes": sizes}, ensure_ascii=False, allow_nan=False)
    # Inside <script> only '</script' or '<!--' could end the data early: escape every '<' (and,
    # for good measure, '>' and '&'); JSON.parse turns them back into the same characters.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    steps = len(graph["steps"]) + 1  # the seed, then one step per computed value
    title = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,">
<title>Backpropagation explorer: {title}</title>
<style>
{_asset("explorer.css")}
</style>
</head>
<body>
<header>
  <h1>Backpropagation explorer</h1>
  <p class="subtitle"><code>{title}</code> — {len(graph["nodes"])} values, {steps} steps</p>
</header>
<section class="controls" aria-label="backward pass controls">
  <button type="button" id="step">Step</button>
  <button type="button" id="run">Run backward</button>
  <button type="button" id="reset">Reset</button>
  <label class="switch"><input type="checkbox" role="switch" id="overwrite"
    aria-describedby="mode-help"> overwrite</label>
  <span id="mode-help" class="mode-help">accumulate: <code>child.grad += local * node.grad</code></span>
  <span id="progress" class="progress" aria-live="polite">step 0 of {steps}</span>
</section>
<main>
  <div class="graph" id="graph" aria-label="the computation graph"></div>
  <div class="panels">
    <section id="explanation" class="panel" aria-live="polite" aria-label="what the last step did"></section>
    <section id="details" class="panel" aria-live="polite" aria-label="the value under the pointer"></section>
  </div>
</main>
<script type="application/json" id="chainrule-graph">{data}</script>
<script>
{_asset("explorer.js")}
</script>
</body>
</html>
"""
