"""Backward passes in several threads at once, on graphs that share their parameters.

A first-order pass gathers its shares in scratch space on the nodes; two threads must not
gather into the same node's scratch at the same time, or a parameter's gradient would come out
wrong without any error.
"""

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
