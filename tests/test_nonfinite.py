"""One answer on every path: every op's value and gradients at nan, +-inf, +-0 and subnormals.

For every op, every input position and every awkward number (and a few ordinary ones), with
ordinary numbers elsewhere, the value and the gradients must be PyTorch's (float64), and the
same on every path chainrule has: the eager fast path, ``apply`` (the general path, taken
inside any mode switch), ``detect_anomaly`` (which may raise AnomalyError instead),
``backward(create_graph=True)``, and ``chainrule.compile`` on each backend. The incoming
gradient varies too (1, 0, nan, -inf): a rule that multiplies a stored local gradient of inf
by an incoming 0 (nan) where PyTorch divides (0), or a relu that multiplies an incoming nan by
0 where PyTorch selects 0, shows up here.

A domain error (log(-1), x / 0, ...) is chainrule's documented difference from PyTorch, which
gives nan or inf there: every chainrule path must then raise the same error.

Zeros: a gradient's sign of zero is not compared (chainrule adds every share into a ``grad``
that starts at +0.0, PyTorch stores the first share as it is); a value's is, except for the
sums (sum, dot), whose C and numpy loops start from +0.0.
"""

import contextlib
import itertools
import math
import os

import pytest

import chainrule
from chainrule import Value, ops
from chainrule.engine import apply

torch = pytest.importorskip("torch")

NAN, INF = math.nan, math.inf
AWKWARD = [NAN, INF, -INF, 0.0, -0.0, 5e-324, -5e-324, 1e-310]
ORDINARY = [0.7, -0.7, 2.0, -3.0]
SEEDS = [1.0, 0.0, NAN, -INF]  # the gradient that reaches the op's output

# name: (chainrule's function of the leaves, PyTorch's, ordinary inputs, whether sums its inputs)
CASES = {
    "+": (lambda x, y: x + y, lambda x, y: x + y, (0.7, 1.3)),
    "-": (lambda x, y: x - y, lambda x, y: x - y, (0.7, 1.3)),
    "*": (lambda x, y: x * y, lambda x, y: x * y, (0.7, 1.3)),
    "/": (lambda x, y: x / y, lambda x, y: x / y, (0.7, 1.3)),
    "neg": (lambda x: -x, lambda x: -x, (0.7,)),
    "pow": (lambda x, y: x**y, lambda x, y: x**y, (0.7, 1.3)),
    "pow, even exponent": (lambda x, y: x**y, lambda x, y: x**y, (-0.7, 2.0)),
    "pow, zero exponent": (lambda x, y: x**y, lambda x, y: x**y, (0.7, 0.0)),
    "rpow": (lambda y: 2.0**y, lambda y: 2.0**y, (1.3,)),
    "rpow, base 0": (lambda y: 0.0**y, lambda y: 0.0**y, (1.3,)),
    "rpow, base inf": (lambda y: INF**y, lambda y: INF**y, (1.3,)),
    "** 3": (lambda x: x**3.0, lambda x: x**3.0, (0.7,)),
    "** 2 (an int)": (lambda x: x**2, lambda x: x**2, (0.7,)),
    "** 0": (lambda x: x**0.0, lambda x: x**0.0, (0.7,)),
    "** -1": (lambda x: x**-1.0, lambda x: x**-1.0, (0.7,)),
    "** 0.5": (lambda x: x**0.5, lambda x: x**0.5, (0.7,)),
    "** nan": (lambda x: x**NAN, lambda x: x**NAN, (0.7,)),
    "** inf": (lambda x: x**INF, lambda x: x**INF, (0.7,)),
    "exp": (lambda x: x.exp(), lambda x: x.exp(), (0.7,)),
    "log": (lambda x: x.log(), lambda x: x.log(), (0.7,)),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), (0.7,)),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), (0.7,)),
    "relu": (lambda x: x.relu(), lambda x: torch.relu(x), (0.7,)),
    "softplus": (lambda x: x.softplus(), lambda x: torch.nn.functional.softplus(x), (0.7,)),
    "sum": (lambda *xs: chainrule.sum_values(xs), lambda *xs: torch.stack(xs).sum(), (0.7, 1.3, -2.0)),
    "logsumexp": (
        lambda *xs: chainrule.logsumexp(xs),
        lambda *xs: torch.logsumexp(torch.stack(xs), 0),
        (0.7, 1.3, -2.0),
    ),
    "dot": (
        lambda w1, w2, x1, x2, b: chainrule.dot([w1, w2], [x1, x2], b),
        lambda w1, w2, x1, x2, b: w1 * x1 + w2 * x2 + b,
        (0.7, 1.3, -2.0, 0.5, 0.25),
    ),
    # (a detached copy that PyTorch lets backward start from: no gradient reaches x)
    "stop_gradient": (lambda x: apply(ops.STOP_GRADIENT, x), lambda x: x.detach().requires_grad_(), (0.7,)),
    "take": (lambda x, y: apply(ops.TAKE, Value(1.0), x, y), lambda x, y: torch.stack([x, y])[1], (0.7, 1.3)),
    # the case: an incoming nan meets a relu at a negative input
    "x * relu(p)": (lambda x, p: x * p.relu(), lambda x, p: x * torch.relu(p), (0.7, -1.0)),
    "log(x) * 0": (lambda x: x.log() * 0.0, lambda x: x.log() * 0.0, (0.7,)),
}
SUMS = {"sum", "dot"}


