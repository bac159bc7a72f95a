"""What ``chainrule.compile`` costs to trace, against one eager step of the same function.

Three workloads, each a loss function run two ways (the first two also with the model applied
to the rows by ``chainrule.map_rows``, which a trace runs on one row: ``moons-map``, ``mlp-map``):

1. micrograd's moons step: MLP 2-16-16-1 on 100 points, max-margin loss + 1e-4 L2
   (as in benchmarks/bench_step.py);
2. an MLP 64-32-10 on a batch of 32 random inputs, softmax cross-entropy;
3. the GPT-style step of benchmarks/gpt_style.py (one layer, 4 heads, width 16, one name),
   written with ``chainrule.take`` for the token and position embedding rows and the
   target's logit, so the token ids are inputs and one trace serves every name of a length.

For each: the median time of one eager step (forward + backward), the median time of the
first call of a freshly compiled function (the trace, building the tape, and one replay), the
median replay step (forward + backward), and two memory figures from tracemalloc: what the
eager graph of one forward pass holds, and what the compiled function keeps (its tape) once
the call's result is gone; also the peak while tracing. Targets of issue 10: trace <= 1 eager
step, tape <= 2x the eager graph.

Run:  python benchmarks/bench_trace.py [--repeats 5] [--only moons,mlp,gpt]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpt_style lives here

import gpt_style as gpt  # noqa: E402

import chainrule  # noqa: E402
from chainrule import Value, logsumexp, take  # noqa: E402
from chainrule.losses import cross_entropy, hinge, l2  # noqa: E402
from chainrule.nn import MLP  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The workloads: (loss function, its arguments, the parameters)


def moons_workload(mapped=False):
    import chainrule.datasets  # needs scikit-learn

    data = chainrule.datasets.moons(n_samples=100, noise=0.1, seed=1337)
    y = [2.0 * label - 1.0 for label in data.y_train]  # classes 0/1 as the hinge's -1/+1
    random.seed(1337)
    model = MLP(2, [16, 16, 1])

    def loss(X, y):
        scores = chainrule.map_rows(model, X) if mapped else [model(x) for x in X]
        return hinge(scores, y) + 1e-4 * l2(model.parameters())

    return loss, (data.X_train, y), model.parameters()


def mlp_workload(mapped=False):
    rng = random.Random(0)
    random.seed(0)
    model = MLP(64, [32, 10])
    X = [[rng.random() for _ in range(64)] for _ in range(32)]
    labels = [rng.randrange(10) for _ in range(32)]  # constants of the trace, as class indices

    def loss(X):
        return cross_entropy(chainrule.map_rows(model, X) if mapped else [model(x) for x in X], labels)

    return loss, (X,), model.parameters()


def gpt_name_loss(params, tokens):
    """gpt_style.name_loss with every data-picked row read through take, and softmax by logsumexp
    (no ``.data`` read, so nothing is frozen into a trace)."""
    n = min(gpt.BLOCK_SIZE, len(tokens) - 1)
    keys, values = [[] for _ in range(gpt.N_LAYER)], [[] for _ in range(gpt.N_LAYER)]
    losses = []
    for position in range(n):
        token_row = take(params["token_embedding"], tokens[position])
        x = [t + p for t, p in zip(token_row, params["position_embedding"][position])]
        logits = gpt_forward(params, gpt.rmsnorm(x), keys, values)
        losses.append(logsumexp(logits) - take(logits, tokens[position + 1]))
    return (1 / n) * sum(losses)


def gpt_forward(params, x, keys, values):
    """gpt_style.forward_token after the embedding, with the attention softmax by logsumexp."""
    for layer in range(gpt.N_LAYER):
        residual = x
        x = gpt.rmsnorm(x)
        q = gpt.linear(x, params[f"layer{layer}.query"])
        keys[layer].append(gpt.linear(x, params[f"layer{layer}.key"]))
        values[layer].append(gpt.linear(x, params[f"layer{layer}.value"]))
        x = gpt.linear(attention(q, keys[layer], values[layer]), params[f"layer{layer}.attn_out"])
        x = [a + b for a, b in zip(x, residual)]
        residual = x
        x = gpt.rmsnorm(x)
        x = [h.relu() for h in gpt.linear(x, params[f"layer{layer}.mlp_up"])]
        x = gpt.linear(x, params[f"layer{layer}.mlp_down"])
        x = [a + b for a, b in zip(x, residual)]
    return gpt.linear(x, params["lm_head"])


def attention(q, keys, values):
    out = []
    for head in range(gpt.N_HEAD):
        lo, hi = head * gpt.HEAD_DIM, (head + 1) * gpt.HEAD_DIM
        scores = [sum(a * b for a, b in zip(q[lo:hi], k[lo:hi])) / gpt.HEAD_DIM**0.5 for k in keys]
        norm = logsumexp(scores)
        weights = [(s - norm).exp() for s in scores]
        out.extend(sum(w * v[j] for w, v in zip(weights, values)) for j in range(lo, hi))
    return out


def gpt_workload(name="isabella"):
    chars = gpt.vocabulary(gpt.NAMES)
    params = gpt.init_params(Value, len(chars) + 1, seed=42)
    tokens = gpt.encode(name, chars)
    return (lambda tokens: gpt_name_loss(params, tokens)), (tokens,), gpt.flat_params(params)


WORKLOADS = {
    "moons": moons_workload,
    "moons-map": lambda: moons_workload(mapped=True),
    "mlp": mlp_workload,
    "mlp-map": lambda: mlp_workload(mapped=True),
    "gpt": gpt_workload,
}


# ---------------------------------------------------------------------------------------------
# Measuring


def timed(fn):
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def eager_step(loss, args, params):
    for p in params:
        p.grad = 0.0
    loss(*args).backward()


def compiled_step(compiled, args, params):
    for p in params:
        p.grad = 0.0
    compiled(*args).backward()


def retained(build):
    """(bytes still held by what ``build()`` returns, peak bytes while building), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return after - before, peak - before


