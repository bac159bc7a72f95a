"""The C extensions that read Value's slots (_graph.c, compiler/_layout.c) serve one Value class.

A module run twice (importing engine.py by its file path, as pytest's importlib mode did for
doctests) makes a second Value class. Its setup used to take the C loops over, so that the first
copy's fast ops made Values of the second class. Now setup says no to a second class (False),
that copy runs on its Python loops, and both copies give the same numbers.
"""

import pytest

from chainrule import engine, ops
from chainrule.compiler import rewriting

pytestmark = pytest.mark.skipif(engine._graph is None, reason="chainrule/_graph.c is not built here")

SECOND_COPY = """
import importlib.util, math
from chainrule import engine as first

spec = importlib.util.spec_from_file_location("chainrule.engine", first.__file__)
second = importlib.util.module_from_spec(spec)
spec.loader.exec_module(second)  # engine.py run again: a Value class of its own
assert second.Value is not first.Value
assert first._graph is not None and second._graph is None  # the copy runs on Python

for module in (first, second):
    x, w = module.Value(0.5), module.Value(-1.5)
    y = (x * w + x.exp()).tanh() * x
    assert type(y) is module.Value and all(type(c) is module.Value for c in y.children)
    y.backward()
    print(repr((y.data, x.grad, w.grad)))
"""


def test_a_second_copy_of_the_engine_runs_on_python_and_leaves_the_first_on_c(run_python):
    first, second = run_python(SECOND_COPY).stdout.split("\n")[:2]
    assert first == second  # the same numbers to the last bit, C and Python


class Other:
    """Another class with the slots the C loops read, as a second copy of engine.py's Value has."""

    __slots__ = ("_data", "_grad", "children", "_rule")


def test_graph_setup_serves_the_first_value_class_only():
    assert engine._graph.setup(Other, engine._child_gradients, ops.OPS) is False
    assert type(engine.Value(2.0) * 3.0) is engine.Value  # still the engine's own class


def test_layout_setup_serves_the_first_value_class_only():
    if rewriting._in_c is None:
        pytest.skip("compiler/_layout.c is not built here")

    assert rewriting._in_c.setup(Other) is False
    assert rewriting._in_c.setup(engine.Value) is True  # again: harmless


def test_setup_still_refuses_a_class_without_the_slots():
    with pytest.raises(TypeError, match=r"_graph.setup: int._data is not a slot"):
        engine._graph.setup(int, engine._child_gradients, ops.OPS)


def test_setup_finds_the_ops_its_loop_computes_by_name_and_says_which_is_missing():
    incomplete = {name: op for name, op in ops.OPS.items() if name != "tanh"}
    with pytest.raises(TypeError, match="ops.OPS has no op named 'tanh'"):
        engine._graph.setup(Other, engine._child_gradients, incomplete)
    with pytest.raises(TypeError, match=r"setup\(Value, child_gradients, ops.OPS\)"):
        engine._graph.setup(Other, engine._child_gradients, tuple(ops.OPS.values()))
