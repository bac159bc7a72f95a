"""Thin tapes replayed node by node: eager's numbers and errors, faster than numpy's groups.

The numpy backend replays a thin tape with the C table program built with chainrule
(compiler/_tables.c), or without it node by node in Python (compiler/backends/scalar.py): every test
here runs both ways. The oracles are eager chainrule and the group-by-group numpy replay of
the same tape (``CHAINRULE_SCALAR_REPLAY=0``); the compile test suite also runs with the
thin-tape replays turned off (last test), and on the pure-Python engine (test_graph_c.py),
where the node-by-node replay is the one used.
"""

import math
import random
from pathlib import Path

import pytest

import chainrule
from chainrule import Value, nn

np = pytest.importorskip("numpy")
from chainrule.compiler import native  # noqa: E402
from chainrule.compiler.backends.scalar import ScalarReplay  # noqa: E402
from chainrule.compiler.backends.table import CProgram  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, params=["C table", "Python"])
def thin_replay(request, monkeypatch):
    """Which replay a thin tape gets: the C table program built with chainrule, or scalar.py's."""
    if request.param == "Python":
        monkeypatch.setattr(native, "prebuilt_tables", lambda: None)
        return ScalarReplay
    if native.prebuilt_tables() is None:
        pytest.skip("compiler/_tables.c was not built here")
    return CProgram


def _rnn(w):
    """A scalar RNN with every common op on the way: one node per depth, a thin tape."""

    def loss(xs):
        h = Value(0.1)
        for x in xs:
            a = w[0] * h + w[1] * x - w[2]
            h = a.tanh() + (a * a + 0.5).log() * 0.1 + a.sigmoid() * a.relu() / (1.0 + a.exp())
            h = h + (h * h + 0.25) ** 0.5 - 2.0**h - chainrule.logsumexp([h, a]) * 0.1
        return h * h + h.detach() * h

    return loss


@pytest.mark.parametrize("seed", range(4))
def test_a_thin_tape_replays_node_by_node_with_eagers_numbers(seed, monkeypatch, loss_and_grads, thin_replay):
    rng = random.Random(seed)
    w = [Value(rng.uniform(-1, 1)) for _ in range(3)]
    loss = _rnn(w)
    f = chainrule.compile(loss, backend="numpy")
    groups = chainrule.compile(loss, backend="numpy")
    monkeypatch.setenv("CHAINRULE_SCALAR_REPLAY", "0")
    groups([0.0] * 12)  # traced with the node-by-node replay turned off
    monkeypatch.delenv("CHAINRULE_SCALAR_REPLAY")
    for _ in range(3):  # the first call traces, the others replay new numbers
        xs = [rng.uniform(-1, 1) for _ in range(12)]
        got, by_groups = loss_and_grads(f, w, xs), loss_and_grads(groups, w, xs)
        expected = loss_and_grads(loss, w, [Value(x) for x in xs])
        for result in (got, by_groups):
            assert result[0] == pytest.approx(expected[0], rel=1e-12)
            assert result[1] == pytest.approx(expected[1], rel=1e-12)
    assert isinstance(f.last_tape.fast, thin_replay)
    assert groups.last_tape.fast is None


def test_a_wide_tape_keeps_the_numpy_groups():
    random.seed(0)
    model = nn.MLP(2, [8, 1])
    f = chainrule.compile(lambda X: sum(model(x) for x in X), backend="numpy")
    f([[0.1 * i, 0.2] for i in range(50)])
    assert f.last_tape.fast is None


def test_domain_errors_are_eagers_forward_and_backward():
    w = Value(1.0)
    f = chainrule.compile(lambda x: (x[0] * w).log(), backend="numpy")
    assert f([2.0]).data == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match=r"^log of Value\(data=-2.0\): log is defined only for positive"):
        f([-2.0])
    h = chainrule.compile(lambda x: x[0] ** (w * 2.0), backend="numpy")
    out = h([-3.0])
    assert out.data == pytest.approx(9.0)
    with pytest.raises(ValueError, match="backward of pow.*needs x > 0"):
        out.backward()  # (-3) ** 2 is fine, but its slope in the exponent needs a positive base
    with pytest.raises(ValueError, match="needs x > 0"):
        (Value(-3.0) ** (w * 2.0)).backward()