def first_call(loss, args):
    compiled = chainrule.compile(loss)
    compiled(*args)  # the result is dropped: what stays is the tape
    return compiled


def measure(name, repeats):
    loss, args, params = WORKLOADS[name]()
    # Eager steps and traces take turns, so that the machine's drift (it is shared) hits both alike.
    eagers, traces = [], []
    for _ in range(repeats):
        eagers.append(timed(lambda: eager_step(loss, args, params)))
        traces.append(timed(lambda: first_call(loss, args)))
    eager = statistics.median(eagers)
    compiled = first_call(loss, args)
    replay = statistics.median(timed(lambda: compiled_step(compiled, args, params)) for _ in range(repeats))
    graph, graph_peak = retained(lambda: loss(*args))
    tape, tape_peak = retained(lambda: first_call(loss, args))
    return {
        "eager": eager,
        "trace": statistics.median(traces),
        "replay": replay,
        "graph": graph,
        "tape": tape,
        "graph_peak": graph_peak,
        "tape_peak": tape_peak,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in WORKLOADS:
            parser.error(f"unknown workload {n!r}; choose from {', '.join(WORKLOADS)}")
    print(
        f"{'workload':9s} {'eager ms':>9s} {'trace ms':>9s} {'trace/eager':>11s} {'replay ms':>9s} "
        f"{'graph KB':>9s} {'tape KB':>9s} {'tape/graph':>10s} {'trace peak/graph':>16s}"
    )
    results = {}
    for name in names:
        r = results[name] = measure(name, args.repeats)
        print(
            f"{name:9s} {r['eager'] * 1e3:9.1f} {r['trace'] * 1e3:9.1f} {r['trace'] / r['eager']:11.2f} "
            f"{r['replay'] * 1e3:9.2f} {r['graph'] / 1e3:9.0f} {r['tape'] / 1e3:9.0f} "
            f"{r['tape'] / r['graph']:10.2f} {r['tape_peak'] / r['graph']:16.2f}"
        )
    return results


if __name__ == "__main__":
    main()
