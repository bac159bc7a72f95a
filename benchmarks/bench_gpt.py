"""chainrule eager on the code people run on scalar engines, timed against the engines they come from.

Three workloads, each run interleaved in one process (the engines take turns, so a noisy
neighbour slows all of them alike) and summarised by the median:

1. The GPT-style training step of benchmarks/gpt_style.py (one layer, 4 heads, width 16,
   context 16, one name per step, Adam) on ``MinimalValue`` (the pure-Python GPT scripts'
   engine design: slotted nodes that store their local gradients) and on ``chainrule.Value``.
   Both start from the same seed and see the same names; their losses must agree to 1e-9 at
   every step or the benchmark stops.
2. micrograd's demo step (moons, MLP 2-16-16-1, max-margin loss; benchmarks/bench_step.py) on
   micrograd 0.1.0 and on chainrule eager.
3. A chain of ``--chain`` multiplications ``y = y * c`` by one Value ``c``: the time to build it
   and the time to backpropagate through it, on chainrule and on micrograd.

The last column of the table is ``their time / chainrule's time``: above 1 means chainrule is
faster. The targets are those of the project's issue on eager speed.

Run:  python benchmarks/bench_gpt.py [--steps 20] [--moons-steps 20] [--chain 1000000] [--repeats 3]
      python benchmarks/bench_gpt.py --quick      # a smoke run of a few seconds
Peers: micrograd 0.1.0 (``pip install micrograd==0.1.0``) and scikit-learn for the moons data;
each section is skipped with a note when its peer is missing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpt_style and bench_step live here

import gpt_style as gpt  # noqa: E402

import chainrule  # noqa: E402

LOSS_TOLERANCE = 1e-9


def timed(fn, *args):
    """(seconds, result) of one call, after a garbage collection so earlier garbage is not billed."""
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------------------------------
# 1. The GPT step


def bench_gpt(steps: int, seed: int = 42) -> dict:
    chars = gpt.vocabulary(gpt.NAMES)
    engines = {"minimal": gpt.MinimalValue, "chainrule": chainrule.Value}
    params = {name: gpt.init_params(Value, len(chars) + 1, seed) for name, Value in engines.items()}
    adam = {name: gpt.adam_state(params[name]) for name in engines}
    times = {name: [] for name in engines}
    worst = 0.0
    for k in range(steps):
        tokens = gpt.encode(gpt.NAMES[k % len(gpt.NAMES)], chars)
        lr = gpt.lr_at(k, steps)
        order = list(engines) if k % 2 == 0 else list(reversed(engines))  # who goes first alternates
        losses = {}
        for name in order:
            seconds, losses[name] = timed(gpt.step, params[name], tokens, adam[name], lr)
            times[name].append(seconds)
        gap = abs(losses["chainrule"] - losses["minimal"])
        worst = max(worst, gap)
        if gap > LOSS_TOLERANCE * max(1.0, abs(losses["minimal"])):
            raise SystemExit(f"GPT step {k}: the losses differ: {losses}")
    return {
        "minimal": statistics.median(times["minimal"]),
        "chainrule": statistics.median(times["chainrule"]),
        "worst_gap": worst,
        "final_loss": losses["chainrule"],
    }


# ---------------------------------------------------------------------------------------------
# 2. micrograd's moons step


def bench_moons(steps: int) -> dict | None:
    try:
        import bench_step  # needs scikit-learn for the data
        import micrograd.engine
        import micrograd.nn
    except ImportError as missing:
        print(f"skipping the moons step: {missing}")
        return None
    import chainrule.nn

    X, y = bench_step.moons()
    runners = [
        bench_step.ScalarEngine("micrograd", micrograd.engine.Value, micrograd.nn.MLP, X, y),
        bench_step.ScalarEngine("chainrule", chainrule.Value, chainrule.nn.MLP, X, y),
    ]
    times = {r.name: [] for r in runners}
    for k in range(steps):
        losses = {}
        for r in runners if k % 2 == 0 else reversed(runners):
            seconds, losses[r.name] = timed(r.step, k)
            times[r.name].append(seconds)
        if abs(losses["chainrule"] - losses["micrograd"]) > LOSS_TOLERANCE * max(
            1.0, abs(losses["micrograd"])
        ):
            raise SystemExit(f"moons step {k}: losses differ: {losses}")
    return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------
# 3. A long chain


def build_chain(Value, n: int):
    c = Value(0.9999999)
    y = Value(1.0)
    for _ in range(n):
        y = y * c
    return y, c


def bench_chain(n: int, repeats: int) -> dict:
    engines = {"chainrule": chainrule.Value}
    try:
        import micrograd.engine

        engines["micrograd"] = micrograd.engine.Value
    except ImportError:
        print("skipping micrograd's chain: micrograd is not installed")
    # micrograd sorts the graph recursively: one Python frame per node of the chain.
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, n + 1000))
    build = {name: [] for name in engines}
    back = {name: [] for name in engines}
    results = {}
    try:
        for r in range(repeats):
            for name in engines if r % 2 == 0 else list(reversed(engines)):
                seconds, (y, c) = timed(build_chain, engines[name], n)
                build[name].append(seconds)
                seconds, _ = timed(y.backward)
                back[name].append(seconds)
                results[name] = (y.data, c.grad)
                del y, c  # free one engine's million nodes before the next builds its own
    finally:
        sys.setrecursionlimit(old_limit)
    if "micrograd" in results:
        (y1, g1), (y2, g2) = results["chainrule"], results["micrograd"]
        if abs(y1 - y2) > 1e-9 * abs(y2) or abs(g1 - g2) > 1e-9 * abs(g2):
            raise SystemExit(
                f"chain: chainrule gives {results['chainrule']}, micrograd {results['micrograd']}"
            )
    return {name: (statistics.median(build[name]), statistics.median(back[name])) for name in engines}


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="GPT steps per engine (default 20)")
    parser.add_argument("--moons-steps", type=int, default=20, help="moons steps per engine (default 20)")
    parser.add_argument("--chain", type=int, default=1_000_000, help="nodes in the chain (default 1e6)")
    parser.add_argument("--repeats", type=int, default=3, help="chain builds per engine (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 GPT steps, 2 moons steps, one 100k chain")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.moons_steps, args.chain, args.repeats = 2, 2, 100_000, 1
    for name in ("steps", "moons_steps", "chain", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    rows = []  # (workload, their engine, their time, chainrule's time, target)
    g = bench_gpt(args.steps)
    rows.append(
        (f"GPT step (median of {args.steps})", "minimal", g["minimal"], g["chainrule"], ">= 1.5x (aim 3x)")
    )
    m = bench_moons(args.moons_steps)
    if m:
        rows.append(
            (
                f"moons step (median of {args.moons_steps})",
                "micrograd",
                m["micrograd"],
                m["chainrule"],
                ">= 40x",
            )
        )
    chain = bench_chain(args.chain, args.repeats)
    ours_build, ours_back = chain["chainrule"]
    label = f"{args.chain:,}-node chain"
    if "micrograd" in chain:
        their_build, their_back = chain["micrograd"]
        rows.append((f"{label}: build", "micrograd", their_build, ours_build, ">= 1x"))
        rows.append((f"{label}: backward", "micrograd", their_back, ours_back, ""))
        rows.append(
            (
                f"{label}: total",
                "micrograd",
                their_build + their_back,
                ours_build + ours_back,
                "< 3 s for chainrule",
            )
        )
    else:
        rows.append(
            (f"{label}: build + backward", "-", float("nan"), ours_build + ours_back, "< 3 s for chainrule")
        )

    print(f"\nchainrule eager vs the engines its users come from (Python {sys.version.split()[0]})")
    header = (
        f"{'workload':34s} {'peer':>9s} {'peer time':>11s} {'chainrule':>11s} {'peer/chainrule':>15s}  target"
    )
    print(header)
    print("-" * len(header))
    for workload, peer, theirs, ours, target in rows:
        times = f"{_seconds(theirs):>11s} {_seconds(ours):>11s} {theirs / ours:>14.2f}x"
        print(f"{workload:34s} {peer:>9s} {times}  {target}")
    gap, last = g["worst_gap"], g["final_loss"]
    print(f"\nGPT losses agree at every step (largest gap {gap:.1e}; last loss {last:.4f})")
    return rows


def _seconds(t: float) -> str:
    return "-" if t != t else f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


if __name__ == "__main__":
    main()
