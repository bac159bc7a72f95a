"""Hostile Python code against the C extensions (_graph.c, compiler/_layout.c, compiler/_tables.c).

A Value subclass's __hash__ and __eq__, a lecture-style _backward closure, a __del__, a gc
callback and a number's __float__ are Python code that the C loops run in the middle of a walk,
and that code can rewire the graph, delete slots, or run another backward. Whatever it does, the
interpreter must not crash, and a number that comes out must be the pure-Python engine's.

Each scenario runs in a child process, so that a crash fails its test instead of ending pytest's
run, with PYTHONMALLOC=debug (unless the environment chooses, as .ci/run's AddressSanitizer step
does), which fills freed memory so that reading a freed object crashes at once, not by luck. The
same script runs again with CHAINRULE_PURE_PYTHON=1; the C run must print the same outcome (the
numbers, or the type of the exception), or raise a clean exception of its own.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

# Every script ends by calling report(fn): fn's result (numbers), or the exception it raised.
PRELUDE = """
import gc, json, sys, threading
from chainrule import Value, engine

def report(fn):
    try:
        result = {"ok": fn()}
    except Exception as error:
        result = {"error": type(error).__name__, "message": str(error)}
    print(json.dumps(result, default=repr))
"""


def run(script: str, pure: bool = False, timeout: float = 300) -> dict:
    """The outcome report() printed in a child process; fails the test if the child died."""
    env = dict(os.environ)
    env.setdefault("PYTHONMALLOC", "debug")
    env.pop("CHAINRULE_PURE_PYTHON", None)
    if pure:
        env["CHAINRULE_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", PRELUDE + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    engine_name = "pure-Python" if pure else "C"
    died = f"the {engine_name} engine's child process died (return code {done.returncode})"
    assert done.returncode == 0, f"{died}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_survives(script: str, clean_errors=(AttributeError, TypeError, RuntimeError, KeyError)) -> dict:
    """Run the script on C and on pure Python: C gives Python's numbers, or a clean exception."""
    in_c, in_python = run(script), run(script, pure=True)
    if "ok" in in_c:
        assert in_c == in_python, f"C gave {in_c}, pure Python {in_python}"
    else:
        assert in_c["error"] in {e.__name__ for e in clean_errors}, in_c
    return in_c


# ---------------------------------------------------------------------------------------------
# __hash__ and __eq__ that rewire the graph while topological_order looks nodes up


REWIRING_HASH = """
armed = []
class Rewiring(Value):
    __slots__ = ()
    def __hash__(self):
        while armed:  # the first look-up replaces the children of the node being walked
            armed.pop().children = (Value(0.5), Value(0.25))
        return id(self) >> 4
    __eq__ = object.__eq__
"""


def test_hash_that_replaces_the_children_of_the_node_being_walked():
    # Before: the C walk read the child from the old tuple, freed by the __hash__: a crash.
    outcome = assert_survives(
        REWIRING_HASH
        + """
root = Rewiring(2.0) * Value(3.0)   # the Rewiring leaf is held by root's children only
loss = root * 2.0
armed.append(root)
report(lambda: (loss.backward(), [c.grad for c in root.children])[1])
"""
    )
    assert outcome["error"] == "RuntimeError"  # the new children were not in the pass


def test_hash_that_deletes_children_mid_walk():
    assert_survives(
        """
armed = []
class Deleting(Value):
    __slots__ = ()
    def __hash__(self):
        while armed:
            del armed.pop().children
        return id(self) >> 4
    __eq__ = object.__eq__
leaf = Deleting(1.5)
mid = leaf * Value(2.0)
loss = (mid + leaf).tanh()
armed.append(mid)
report(lambda: (loss.backward(), leaf.grad)[1])
"""
    )


def test_eq_that_rewires_on_every_collision():
    # Every instance hashes alike, so each look-up of one runs __eq__ against the others.
    assert_survives(
        """
victims = []
class Colliding(Value):
    __slots__ = ()
    def __hash__(self):
        return 7
    def __eq__(self, other):
        while victims:
            node = victims.pop()
            node.children = tuple(Colliding(float(k)) for k in range(3))
            gc.collect()
        return self is other
xs = [Colliding(float(k)) for k in range(6)]
terms = [xs[k] * xs[k + 1] for k in range(5)]
loss = sum(terms[1:], terms[0])
victims.extend(terms[::2])
del terms
report(lambda: (loss.backward(), [x.grad for x in xs])[1])
"""
    )