def test_every_op_in_the_table_is_covered():
    covered = {name.split(",")[0].split(" ")[0] for name in CASES}
    assert set(ops.OPS) <= covered | {"**"}
    assert any(name.startswith("** ") for name in CASES)


def _inputs(name):
    """Every input tuple checked for an op: one awkward or ordinary number in one position, and
    for ops of several inputs, every pair of awkward numbers in the first two positions."""
    base = CASES[name][2]
    out = []
    for position, number in itertools.product(range(len(base)), AWKWARD + ORDINARY):
        out.append(tuple(number if i == position else x for i, x in enumerate(base)))
    if len(base) > 1:
        for a, b in itertools.product(AWKWARD, repeat=2):
            out.append((a, b, *base[2:]))
    return out


# ---------------------------------------------------------------------------------------------
# The oracle and the paths


def _torch(name, numbers, seed):
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in numbers]
    out = CASES[name][1](*leaves)
    out.backward(torch.tensor(seed, dtype=torch.float64))
    return out.item(), [0.0 if v.grad is None else v.grad.item() for v in leaves]


def _eager(name, numbers, seed, mode):
    leaves = [Value(x) for x in numbers]
    context = {
        "fast": contextlib.nullcontext,
        "apply": chainrule.enable_grad,  # any open mode switch sends every op through apply
        "anomaly": chainrule.detect_anomaly,
        "create_graph": contextlib.nullcontext,
    }[mode]
    with context():
        out = CASES[name][0](*leaves)
        out.backward(seed, create_graph=mode == "create_graph")
    return out.data, [v.grad.data if isinstance(v.grad, Value) else v.grad for v in leaves]


def _outcome(run, *args):
    """(value, grads), or the error raised: its type, its stage and its reason. (A path may name
    the op once more on the way out: the compiled result's backward, or the gradient's own op
    with create_graph.)"""
    try:
        return run(*args)
    except (ValueError, ZeroDivisionError, chainrule.AnomalyError) as error:
        message = str(error)
        stage = "backward" if "backward of" in message else "forward"
        return type(error), stage, message.rpartition(": ")[2]


def _same_number(ours, theirs, zero_sign=False):
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    if ours == theirs == 0.0:
        return not zero_sign or math.copysign(1.0, ours) == math.copysign(1.0, theirs)
    return ours == pytest.approx(theirs, rel=1e-12, abs=1e-300)


def _agrees(name, ours, reference):
    """Whether chainrule's (value, grads) is the reference's (PyTorch's, or eager's error)."""
    if isinstance(reference[0], type) or isinstance(ours[0], type):  # an error was raised
        return ours == reference
    value, grads = ours
    return _same_number(value, reference[0], zero_sign=name not in SUMS) and all(
        map(_same_number, grads, reference[1])
    )


