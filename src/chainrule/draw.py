"""Draw the graph behind a Value with Graphviz, as in the lecture's pictures.

Every Value becomes a box ``label | data | grad``; every computed Value gets a small oval
holding the name of the op that made it, with an arrow from each of its inputs. A value used
twice (``a + a``) sends two arrows into the same oval, which is exactly why its gradient adds
up from two contributions.

>>> from chainrule import Value, draw_dot
>>> a = Value(3.0, label="a")
>>> b = a + a
>>> b.label = "b"
>>> b.backward()
>>> print(draw_dot(b).source)
digraph {
    graph [rankdir=LR]
    n0 [label="{ a | data 3.0000 | grad 2.0000 }" shape=record]
    n1 [label="{ b | data 6.0000 | grad 1.0000 }" shape=record]
    n1_op [label="+" shape=ellipse]
    n1_op -> n1
    n0 -> n1_op
    n0 -> n1_op
}
<BLANKLINE>

The Graphviz Python package (``pip install "chainrule[viz]"``) builds the DOT text; turning it
into a picture also needs Graphviz's ``dot`` program, which is installed separately.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import signal
import subprocess
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from . import chains
from ._checks import is_integer
from ._files import write_atomically
from .engine import Value, _read_data, _read_grad, topological_order

if TYPE_CHECKING:
    import graphviz

DEFAULT_MAX_NODES = 1000
RANKDIRS = ("LR", "RL", "TB", "BT")
SOURCE_SUFFIXES = (".dot", ".gv")  # files that get the DOT text itself, no rendering needed
# Graphviz's layout time grows much faster than the graph: a few hundred values can keep `dot`
# busy for minutes. After this many seconds it is stopped (see run_dot).
DOT_TIMEOUT_SECONDS = 60

INSTALL_GRAPHVIZ = (
    "Graphviz's `dot` program was not found on PATH, so the graph cannot be rendered. "
    "Install Graphviz itself (the Python package alone is not enough): "
    "Debian/Ubuntu `sudo apt-get install graphviz`, macOS `brew install graphviz`, "
    "conda `conda install -c conda-forge graphviz`, Windows https://graphviz.org/download/. "
    "The DOT text is still available as `.source`, and save_graph(root, 'graph.dot') writes it "
    "without Graphviz."
)


class GraphTooLargeError(ValueError):
    """Raised by ``draw_dot`` for a graph with more Values than ``max_nodes``."""

    def __init__(self, message: str, size: int, max_nodes: int) -> None:
        super().__init__(message)
        self.size = size  # how many Values the graph has
        self.max_nodes = max_nodes


class GraphvizNotFoundError(RuntimeError):
    """Raised when rendering needs Graphviz's ``dot`` program and it is not installed."""


