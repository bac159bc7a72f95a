"""Backward passes in several threads at once, on graphs that share their parameters.

A first-order pass gathers its shares in scratch space on the nodes; two threads must not
gather into the same node's scratch at the same time, or a parameter's gradient would come out
wrong without any error.
"""

import math
import threading

import pytest

from chainrule import Value, autograd


def _loss(params, k):
    x = Value(0.1 * k)
    h = (params[0] * x + params[1]).tanh()
    for _ in range(40):  # long enough for the threads to interleave mid-pass
        h = (h * params[2] + params[1]).tanh()
    return h * h


@pytest.mark.parametrize("how", ["backward", "autograd.grad"])
def test_concurrent_passes_on_shared_parameters_give_exact_gradients(how):
    params = [Value(0.5), Value(-0.3), Value(0.8)]
    rounds, n_threads = 30, 4

    # What each thread's passes must add up to, computed one pass at a time.
    expected = [0.0, 0.0, 0.0]
    for t in range(n_threads):
        for _ in range(rounds):
            for i, g in enumerate(autograd.grad(_loss(params, t), params)):
                expected[i] += g

    results = [[0.0, 0.0, 0.0] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)

    def work(t):
        barrier.wait()
        for _ in range(rounds):
            loss = _loss(params, t)
            if how == "backward":
                loss.backward()
            else:
                for i, g in enumerate(autograd.grad(loss, params)):
                    results[t][i] += g

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = [p.grad for p in params] if how == "backward" else [sum(r[i] for r in results) for i in range(3)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_concurrent_backward_of_compiled_results_on_shared_parameters():
    pytest.importorskip("numpy")
    import chainrule

    params = [Value(0.5), Value(-0.3), Value(0.8)]
    f = chainrule.compile(lambda x: ((params[0] * x + params[1]).tanh() * params[2]) ** 2)
    results = [f(0.1 * t) for t in range(4)]
    expected = [0.0, 0.0, 0.0]
    for r in results:
        for i, g in enumerate(autograd.grad(r, params)):
            expected[i] += 200 * g
    barrier = threading.Barrier(4)

    def work(t):
        barrier.wait()
        for _ in range(200):
            results[t].backward()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.grad for p in params] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# A graph built in other threads while chainrule.compile traces: a trace records the ops of its
# own thread only, so such a Value could only be read as a fixed number, the first call's.


def _pool_cases(pool, w):
    """Functions that build part of their graph in a worker thread, each in its own way."""
    return {
        "pool.map of a row function": lambda xs: _sum(list(pool.map(lambda x: (x * w).tanh(), xs))),
        "the result itself": lambda xs: pool.submit(lambda: xs[0] * w).result(),
        "a value of the parameters alone": lambda xs: xs[0] * pool.submit(lambda: (w * w).tanh()).result(),
        "a leaf made from a traced number": lambda xs: (
            xs[0] * pool.submit(lambda: Value(xs[1].data)).result()
        ),
        "inside map_rows": lambda xs: _sum(
            _map_rows(lambda x: pool.submit(lambda: (x * w).tanh()).result(), xs)
        ),
    }


def _sum(values):
    from chainrule import sum_values

    return sum_values(values)


def _map_rows(fn, rows):
    from chainrule import map_rows

    return map_rows(fn, rows)


@pytest.mark.parametrize(
    "case",
    [
        "pool.map of a row function",
        "the result itself",
        "a value of the parameters alone",
        "a leaf made from a traced number",
        "inside map_rows",
    ],
)
def test_a_graph_built_in_other_threads_while_tracing_is_refused_not_frozen(case):
    pytest.importorskip("numpy")
    from concurrent.futures import ThreadPoolExecutor

    import chainrule

    w = Value(0.5)
    with ThreadPoolExecutor(2) as pool:
        fn = _pool_cases(pool, w)[case]
        eager = fn([Value(1.0), Value(2.0)]).data  # eagerly, threads are fine
        fast = chainrule.compile(fn)
        with pytest.raises(NotImplementedError, match="made in another thread while it was traced"):
            fast([1.0, 2.0])
    assert eager == pytest.approx(fn_reference(case, 1.0, 2.0, 0.5), rel=1e-15)
    assert w.grad == 0.0  # nothing was run backward


def fn_reference(case, x0, x1, w):
    """The cases' numbers, computed with floats."""
    return {
        "pool.map of a row function": math.tanh(x0 * w) + math.tanh(x1 * w),
        "the result itself": x0 * w,
        "a value of the parameters alone": x0 * math.tanh(w * w),
        "a leaf made from a traced number": x0 * x1,
        "inside map_rows": math.tanh(x0 * w) + math.tanh(x1 * w),
    }[case]


def test_values_made_in_other_threads_before_the_trace_and_eager_work_during_it_are_fine():
    """A computed Value made before the trace (in any thread) is read as before, and other
    threads building their own graphs while a trace runs are not disturbed."""
    pytest.importorskip("numpy")
    from concurrent.futures import ThreadPoolExecutor

    import chainrule

    w = Value(0.5)
    with ThreadPoolExecutor(1) as pool:
        h = pool.submit(lambda: (w * w).tanh()).result()  # made before any trace
    fast = chainrule.compile(lambda x: x * h)
    assert fast(3.0).data == 3.0 * h.data

    stop, sums = threading.Event(), []

    def eager_work():
        while not stop.is_set():
            a = Value(1.5)
            b = a * a + a
            b.backward()
            sums.append(a.grad)

    worker = threading.Thread(target=eager_work)
    worker.start()
    try:
        fast2 = chainrule.compile(lambda x, y: (x * y).tanh() + x)
        for x, y in [(0.3, 0.7), (1.0, -2.0), (-0.5, 0.25)]:
            got = fast2(x, y)
            assert got.data == pytest.approx(math.tanh(x * y) + x, rel=1e-15)
    finally:
        stop.set()
        worker.join()
    assert sums and all(s == 4.0 for s in sums)  # d(a*a + a)/da at 1.5