def _check(name, path, run):
    """Run ``run(numbers, seed)`` on every input and seed; compare with PyTorch, or with eager's
    error where eager raises one; list every disagreement."""
    wrong = []
    for numbers in _inputs(name):
        for seed in SEEDS:
            eager = _outcome(_eager, name, numbers, seed, "fast")
            reference = eager if isinstance(eager[0], type) else _torch(name, numbers, seed)
            ours = _outcome(run, numbers, seed)
            if path.endswith("anomaly") and ours[0] is chainrule.AnomalyError:
                continue  # detect_anomaly may stop at a nan or inf; if it does not, it must agree
            if not _agrees(name, ours, reference):
                wrong.append(f"{name}{numbers} seed {seed}: {path} {ours}, expected {reference}")
    assert not wrong, f"{len(wrong)} disagreements:\n" + "\n".join(wrong[:20])


EAGER_PATHS = ["fast", "apply", "anomaly", "create_graph"]


@pytest.mark.parametrize("path", EAGER_PATHS)
@pytest.mark.parametrize("name", CASES)
def test_eager_agrees_with_pytorch(name, path):
    _check(name, path, lambda numbers, seed: _eager(name, numbers, seed, path))


@pytest.mark.slow  # a child pytest
def test_the_pure_python_engine_agrees_too(run_test_files):
    # The eager tests again, on the engine without its C loops (_graph.c multiplies the fast
    # ops' stored local gradients in C; the Python loop in engine.py does it there).
    if os.environ.get("CHAINRULE_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("this run is on the pure-Python engine already")
    run_test_files(["test_nonfinite.py"], {"CHAINRULE_PURE_PYTHON": "1"}, "-k", "eager")


# Backends, as chainrule.compile names them; "numpy, groups" is the numpy backend with its
# node-by-node replay of thin tapes turned off, "numpy, anomaly" the group replay's checks.
BACKENDS = ["numpy", "numpy, groups", "c", "auto", "numpy, anomaly"]


def _compiled_runner(name, backend, monkeypatch):
    if backend == "numpy, groups":
        monkeypatch.setenv("CHAINRULE_SCALAR_REPLAY", "0")
    base = CASES[name][2]
    params = [Value(x) for x in base]
    f = CASES[name][0]
    compiled = chainrule.compile(lambda: f(*params), backend=backend.split(",")[0])
    compiled()  # traced with ordinary numbers; every call below replays the tape
    anomaly = chainrule.detect_anomaly if backend.endswith("anomaly") else contextlib.nullcontext

    def run(numbers, seed):
        for p, x in zip(params, numbers):
            p.data, p.grad = x, 0.0
        with anomaly():
            out = compiled()
            out.backward(seed)
        return out.data, [p.grad for p in params]

    return run


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_compiled_agrees_with_pytorch(name, backend, monkeypatch):
    if backend in ("c", "auto"):
        pytest.importorskip("numpy")
    _check(name, f"compiled {backend}", _compiled_runner(name, backend, monkeypatch))


# ---------------------------------------------------------------------------------------------
# take's index: a bool is refused on every path, as eager refuses it


@pytest.mark.parametrize("backend", ["numpy", "c", "auto"])
@pytest.mark.parametrize("make_index", [lambda: True, lambda: [False], lambda: __import__("numpy").True_])
def test_compiled_take_refuses_a_bool_index_as_eager_does(backend, make_index):
    numpy = pytest.importorskip("numpy")
    rows = [Value(1.0), Value(2.0)]

    def pick(index):
        return chainrule.take(rows, index[0] if isinstance(index, list) else index)

    index = make_index()
    with pytest.raises(TypeError, match="take: index must be an integer") as eager:
        pick(index)
    compiled = chainrule.compile(pick, backend=backend)
    assert compiled([1.0] if isinstance(index, list) else 1.0).data == 2.0  # a number is fine
    for _ in range(2):  # the trace and then the replay of the same structure
        with pytest.raises(TypeError, match="take: index must be an integer") as replayed:
            compiled(index)
        assert str(replayed.value).partition("got")[0] == str(eager.value).partition("got")[0]
    with pytest.raises(TypeError, match="take: index must be an integer"):
        compiled(numpy.array([True]) if isinstance(index, list) else numpy.True_)


def test_a_bool_stays_a_number_in_arithmetic_when_compiled():
    w = Value(2.0)
    compiled = chainrule.compile(lambda b: w * b + 1.0)
    assert [compiled(True).data, compiled(False).data, compiled(1.0).data] == [
        (w * True + 1.0).data,
        (w * False + 1.0).data,
        3.0,
    ]
