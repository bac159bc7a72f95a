"""micrograd's update loop, ``for p in model.parameters(): p.data -= lr * p.grad``, timed side by side.

The same loop runs over a chainrule MLP's Parameters, over plain chainrule Values holding the
same numbers, and over micrograd 0.1.0's own MLP of the same shape (its Values are plain
Python objects with a ``__dict__``). The three take turns, one loop each, so a noisy
neighbour slows all of them alike; we print the median of each and the ratios. The target:
Parameters at most 1.2x the time of plain Values.

Run:  python benchmarks/bench_update.py [--repeats 41] [--sizes 2,16,16,1 64,64,1]
Peer: micrograd 0.1.0 from PyPI (``pip install micrograd==0.1.0``), when installed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import types


def update(params, lr=1e-3):
    for p in params:
        p.data -= lr * p.grad


def own_copy(function):
    """A copy of ``function`` with a code object of its own. CPython specializes each attribute
    access of a code object for the type it meets; one loop shared by three engines that take
    turns would keep losing that, and time the switching instead of the loop."""
    return types.FunctionType(
        function.__code__.replace(), function.__globals__, function.__name__, function.__defaults__
    )


def timed(loop, params) -> float:
    start = time.perf_counter()
    loop(params)
    return time.perf_counter() - start


def models(sizes):
    """(name, list of parameters) for each engine, every gradient set to a small number."""
    from chainrule import Value
    from chainrule.nn import MLP

    random.seed(0)
    model = MLP(sizes[0], sizes[1:])
    found = [("chainrule Parameters", model.parameters())]
    found.append(("chainrule plain Values", [Value(p.data) for p in model.parameters()]))
    try:
        from micrograd.nn import MLP as MicroMLP

        found.append(("micrograd 0.1.0", MicroMLP(sizes[0], sizes[1:]).parameters()))
    except ImportError:
        pass
    for _, params in found:
        for p in params:
            p.grad = 0.01
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--sizes", nargs="*", default=["2,16,16,1", "64,64,1", "64,64,64,10"])
    args = parser.parse_args()
    for text in args.sizes:
        sizes = [int(n) for n in text.split(",")]
        engines = models(sizes)
        loops = {name: own_copy(update) for name, _ in engines}
        times = {name: [] for name, _ in engines}
        for _ in range(args.repeats):
            for name, params in engines:
                times[name].append(timed(loops[name], params))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        plain = medians["chainrule plain Values"]
        print(f"MLP {'-'.join(map(str, sizes))}, {len(engines[0][1])} parameters (median of {args.repeats})")
        for name, median in medians.items():
            print(f"  {name:24s} {median * 1e3:8.3f} ms   {median / plain:5.2f}x plain Values")


if __name__ == "__main__":
    main()