def test_an_out_of_range_take_is_eagers_index_error():
    rows = [Value(1.0), Value(2.0)]
    f = chainrule.compile(lambda i: chainrule.take(rows, i).tanh(), backend="numpy")
    assert f(1).data == pytest.approx(math.tanh(2.0))
    with pytest.raises(IndexError, match="out of range for 2 rows"):
        f(2)


def test_detect_anomaly_takes_the_group_replay_and_raises():
    w = Value(1.0)
    f = chainrule.compile(lambda x: (x[0] * w).exp(), backend="numpy")
    f([1.0])
    assert f([1000.0]).data == math.inf  # as eager: an overflow is inf, not an error
    with chainrule.detect_anomaly():
        with pytest.raises(chainrule.AnomalyError, match="exp produced"):
            f([1000.0])


def test_two_outputs_send_gradients_only_along_their_own_graph():
    w = [Value(0.5), Value(-0.3)]
    f = chainrule.compile(lambda x: [(w[0] * x[0]).tanh(), (w[1] * x[0]).exp()], backend="numpy")
    a, b = f([2.0])
    a.backward()
    assert w[1].grad == 0.0
    assert w[0].grad == pytest.approx(2.0 * (1 - math.tanh(1.0) ** 2))
    b.backward()
    assert w[1].grad == pytest.approx(2.0 * math.exp(-0.6))


@pytest.mark.slow  # a child pytest
def test_the_compile_suite_passes_with_the_group_replay_only(run_test_files):
    files = ["test_compile.py", "test_compile_hardening.py", "test_compile_props.py", "test_take.py"]
    run_test_files(files, {"CHAINRULE_SCALAR_REPLAY": "0", "CHAINRULE_BACKEND": "numpy"})


def test_a_thin_tape_set_up_from_the_layout_reads_its_groups_back_as_made(monkeypatch, thin_replay):
    # With the C table program, a thin tape is set up without group objects; asked for them (an
    # error to report, detect_anomaly), it reads them back from its table: the same groups.
    w = [Value(0.3), Value(-0.2), Value(0.1)]
    loss = _rnn(w)
    xs = [0.1 * i for i in range(6)]
    fast = chainrule.compile(loss, backend="numpy")
    fast(xs)
    monkeypatch.setattr(native, "prebuilt_tables", lambda: None)  # groups made directly
    made = chainrule.compile(loss, backend="numpy")
    made(xs)

    def described(tape):
        return [(g.rule.name, g.start, g.end, g.children.tolist()) for g in tape.groups]

    assert described(fast.last_tape) == described(made.last_tape)
    with chainrule.detect_anomaly():  # runs on the groups, read back
        assert fast(xs).data == pytest.approx(made(xs).data, rel=1e-12)


def test_a_thin_tape_with_small_layers_reads_them_back_as_plain_groups(monkeypatch, loss_and_grads):
    # Two neurons per level: each level's dot nodes could be a layer group (which may reorder its
    # nodes); set up from the layout they stay in its order, and read back as plain groups.
    w = [Value(0.4), Value(-0.3), Value(0.2), Value(0.5), Value(0.1), Value(-0.1)]

    def loss(xs):
        a, b = Value(0.2), Value(-0.1)
        for x in xs:
            a, b = (
                chainrule.dot([w[0], w[1]], [a, b], w[4] * x).tanh(),
                chainrule.dot([w[2], w[3]], [a, b], w[5]).tanh(),
            )
        return a * b

    f = chainrule.compile(loss, backend="numpy")
    for xs in ([0.1 * i for i in range(40)], [0.3 - 0.05 * i for i in range(40)]):
        got = loss_and_grads(f, w, xs)
        expected = loss_and_grads(loss, w, [Value(x) for x in xs])
        assert got[0] == pytest.approx(expected[0], rel=1e-12)
        assert got[1] == pytest.approx(expected[1], rel=1e-12)
        with chainrule.detect_anomaly():  # the numpy groups, read back from the table
            again = loss_and_grads(f, w, xs)
        assert again[0] == pytest.approx(got[0], rel=1e-12)
        assert again[1] == pytest.approx(got[1], rel=1e-12)