# ---------------------------------------------------------------------------------------------
# Lecture-style _backward closures that change the graph while backward walks it


CLOSURE_GRAPH = """
a, b, f = Value(2.0), Value(3.0), Value(1.5)
c = a * b
e = Value(f.data * 2, (f,), "double")
d = c + e        # backward reaches d, then e (whose closure runs), then c
def closure():
    f.grad += 2 * e.grad
    ATTACK
e._backward = closure
report(lambda: (d.backward(), [a.grad, b.grad, f.grad])[1])
"""


@pytest.mark.parametrize(
    "attack",
    [
        "del c._rule",  # before (then _pending): C read the deleted slot as a pointer: a crash
        "del c._local",
        "del c.grad",
        "del a._rule",
        "c.children = (Value(9.0), Value(8.0))",
        "c.children = (a,)",
        "c.children = ('not a Value', 'nor this')",
        "del c.children",
        "c.data = 'not a number'",
        "c._local = (1.0, 'not a number')",
    ],
)
def test_closure_that_changes_a_node_still_to_be_visited(attack):
    assert_survives(CLOSURE_GRAPH.replace("ATTACK", attack))


# ---------------------------------------------------------------------------------------------
# backward() called inside a backward: the inner pass must not overwrite the outer's scratch

NESTED = """
x, a = Value(1.0), Value(2.0)
out = Value(x.data * 2, (x,), "double")
def closure():
    x.grad += 2 * out.grad
    (a * 3).backward()        # an inner pass: adds d(3a)/da = 3 to a.grad
out._backward = closure
root = out + (a ** 3) * 2     # the outer pass: d root/da = 6 a^2 = 24
report(lambda: (root.backward(), [a.grad, x.grad])[1])
"""


def micrograd_nested():
    """The same scenario on micrograd, which adds every share straight into .grad."""
    engine = pytest.importorskip("micrograd.engine")
    x, a = engine.Value(1.0), engine.Value(2.0)
    out = engine.Value(x.data * 2, (x,), "double")

    def closure():
        x.grad += 2 * out.grad
        (a * 3).backward()

    out._backward = closure
    root = out + (a**3) * 2
    root.backward()
    return [a.grad, x.grad]


@pytest.mark.parametrize("pure", [False, True], ids=["C", "pure-Python"])
def test_backward_inside_a_closure_adds_both_passes(pure):
    # Before: the inner pass reset the outer's scratch (then slots on the nodes): a.grad came out 3.0.
    got = run(NESTED, pure=pure)["ok"]
    assert got == [6 * 2.0**2 + 3, 2.0]  # 24 from the outer pass, 3 from the inner
    assert got == micrograd_nested()


def test_backward_inside_a_closure_through_propagate():
    # autograd's propagate() from a closure also gathers apart from the outer pass.
    outcome = assert_survives(
        """
from chainrule.engine import propagate
x, a = Value(1.0), Value(2.0)
out = Value(x.data * 2, (x,), "double")
seen = []
def closure():
    x.grad += 2 * out.grad
    seen.append(propagate(a * a)[a])
out._backward = closure
root = out * a + a * a
report(lambda: (root.backward(), [a.grad, x.grad, seen])[1])
"""
    )
    assert outcome["ok"] == [2.0 + 2 * 2.0, 2 * 2.0, [4.0]]  # d(2x*a + a^2)/da, d/dx; d(a^2)/da


# ---------------------------------------------------------------------------------------------
# The garbage collector and __del__ during a walk


def test_gc_callback_that_rewires_during_backward():
    assert_survives(
        """
import random
rng = random.Random(5)
xs = [Value(rng.uniform(-1, 1)) for _ in range(8)]
nodes = []
for k in range(300):
    u, v = rng.choice(xs + nodes[-10:]), rng.choice(xs + nodes[-10:])
    nodes.append((u * v).softplus() if k % 3 else u + v)  # softplus: a rule, run in Python
loss = sum(nodes[-20:], Value(0.0))
def meddle(phase, info):
    if phase == "start" and nodes:
        victim = nodes.pop(rng.randrange(len(nodes)))
        victim.children = (Value(1.0),)
        if nodes:
            del nodes[rng.randrange(len(nodes))]._rule
gc.callbacks.append(meddle)
gc.set_threshold(1)   # a collection at nearly every allocation of a tracked object
def go():
    for _ in range(3):
        try:
            loss.backward()
        except AttributeError:
            pass
    return "survived"
report(go)
"""
    )