class GraphvizTimeoutError(RuntimeError):
    """Raised when Graphviz's ``dot`` runs longer than its time limit; it is stopped."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds  # the limit that was reached


# ---------------------------------------------------------------------------------------------
# Public functions


def draw_dot(
    root: Value,
    format: str = "svg",
    rankdir: str = "LR",
    max_nodes: int | None = DEFAULT_MAX_NODES,
    expand: bool = False,
) -> graphviz.Digraph:
    """The graph that computed ``root``, as a ``graphviz.Digraph`` (shown inline in Jupyter).

    ``format`` is the picture format used by ``render``, ``pipe`` and Jupyter; ``rankdir`` is the
    direction of the arrows ('LR' left to right, or 'TB', 'RL', 'BT'). A graph with more than
    ``max_nodes`` Values is refused with ``GraphTooLargeError`` before any DOT is built, because
    Graphviz needs minutes for a training graph; pass a larger ``max_nodes``, or None for no limit.

    ``expand=True`` draws the graph micrograd's engine builds for the same computation, as in the
    lecture: ``dot`` and ``sum`` nodes and ``-``, ``/`` as chains of ``+``, ``*``, ``*-1`` and
    ``**-1``, with every intermediate value and its gradient (see ``chainrule.chains``). Those
    boxes exist only in the drawing, and count towards ``max_nodes`` too.

    >>> from chainrule import Value, draw_dot
    >>> x = Value(2.0, label="x")
    >>> graph = draw_dot(x.relu())
    >>> graph.source.count("shape=record")  # one box per Value: x and relu(x)
    2
    >>> total = sum(Value(i) for i in range(10))  # 10 numbers, the 0 sum starts from, 10 additions
    >>> draw_dot(total, max_nodes=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chainrule.draw.GraphTooLargeError: draw_dot: the graph has 21 Values, more than max_nodes=5...
    >>> a, b = Value(6.0, label="a"), Value(3.0, label="b")
    >>> draw_dot(a / b, expand=True).source.count("shape=record")  # a, b, b**-1 and a * b**-1
    4
    """
    if not isinstance(root, Value):
        raise TypeError(f"draw_dot: root must be a chainrule Value, not {type(root).__name__}")
    if not isinstance(expand, bool):
        raise TypeError(f"draw_dot: expand must be True or False, not {expand!r}")
    if rankdir not in RANKDIRS:
        raise ValueError(f"draw_dot: rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    order: list[Value] | list[chains.Node]  # the Values, or with expand the boxes of the chains
    order = nodes_within(
        root,
        max_nodes,
        "draw_dot",
        "Graphviz is slow on graphs this large",
        "draw",
        "draw a smaller expression",
    )
    if expand:
        order = expanded_within(order, max_nodes, "draw_dot", "draw a smaller expression")
    graphviz = _import_graphviz()
    graph = _drawing_class(graphviz)(format=format, graph_attr={"rankdir": rankdir})
    _add_nodes_and_edges(graph, order, horizontal=rankdir in ("LR", "RL"))
    return graph


def save_graph(root: Value, path: str | os.PathLike, **draw_options: Any) -> Path:
    """Draw ``root``'s graph into a file whose suffix names the format; return the path.

    ``graph.svg``, ``graph.png``, ``graph.pdf`` ... are rendered with Graphviz's ``dot``;
    ``graph.dot`` (or ``.gv``) gets the DOT text and needs no ``dot`` program. Other keyword
    arguments go to ``draw_dot``. ``dot`` gets ``DOT_TIMEOUT_SECONDS``; past that it is stopped
    and ``GraphvizTimeoutError`` raised. The file is written whole or not at all: the picture
    is made in memory first and moved into place in one step, so a failure leaves no partial
    file; a symlink at ``path`` stays a link, and the file it points to gets the picture.

    >>> import pathlib, tempfile
    >>> from chainrule import Value
    >>> a = Value(3.0, label="a")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_graph(a * a, pathlib.Path(folder) / "square.dot")
    ...     print(path.read_text().count("n0 -> n1_op"))  # a feeds the * twice
    2
    """
    if "format" in draw_options:
        raise TypeError("save_graph: the format comes from the file name's suffix, e.g. graph.svg")
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        raise ValueError(
            f"save_graph: cannot tell the format of {str(path)!r} without a suffix; "
            f"name it e.g. graph.svg, graph.png, graph.pdf or graph.dot"
        )
    if not path.parent.is_dir():  # checked first: rendering may take a while, and may fail otherwise
        raise FileNotFoundError(errno.ENOENT, "folder does not exist", str(path.parent))
    if suffix in SOURCE_SUFFIXES:
        content = draw_dot(root, **draw_options).source.encode("utf-8")
    else:
        picture_format = suffix[1:]
        graphviz = _import_graphviz()
        if picture_format not in graphviz.FORMATS:
            raise ValueError(
                f"save_graph: Graphviz cannot write {suffix!r} files ({str(path)!r}); "
                f"use .svg, .png, .pdf or .dot"
            )
        source = draw_dot(root, **draw_options).source.encode("utf-8")
        content = run_dot([f"-T{picture_format}"], source)
    write_atomically(path, [content])
    return path


# ---------------------------------------------------------------------------------------------
# Building the DOT text


def _add_nodes_and_edges(
    graph: graphviz.Digraph, order: list[Value] | list[chains.Node], horizontal: bool
) -> None:
    """A box per Value (or Node) and an op oval per computed one, named by position in ``order``."""
    # Names come from the topological order, not id(), so the same graph gives the same text.
    name_of = {value: f"n{i}" for i, value in enumerate(order)}
    for value in order:
        name = name_of[value]
        graph.node(name, label=_record_label(value, horizontal), shape="record")
        if not value.children:
            continue
        op_name = f"{name}_op"
        graph.node(op_name, label=value.op, shape="ellipse")
        graph.edge(op_name, name)
        # One arrow per argument, repeats included: `a + a` shows two arrows from a.
        for child in value.children:
            graph.edge(name_of[child], op_name)


def _record_label(value: Value | chains.Node, horizontal: bool) -> str:
    """``{ label | data 2.0000 | grad 1.0000 }``, the label field left out when empty."""
    data, grad = _shown(value, "data"), _shown(value, "grad")
    fields = [f"data {_format_number(data)}", f"grad {_format_number(grad)}"]
    if value.label:
        fields.insert(0, _escape_record_text(str(value.label)))
    label = " | ".join(fields)
    # With rankdir LR, record fields stack vertically unless wrapped in braces, and the other
    # way round for TB: the braces keep the box a single row either way.
    if horizontal:
        label = "{ " + label + " }"
    return label  # never starts with '<', so Graphviz cannot mistake it for an HTML label


def _shown(value: Value | chains.Node, slot: str) -> float | Value:
    """``value.data`` or ``value.grad``, read from the slot itself: a drawing made inside
    chainrule.compile's trace only shows the numbers, so the trace need not see it read them."""
    if isinstance(value, Value):
        return (_read_data if slot == "data" else _read_grad)(value)
    return getattr(value, slot)


def _format_number(x: float | Value) -> str:
    """Four decimals like the lecture; huge numbers in scientific notation; nan and inf by name.

    After ``backward(create_graph=True)`` a gradient is a Value (with a graph of its own); the
    box shows the number it holds.
    """
    if isinstance(x, Value):
        x = cast(float, _shown(x, "data"))  # (a Value's data is a float)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if abs(x) >= 1e9:
        return f"{x:.4e}"  # 4 decimals of a 300-digit number would not fit in a box
    return f"{x:.4f}"


_RECORD_SPECIAL = '{}|<>"'


def _escape_record_text(text: str) -> str:
    """Backslash the characters that mean something inside a record label or a DOT string."""
    escaped = []
    for char in text:
        if char == "\\" or char in _RECORD_SPECIAL:
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")  # DOT's own line break
        elif ord(char) < 32:
            escaped.append(" ")  # other control characters have no business in a picture
        else:
            escaped.append(char)
    return "".join(escaped)


def nodes_within(
    root: Value, max_nodes: int | None, where: str, why: str, verb: str, instead: str
) -> list[Value]:
    """The graph's Values in topological order, or GraphTooLargeError if there are more than ``max_nodes``.

    The size guard of ``draw_dot`` and ``chainrule.explore``: ``where`` names the function,
    ``why`` says why a large graph is refused, ``verb`` and ``instead`` what to do about it.
    """
    if max_nodes is not None:
        if not is_integer(max_nodes):
            raise TypeError(f"{where}: max_nodes must be an integer or None, not {type(max_nodes).__name__}")
        if max_nodes < 1:
            raise ValueError(f"{where}: max_nodes must be at least 1, got {max_nodes}")
    order = topological_order(root)  # linear in the size of the graph, so counting is cheap
    if max_nodes is not None and len(order) > max_nodes:
        raise GraphTooLargeError(
            f"{where}: the graph has {len(order)} Values, more than max_nodes={max_nodes}. {why}; "
            f"to {verb} it anyway, pass a larger limit, e.g. {where}(root, max_nodes={len(order)}), "
            f"or {instead}.",
            size=len(order),
            max_nodes=max_nodes,
        )
    return order


def expanded_within(order: list[Value], max_nodes: int | None, where: str, instead: str) -> list[chains.Node]:
    """The boxes of ``order`` drawn as micrograd's chains (``chains.expand``), at most ``max_nodes``.

    ``order`` has passed ``nodes_within`` already; the chains add boxes, which count too.
    """
    boxes = chains.expand(order)
    if max_nodes is not None and len(boxes) > max_nodes:
        raise GraphTooLargeError(
            f"{where}: drawn with expand=True the graph has {len(boxes)} boxes (its {len(order)} "
            f"Values and the links of the chains), more than max_nodes={max_nodes}; pass a larger "
            f"limit, e.g. {where}(root, expand=True, max_nodes={len(boxes)}), or {instead}.",
            size=len(boxes),
            max_nodes=max_nodes,
        )
    return boxes


# ---------------------------------------------------------------------------------------------
# Graphviz, imported on first use so `import chainrule` never needs it


def _import_graphviz() -> ModuleType:
    try:
        import graphviz
    except ImportError:
        raise ModuleNotFoundError(
            'drawing graphs needs the graphviz Python package: pip install "chainrule[viz]" '
            "(or pip install graphviz)",
            name="graphviz",
        ) from None
    return graphviz


@functools.cache
def _drawing_class(graphviz: Any) -> type[graphviz.Digraph]:
    """A ``graphviz.Digraph`` whose rendering explains how to install a missing ``dot``."""

    class Drawing(graphviz.Digraph):
        # Jupyter's display (_repr_mimebundle_) and view() go through pipe() and render().
        def pipe(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().pipe(*args, **kwargs)
            except graphviz.ExecutableNotFound:
                raise GraphvizNotFoundError(INSTALL_GRAPHVIZ) from None

        def render(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().render(*args, **kwargs)
            except graphviz.ExecutableNotFound:
                raise GraphvizNotFoundError(INSTALL_GRAPHVIZ) from None

    Drawing.__module__ = __name__
    Drawing.__qualname__ = "Drawing"
    return Drawing


# ---------------------------------------------------------------------------------------------
# Running Graphviz's dot, with a time limit (for save_graph and chainrule.explore)


def run_dot(arguments: list[str], source: bytes) -> bytes:
    """What ``dot ARGUMENTS`` writes for the DOT text ``source``, within ``DOT_TIMEOUT_SECONDS``.

    Raises ``GraphvizNotFoundError`` when there is no ``dot`` program, ``GraphvizTimeoutError``
    when it runs past the limit (it is stopped, with anything it started), and
    ``subprocess.CalledProcessError`` (its ``stderr`` says why) when it fails. Its complaints
    stay off the terminal.
    """
    seconds = DOT_TIMEOUT_SECONDS
    command = ["dot", *arguments]
    try:
        # A session of its own, so that stopping it stops any program it started, too.
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=os.name == "posix",
        )
    except FileNotFoundError:
        raise GraphvizNotFoundError(INSTALL_GRAPHVIZ) from None
    with process:
        try:
            output, errors = process.communicate(source, timeout=seconds)
        except BaseException as error:  # the time limit, or Ctrl-C: never leave dot running
            _stop(process)
            if isinstance(error, subprocess.TimeoutExpired):
                raise GraphvizTimeoutError(
                    f"Graphviz's dot took longer than {seconds:g} s to lay out the graph and was stopped",
                    seconds,
                ) from None
            raise
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command, output, errors)
    return output


def _stop(process: subprocess.Popen) -> None:
    """Kill ``process`` (on POSIX its whole process group) and wait for it."""
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended on its own meanwhile
            pass
    else:
        process.kill()
    process.communicate()


__all__ = [
    "DOT_TIMEOUT_SECONDS",
    "GraphTooLargeError",
    "GraphvizNotFoundError",
    "GraphvizTimeoutError",
    "draw_dot",
    "run_dot",
    "save_graph",
]
