"""Bytes per graph node, chainrule against micrograd 0.1.0, measured with tracemalloc.

Two measures, each run on both engines in one process:

- ``(v*w + x).relu()`` for 20,000 rows of leaves made beforehand: what three nodes of the
  commonest ops cost (the leaves themselves are not counted);
- the forward graph of micrograd's demo step (moons, MLP 2-16-16-1, hinge loss + L2), divided
  by the nodes it made: ``bench_step.py``'s measure, run from here.

Allocation counts do not depend on the machine's load, so one run is enough.

Run:  python benchmarks/bench_memory.py
Peer: micrograd 0.1.0 from PyPI (``pip install micrograd==0.1.0``).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc


def bytes_per_node_of_rows(Value, n=20_000) -> float:
    """Bytes per node of ``y = (v*w + x).relu()`` over ``n`` rows of leaves made beforehand
    (tests/test_value_attributes.py bounds chainrule's with this same measure)."""
    vs = [Value(0.5) for _ in range(n)]
    ws = [Value(1.5) for _ in range(n)]
    xs = [Value(-0.25) for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ys = [(v * w + x).relu() for v, w, x in zip(vs, ws, xs)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before - sys.getsizeof(ys)) / (3 * n)


def main():
    from bench_step import ScalarEngine, moons  # this folder's: python benchmarks/bench_memory.py

    import chainrule
    import chainrule.nn

    engines = [("chainrule", chainrule.Value, chainrule.nn.MLP)]
    try:
        import micrograd.engine
        import micrograd.nn

        engines.append(("micrograd 0.1.0", micrograd.engine.Value, micrograd.nn.MLP))
    except ImportError:
        print("(micrograd 0.1.0 is not installed: chainrule alone)")
    print(
        f"Python {sys.version.split()[0]}, chainrule's C loops {'on' if chainrule.engine._graph else 'off'}"
    )
    rows, demo = {}, {}
    X, y = moons()
    for name, Value, MLP in engines:
        rows[name] = bytes_per_node_of_rows(Value)
        demo[name] = ScalarEngine(name, Value, MLP, X, y).bytes_per_node()
    print("\nbytes per node | (v*w + x).relu() | the demo's forward graph (nodes)")
    for name in rows:
        per_node, nodes = demo[name]
        print(f"{name:16s} | {rows[name]:16.1f} | {per_node:.1f} ({nodes})")
    if len(rows) == 2:
        a, b = rows.values()
        (c, _), (d, _) = demo.values()
        print(f"chainrule / micrograd | {a / b:16.2f} | {c / d:.2f}")


if __name__ == "__main__":
    main()