def test_del_that_runs_backward_during_a_pass():
    # An attribute whose release, by a closure in the middle of a pass, runs backward of its own.
    outcome = assert_survives(
        """
a, b = Value(2.0), Value(5.0)
other = a * b
class Haunted:
    def __del__(self):
        other.backward()
c = a * a
c.haunt = Haunted()
e = Value(c.data, (c,), "same")
def closure():
    c.grad += e.grad
    del c.haunt      # its __del__ runs a backward of its own, mid-pass
e._backward = closure
loss = e * 3.0
report(lambda: (loss.backward(), [a.grad, b.grad])[1])
"""
    )
    assert outcome["ok"] == [5.0 + 12.0, 2.0]  # d(ab)/da + d(3a^2)/da, d(ab)/db


# ---------------------------------------------------------------------------------------------
# __float__ that changes the graph


def test_float_that_rewires_the_graph_before_the_walk():
    assert_survives(
        """
import numbers
a = Value(1.5)
mid = a * a
loss = mid.tanh()
class Sneaky(numbers.Real):
    def __float__(self):
        mid.children = (Value(3.0), Value(4.0))
        return 2.0
    # what numbers.Real asks for, unused here
    __abs__ = __add__ = __ceil__ = __eq__ = __floor__ = __floordiv__ = __le__ = __lt__ = lambda *s: 0
    __mod__ = __mul__ = __neg__ = __pos__ = __pow__ = __radd__ = __rfloordiv__ = lambda *s: 0
    __rmod__ = __rmul__ = __round__ = __rpow__ = __rtruediv__ = __truediv__ = __trunc__ = lambda *s: 0
    __hash__ = object.__hash__
report(lambda: (loss.backward(Sneaky()), a.grad)[1])
"""
    )


# ---------------------------------------------------------------------------------------------
# Compiled traces


def test_hash_that_rewires_while_a_trace_is_laid_out():
    # Before: compiler/_layout.c held the leaves without references across the constants set's
    # look-ups; a leaf freed by a __hash__ there was read again: a crash. The C layout works on
    # the graph as traced, so it replays fn as it ran; rewriting.py's layout, which looks again,
    # raises instead (a KeyError). Either is fine; a number must be fn's.
    script = """
import chainrule
victims = []
class Rewiring(Value):
    __slots__ = ()
    def __hash__(self):
        if sys._getframe(1).f_code.co_name == "layout":  # while the tape is laid out
            while victims:
                victims.pop().children = (Value(0.5), Value(0.25))
        return id(self) >> 4
    __eq__ = object.__eq__
w = Rewiring(2.0)
pool = [Value(5.0) for _ in range(3)]
def fn(x):
    first = w * x
    u = x * pool.pop()      # a Value from outside that only u holds from now on
    victims.append(u)
    return (first + u).tanh()
def go():
    fast = chainrule.compile(fn)
    y = fast(0.3)
    y.backward()
    return [y.data, w.grad]
report(go)
"""
    for outcome in run(script), run(script, pure=True):
        if "ok" in outcome:
            y = math.tanh(2.0 * 0.3 + 0.3 * 5.0)
            assert outcome["ok"] == pytest.approx([y, 0.3 * (1 - y * y)], rel=1e-12)
        else:
            assert outcome["error"] in ("KeyError", "AttributeError", "RuntimeError"), outcome


def test_compiled_backward_with_thousands_of_runs_in_a_small_stack():
    # Before: backward_into put one Py_buffer (80 bytes) per parameter run on the C stack:
    # 4,000 runs overflowed a 256 KiB thread stack.
    outcome = assert_survives(
        """
import chainrule
from chainrule import Parameter, pack_parameters, sum_values
params = [Parameter(0.001 * (i % 7)) for i in range(4000 * 17)]
pack_parameters(params)
used = [params[r * 17 + k] for r in range(4000) for k in range(16)]  # 4,000 runs of 16
fast = chainrule.compile(lambda x: sum_values(used) * x)
def go():
    y = fast(2.0)
    got = []
    def work():
        y.backward()
        got.extend([used[0].grad, used[-1].grad, params[16].grad])
    threading.stack_size(256 * 1024)
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return got
report(go)
""",
        clean_errors=(),
    )
    assert outcome["ok"] == [2.0, 2.0, 0.0]  # d(x * sum)/dp = x for each used p; 0 for a skipped one
