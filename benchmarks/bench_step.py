"""The micrograd demo's training step, timed side by side on chainrule, micrograd and PyTorch.

The step: make_moons(n_samples=100, noise=0.1), MLP(2, [16, 16, 1]), SVM max-margin loss
``(1 - y*score).relu()`` averaged, plus ``1e-4 * sum(p*p)``, zero_grad, backward, SGD with
lr = 1.0 - 0.9*k/100. The engines run interleaved in one process (one step of each in turn),
so a noisy neighbour slows all of them alike; we print the median step time of each, the
ratios, and the bytes per graph node measured with tracemalloc.

Run:  python benchmarks/bench_step.py [--steps 30]
Peers: micrograd 0.1.0 from PyPI (``pip install micrograd==0.1.0``) and PyTorch when installed.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc

from sklearn.datasets import make_moons


def moons():
    X, y = make_moons(n_samples=100, noise=0.1, random_state=1337)
    return X.tolist(), (y * 2 - 1).tolist()


class ScalarEngine:
    """The demo step for any micrograd-style engine: the same code runs on both."""

    def __init__(self, name, value_cls, mlp_cls, X, y):
        random.seed(1337)
        self.name, self.Value, self.X, self.y = name, value_cls, X, y
        self.model = mlp_cls(2, [16, 16, 1])

    def loss(self):
        Value, model = self.Value, self.model
        inputs = [list(map(Value, row)) for row in self.X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(self.y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        return data_loss + reg_loss

    def step(self, k):
        total = self.loss()
        self.model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in self.model.parameters():
            p.data -= lr * p.grad
        return total.data

    def bytes_per_node(self):
        """Bytes allocated while building one forward graph, divided by the nodes it made."""
        gc.collect()
        params = set(map(id, self.model.parameters()))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        total = self.loss()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        nodes, stack, seen = 0, [total], {id(total)}
        while stack:
            v = stack.pop()
            nodes += id(v) not in params
            for child in v._prev:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append(child)
        return (after - before) / nodes, nodes


class CompiledEngine(ScalarEngine):
    """chainrule's demo step with the loss function traced once by chainrule.compile."""

    def __init__(self, X, y):
        import chainrule
        import chainrule.nn

        super().__init__("compiled", chainrule.Value, chainrule.nn.MLP, X, y)
        # The first call traces. The first trace in a process also pays one-time costs (numpy's
        # first calls, say), so five fresh functions are traced: the first time and the median.
        self.trace_times = []
        for _ in range(5):
            self.fast_loss = chainrule.compile(self.loss_of)
            gc.collect()
            start = time.perf_counter()
            self.fast_loss(self.X, self.y)
            self.trace_times.append(time.perf_counter() - start)

    def loss_of(self, X, y):
        model = self.model
        scores = list(map(model, X))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        return data_loss + reg_loss

    def loss(self):
        return self.fast_loss(self.X, self.y)


class TorchEngine:
    name = "pytorch"

    def __init__(self, X, y):
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(1337)
        self.torch = torch
        self.X = torch.tensor(X, dtype=torch.float64)
        self.y = torch.tensor(y, dtype=torch.float64)
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
        ).double()

    def step(self, k):
        scores = self.model(self.X).squeeze(1)
        data_loss = (1 - self.y * scores).relu().mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in self.model.parameters())
        total = data_loss + reg_loss
        self.model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * k / 100
        with self.torch.no_grad():
            for p in self.model.parameters():
                p -= lr * p.grad
        return total.item()


def engines(X, y):
    import chainrule
    import chainrule.nn

    found = [ScalarEngine("chainrule", chainrule.Value, chainrule.nn.MLP, X, y)]
    try:
        found.append(CompiledEngine(X, y))
    except ImportError:
        print("numpy not installed: skipping chainrule.compile")
    try:
        import micrograd.engine
        import micrograd.nn

        found.append(ScalarEngine("micrograd", micrograd.engine.Value, micrograd.nn.MLP, X, y))
    except ImportError:
        print("micrograd not installed: pip install micrograd==0.1.0")
    try:
        found.append(TorchEngine(X, y))
    except ImportError:
        print("torch not installed: skipping PyTorch")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per engine")
    args = parser.parse_args()
    X, y = moons()
    runners = engines(X, y)
    times = {r.name: [] for r in runners}
    for k in range(args.steps):
        for r in runners:
            start = time.perf_counter()
            r.step(k)
            times[r.name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"median step time over {args.steps} interleaved steps")
    for name, t in median.items():
        print(f"  {name:10s} {t * 1e3:9.2f} ms")
    if "micrograd" in median:
        print(f"  chainrule is {median['micrograd'] / median['chainrule']:.1f}x faster than micrograd")
    if "pytorch" in median:
        print(f"  chainrule eager / pytorch time ratio: {median['chainrule'] / median['pytorch']:.2f}")
    if "compiled" in median:
        compiled = median["compiled"]
        print(f"  compiled / pytorch time ratio: {compiled / median.get('pytorch', float('nan')):.2f}")
        print(f"  compiled is {median['chainrule'] / compiled:.1f}x faster than chainrule eager")
        if "micrograd" in median:
            print(f"  compiled is {median['micrograd'] / compiled:.0f}x faster than micrograd")
        times = next(r for r in runners if r.name == "compiled").trace_times
        trace, first = statistics.median(times), times[0]
        print(
            f"  trace (compile) time {trace * 1e3:.1f} ms = {trace / median['chainrule']:.2f} eager steps "
            f"(median of {len(times)}; the process's first trace {first * 1e3:.1f} ms)"
        )
    print("memory of one forward graph (tracemalloc)")
    per_node = {}
    for r in runners:
        if isinstance(r, ScalarEngine) and r.name != "compiled":
            per_node[r.name], nodes = r.bytes_per_node()
            print(f"  {r.name:10s} {per_node[r.name]:7.1f} bytes/node over {nodes} nodes")
    if "micrograd" in per_node:
        print(
            f"  chainrule uses {per_node['chainrule'] / per_node['micrograd']:.2f} of micrograd's bytes/node"
        )
    return median, per_node


if __name__ == "__main__":
    main()
