"""chainrule.compile's backends across graph sizes, side by side with eager and PyTorch.

For each graph of the table, one step (forward, backward, gradients reset) runs on:
chainrule eager, the compiled function with each backend (numpy; C, the tape's own program;
auto, the default: the C table program pip built with chainrule), and PyTorch eager (float64,
one thread, as numpy's BLAS is here) where the graph is an MLP. The engines take
turns in one process (ten steps in a row for the compiled functions, PyTorch and JAX, one for
eager), so a noisy neighbour slows them alike; the table gives the median time per step, the
ratios that matter, and the trace time of each backend (for C with the build by the C
compiler: the benchmark starts from an empty cache). Where JAX is installed (``pip install
"chainrule[jax]"``; never a dependency), two more columns for the MLPs: chainrule's own
``backend="jax"`` (the tape as one XLA program) and a hand-written ``jax.jit`` of the same MLP
step, both in float64.
Every compiled step's loss and gradients are checked against eager's (1e-9 relative), after
the timing: reading them is not part of a step. Each
engine gets the data in its own form, made once outside the timing: tensors for PyTorch, jax
arrays for JAX, numpy arrays for the compiled functions; chainrule's steps reset the gradients
with an optimizer's zero_grad(), as a training loop does.

Graphs: MLPs with the demo's max-margin loss (relu hidden layers, a linear output, the model
applied to the rows with ``chainrule.map_rows``; the trace time of a plain loop is shown too) at several
batch sizes, widths and depths (``--large`` adds batch 10,000, width 256 and depth 32); a
scalar RNN (h = tanh(w*h + u*x + b)) over a long sequence; a long chain of multiplications by
one parameter; a random graph that is deep rather than wide. Memory: what one eager forward
graph holds, and what each compiled function keeps (its tape) relative to it.

Training steps (``--training``, and with ``--large``): the whole step of a training loop
(optimizer ``zero_grad``, the compiled call, ``backward``, the optimizer's ``step``, SGD) with
``backend="jax"`` inside ``chainrule.on_device(model, optimizer)`` (the parameters stay on the
device between steps), against a hand-written ``jax.jit`` step of the same MLP that keeps its
weights on the device and updates them there, at batch 10,000 (2-16-16-1) and at width 256
(2-256-256-1, batch 100); and where chainrule's step spends its time: each phase, and the XLA
call alone on arrays already on the device.

Run:  python benchmarks/bench_backends.py [--repeats 7] [--quick] [--large] [--training]
Peers: PyTorch (pip install torch==2.13.0 here) and JAX when installed; numpy and a C
compiler for the compiled rows.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import random
import statistics
import sys
import tempfile
import time

# Every engine on one thread, as PyTorch is run: numpy's BLAS too (the numpy backend's matrix
# products), whose idle threads would otherwise spin on the second core between its calls.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_trace lives here

from bench_trace import retained  # noqa: E402

import chainrule  # noqa: E402
from chainrule import Value, nn  # noqa: E402
from chainrule.optim import SGD  # noqa: E402


def mlp_case(batch: int, width: int, depth: int, seed: int = 1):
    rng = random.Random(seed)
    random.seed(seed)
    model = nn.MLP(2, [width] * depth + [1])
    X = [[rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)] for _ in range(batch)]
    y = [1.0 if a * b > 0 else -1.0 for a, b in X]

    def loss(X, y):  # map_rows: a compiled trace runs the model on one row and copies it
        scores = chainrule.map_rows(model, X)
        return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))

    def loss_by_loop(X, y):  # the same in a plain loop, traced row by row (its trace time is shown)
        scores = [model(x) for x in X]
        return sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))

    name = f"MLP 2-{'-'.join([str(width)] * depth)}-1, batch {batch}"
    return name, model.parameters(), loss, (X, y), model, loss_by_loop


def rnn_case(steps: int, seed: int = 2):
    rng = random.Random(seed)
    w, u, b = Value(0.5), Value(0.8), Value(0.1)
    xs = [rng.uniform(-1, 1) for _ in range(steps)]

    def loss(xs):
        h = Value(0.0)
        for x in xs:
            h = (w * h + u * x + b).tanh()
        return h * h

    return f"scalar RNN, {steps} steps", [w, u, b], loss, (xs,), None, None


def chain_case(n: int):
    c = Value(0.99999)

    def loss(x):
        y = x[0]
        for _ in range(n):
            y = y * c
        return y

    return f"chain of {n:,} *", [c], loss, ([1.5],), None, None


class TorchMLP:
    """The same MLP and loss on PyTorch tensors (float64, one thread), weights copied from chainrule."""

    def __init__(self, model, X, y):
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.layers = []
        for layer in model.layers:
            W = torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64)
            b = torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64)
            self.layers.append((W.requires_grad_(), b.requires_grad_()))
        self.X = torch.tensor(X, dtype=torch.float64)
        self.y = torch.tensor(y, dtype=torch.float64)

    def step(self):
        h = self.X
        for i, (W, b) in enumerate(self.layers):
            h = h @ W.T + b
            if i < len(self.layers) - 1:
                h = h.relu()
        loss = (1 - self.y * h[:, 0]).relu().mean()
        for W, b in self.layers:
            W.grad = b.grad = None
        loss.backward()
        return lambda: (loss.item(), [])  # (its gradients are in another order: the loss is checked)


class JaxMLP:
    """The same MLP and loss under jax.jit (float64), weights copied from chainrule."""

    def __init__(self, model, X, y, lr=0.0):
        import jax

        jax.config.update("jax_enable_x64", True)
        jnp = jax.numpy
        self.weights = [
            (
                jnp.array([[w.data for w in n.w] for n in layer.neurons]),
                jnp.array([n.b.data for n in layer.neurons]),
            )
            for layer in model.layers
        ]
        self.X, self.y = jnp.array(X), jnp.array(y)

        def loss(weights, X, y):
            h = X
            for i, (W, b) in enumerate(weights):
                h = h @ W.T + b
                if i < len(weights) - 1:
                    h = jax.nn.relu(h)
            return jax.nn.relu(1 - y * h[:, 0]).mean()

        self.value_and_grad = jax.jit(jax.value_and_grad(loss))

        def train_step(weights, X, y):  # SGD, the weights staying on the device
            value, grads = jax.value_and_grad(loss)(weights, X, y)
            return value, jax.tree.map(lambda w, g: w - lr * g, weights, grads)

        self.jitted_train_step = jax.jit(train_step)
        self.step()  # compiles
        self.train_step()

    def step(self):
        value, grads = self.value_and_grad(self.weights, self.X, self.y)
        value.block_until_ready()
        return lambda: (float(value), [])

    def train_step(self):
        value, self.weights = self.jitted_train_step(self.weights, self.X, self.y)
        value.block_until_ready()
        return lambda: (float(value), [])


BACKENDS = ("numpy", "c", "auto")  # "auto", the default: the C table program pip built
GRAD = operator.attrgetter("grad")

# Every step returns a function that reads its loss and gradients, called after the timing to
# check them: reading 66,000 gradients one Value at a time is a check, not part of a step.


def eager_step(params, loss, args, optimizer):
    optimizer.zero_grad()  # as in a training loop (the optimizer is never stepped here)
    out = loss(*[_as_values(a) for a in args])
    out.backward()
    return lambda: (out.data, list(map(GRAD, params)))


def _as_values(obj):
    if isinstance(obj, list):
        return [_as_values(o) for o in obj]
    return Value(obj)


def compiled_step(f, params, args, optimizer):
    optimizer.zero_grad()
    out = f(*args)
    out.backward()
    return lambda: (out.data, list(map(GRAD, params)))


def dag_case(n: int, seed: int = 3):
    """A random graph that is deep rather than wide: each node reads one of the last few nodes,
    the node before it and a parameter (tanh keeps the numbers in range)."""
    rng = random.Random(seed)
    params = [Value(rng.uniform(-1, 1)) for _ in range(8)]
    plan = [(rng.randrange(3), rng.randrange(2, 6), rng.randrange(len(params))) for _ in range(n)]

    def loss(x):
        nodes = [x[0], x[1]]
        for kind, back, p in plan:
            a, previous, w = nodes[-min(back, len(nodes))], nodes[-1], params[p]
            if kind == 0:
                nodes.append((a * w).tanh())
            elif kind == 1:
                nodes.append((a + w * previous).tanh())
            else:
                nodes.append(a * previous + w)
        return nodes[-1] * nodes[-1]

    return f"random deep DAG, {n:,} nodes", params, loss, ([0.3, -0.4],), None, None


def graph_and_tape_bytes(loss, args) -> tuple[int, dict]:
    """What one eager forward graph holds, and what a compiled function keeps after its first
    call (its tape), with each backend (tracemalloc; the C library itself, a few kB of code, is
    not counted)."""

    def first_call(backend):
        f = chainrule.compile(loss, backend=backend)
        f(*args)
        return f

    graph, _ = retained(lambda: loss(*[_as_values(a) for a in args]))
    return graph, {b: retained(lambda b=b: first_call(b))[0] for b in BACKENDS}


def timed(fn, steps: int = 1):
    """(seconds per step, result of the last) of ``steps`` steps in a row, after a collection
    and, for more than one step, one step untimed: the collection walks every object in the
    process and leaves the caches cold, which the first step after it pays for."""
    gc.collect()
    if steps > 1:
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        result = fn()
    return (time.perf_counter() - start) / steps, result


IN_A_ROW = 10  # fast steps are timed ten in a row, as in training, not one after a collection


def close(a, b) -> bool:
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y)) for x, y in zip([a[0], *a[1]], [b[0], *b[1]]))


def run_case(case, repeats: int, eager_repeats: int):
    name, params, loss, args, model, loss_by_loop = case
    runners, trace = {}, {}
    # Each engine gets the data in its own form, made once: tensors for PyTorch, jax arrays for
    # JAX, and numpy arrays for the compiled functions (which take lists too, at about 30 us
    # more per call on the moons batch); eager chainrule makes its Values in every step.
    arrays = [numpy.asarray(a, dtype=numpy.float64) for a in args]
    optimizer = SGD(params, lr=0.0)  # for its zero_grad(), which PyTorch's step does by hand
    for backend in BACKENDS:
        f = chainrule.compile(loss, backend=backend)
        seconds, _ = timed(lambda f=f: f(*arrays))
        trace[backend] = seconds
        runners[backend] = lambda f=f: compiled_step(f, params, arrays, optimizer)
    if loss_by_loop is not None:
        trace["loop"], _ = timed(lambda: chainrule.compile(loss_by_loop)(*arrays))
    if model is not None:
        try:
            runners["pytorch"] = TorchMLP(model, *args).step
        except ImportError:
            pass
        try:
            runners["jax.jit"] = JaxMLP(model, *args).step
        except ImportError:
            pass
        else:  # chainrule's JAX backend, for the MLPs (a long chain would be an XLA op per node)
            f = chainrule.compile(loss, backend="jax")
            trace["jax"], _ = timed(lambda f=f: f(*arrays))
            runners["jax"] = lambda f=f: compiled_step(f, params, arrays, optimizer)
    reference = eager_step(params, loss, args, optimizer)()
    times = {k: [] for k in ["eager", *runners]}
    for k in range(repeats):
        order = list(runners)[k % len(runners) :] + list(runners)[: k % len(runners)]
        for engine in order:
            seconds, result = timed(runners[engine], IN_A_ROW)
            times[engine].append(seconds)
            # PyTorch and JAX list their gradients in another order, so only their loss is compared.
            if not close(result(), reference):
                raise SystemExit(f"{name}: {engine} disagrees with eager")
        if k < eager_repeats:
            seconds, _ = timed(lambda: eager_step(params, loss, args, optimizer))
            times["eager"].append(seconds)
    return name, {k: statistics.median(v) for k, v in times.items() if v}, trace


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per engine (default 7)")
    parser.add_argument("--quick", action="store_true", help="small graphs and 2 repeats: a smoke run")
    parser.add_argument(
        "--large",
        action="store_true",
        help="add the large graphs (batch 10,000, width 256, depth 32: minutes, GBs while tracing)",
    )
    parser.add_argument(
        "--training", action="store_true", help="only the training steps, backend='jax' against jax.jit"
    )
    args = parser.parse_args(argv)
    if args.training:
        training_steps(args.repeats)
        return
    # A fresh cache, so that the C backend's trace time includes building with the C compiler.
    os.environ["CHAINRULE_CACHE"] = tempfile.mkdtemp(prefix="chainrule-bench-")
    if args.quick:
        cases = [mlp_case(10, 16, 2), rnn_case(100), chain_case(1000), dag_case(1000)]
        args.repeats = 2
    else:
        cases = [
            mlp_case(10, 16, 2),
            mlp_case(100, 16, 2),
            mlp_case(1000, 16, 2),
            mlp_case(100, 64, 2),
            mlp_case(100, 16, 8),
            rnn_case(1000),
            chain_case(100_000),
            dag_case(20_000),
        ]
        if args.large:
            cases[5:5] = [mlp_case(10_000, 16, 2), mlp_case(100, 256, 2), mlp_case(100, 16, 32)]
    print(
        f"python {sys.version.split()[0]}, chainrule eager vs compiled (numpy, C, auto, jax) vs PyTorch "
        "eager float64 vs jax.jit"
    )
    print(
        f"{'graph':<34}{'eager':>9}{'numpy':>8}{'C':>8}{'auto':>8}{'jax':>8}{'pytorch':>9}{'jax.jit':>9}"
        f"{'best/eager':>11}{'best/torch':>11}{'best/jax':>9}{'jax/jax.jit':>12}{'trace np':>9}{'trace C':>8}"
        f"{'trace auto':>11}{'trace jax':>10}{'graph MB':>9}{'tape np':>8}{'tape C':>7}{'tape auto':>10}"
    )
    for case in cases:
        name, t, trace = run_case(case, args.repeats, eager_repeats=min(args.repeats, 3))
        graph, tape = graph_and_tape_bytes(case[2], case[3])
        ms = {k: f"{v * 1e3:.3f}" for k, v in t.items()}
        best = min(t[backend] for backend in BACKENDS)
        torch_ratio = f"{best / t['pytorch']:.2f}" if "pytorch" in t else "-"
        jax_ratio = f"{best / t['jax.jit']:.2f}" if "jax.jit" in t else "-"
        ours = f"{t['jax'] / t['jax.jit']:.2f}" if "jax" in t else "-"
        times = "".join(
            f"{ms.get(k, '-'):>{w}}" for k, w in [("numpy", 8), ("c", 8), ("auto", 8), ("jax", 8)]
        )
        peers = f"{ms.get('pytorch', '-'):>9}{ms.get('jax.jit', '-'):>9}"
        traces = f"{trace['numpy']:>8.2f}s{trace['c']:>7.2f}s{trace['auto']:>10.2f}s"
        traces += f"{trace['jax']:>9.2f}s" if "jax" in trace else f"{'-':>10}"
        traces += f"{trace['loop']:>7.2f}s" if "loop" in trace else f"{'':>8}"
        tapes = f"{tape['numpy'] / graph:>8.2f}{tape['c'] / graph:>7.2f}{tape['auto'] / graph:>10.2f}"
        print(
            f"{name:<34}{ms['eager']:>9}{times}{peers}{best / t['eager']:>11.4f}{torch_ratio:>11}"
            f"{jax_ratio:>9}{ours:>12}{traces}{graph / 1e6:>9.1f}{tapes}"
        )
    print("times in ms (median); best: the fastest of chainrule's own backends (numpy, C, auto); best/x")
    print("are time ratios, below 1 where compiled is faster; jax: chainrule's backend='jax' (MLPs only);")
    print("jax/jax.jit: it against the hand-written step; graph MB: one eager forward graph; tape: what a")
    print("compiled function keeps, over the graph; trace: a compiled function's first call (for jax with")
    print("XLA's compilation); (loop): auto's, with the model run on the rows in a plain loop instead of")
    print("chainrule.map_rows")
    if args.large:
        training_steps(args.repeats)


def training_steps(repeats: int):
    """The training step of backend='jax' against a hand-written jax.jit step, and where it goes."""
    print()
    print("training steps: zero_grad, compiled call, backward, SGD step; vs jax.jit (weights on the device)")
    print(
        f"{'graph':<34}{'jax.jit':>9}{'jax':>9}{'ratio':>7}{'zero_grad':>10}{'call':>8}{'(XLA)':>8}"
        f"{'backward':>9}{'step':>8}"
    )
    for batch, width in [(10_000, 16), (100, 256)]:
        name, t, each = _training_case(batch, width, repeats)
        print(
            f"{name:<34}{t['jax.jit'] * 1e3:>9.3f}{t['jax'] * 1e3:>9.3f}{t['jax'] / t['jax.jit']:>7.2f}"
            f"{each['zero_grad']:>10.3f}{each['call']:>8.3f}{t['xla'] * 1e3:>8.3f}{each['backward']:>9.3f}"
            f"{each['step']:>8.3f}"
        )
    print("times in ms (median); ratio: jax over jax.jit; chainrule's step runs inside chainrule.on_device,")
    print("its phases: zero_grad (the gradients set to 0 on the device), call (the XLA call with the")
    print("gradients and SGD's update, and the result), backward (the gradients stored on the device),")
    print("step (SGD's step, taking the call's update); (XLA): the compiled call alone (the gradients,")
    print("without the update), on arrays on the device")


TRAINING_PHASES = ("zero_grad", "call", "backward", "step")


def _training_case(batch: int, width: int, repeats: int):
    """(name, median seconds per step of jax, jax.jit and the XLA call alone, median ms per phase
    of chainrule's step) for the MLP 2-width-width-1 over ``batch`` rows."""
    name, params, loss, args, model, _ = mlp_case(batch, width, 2)
    arrays = [numpy.asarray(a, dtype=numpy.float64) for a in args]
    f = chainrule.compile(loss, backend="jax")
    f(*arrays)  # traced, and compiled by XLA
    optimizer = SGD(params, lr=0.0)  # (every step's work, with the weights left as they are)
    hand = JaxMLP(model, *args, lr=0.0)
    spent = {phase: [] for phase in TRAINING_PHASES}

    def chainrule_step():
        t0 = time.perf_counter()
        optimizer.zero_grad()
        t1 = time.perf_counter()
        out = f(*arrays)
        t2 = time.perf_counter()
        out.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        for phase, seconds in zip(TRAINING_PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[phase].append(seconds)

    times = {"jax": [], "jax.jit": [], "xla": []}
    runs = [("jax", chainrule_step), ("jax.jit", hand.train_step), ("xla", _xla_call_alone(f, arrays))]
    # The parameters stay on the device between steps, as the hand-written step's weights do.
    with chainrule.on_device(model, optimizer):
        chainrule_step()  # (the optimizer's update compiles)
        for k in range(repeats):
            for engine, step in runs[k % 3 :] + runs[: k % 3]:
                times[engine].append(timed(step, IN_A_ROW)[0])
    t = {k: statistics.median(v) for k, v in times.items()}
    return name, t, {phase: statistics.median(v) * 1e3 for phase, v in spent.items()}


def _xla_call_alone(f, arrays):
    """A function that runs the compiled XLA call of f's latest trace on arguments already on the
    device: the part of a call that is XLA's."""
    import jax

    from chainrule.compiler.arguments import flatten_all

    tape = f.last_tape
    numbers = flatten_all(numpy, arrays)[1]
    externals = tape.backend.split(numpy.array([v.data for v in tape.externals]))
    leaves = (numbers, tape.constant_data, externals, numpy.zeros(()))
    with jax.enable_x64(True):
        on_device = jax.device_put(leaves)

    def call():
        with jax.enable_x64(True):
            jax.block_until_ready(tape.backend.value_and_grad(*on_device))

    return call


if __name__ == "__main__":
    main()
