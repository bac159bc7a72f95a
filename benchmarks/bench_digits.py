"""``chainrule train digits`` timed: the compiled recipe end to end, and eager steps for comparison.

The target (issue 4): an MLP 64-32-10 trained with minibatches on the full scikit-learn digits
training split reaches >= 95% test accuracy in under 60 seconds on a 2-core machine, tracing
included. We time ``train("digits")`` (the CLI's defaults: 500 steps of 32 images, Adam) from
the moment the data is loaded, so the time covers building the model, tracing, every step and
the final accuracy over both splits. A few eager steps of the same recipe show the speed-up.

Run:  python benchmarks/bench_digits.py [--repeats 3] [--eager-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from chainrule import datasets
from chainrule.training import RECIPES, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="compiled runs (we print the median)")
    parser.add_argument("--eager-steps", type=int, default=20, help="eager steps to time (0: skip)")
    args = parser.parse_args()

    data = datasets.load("digits", seed=1337, **RECIPES["digits"].data_options)
    print(f"digits: {len(data.X_train)} training and {len(data.X_test)} test images")

    totals, results = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results.append(train(data, compile=True))
        totals.append(time.perf_counter() - start)
    result = results[0]
    steps = result.settings["steps"]
    print(f"compiled, {args.repeats} runs of {steps} steps ({result.model!r}), medians:")
    steps_time = statistics.median(r.seconds for r in results)
    trace_time = statistics.median(r.trace_seconds for r in results)
    print(f"  whole run (trace, steps, final accuracy) {statistics.median(totals):.2f} s")
    print(f"  training steps, trace included           {steps_time:.2f} s")
    print(f"  tracing                                  {trace_time * 1e3:.0f} ms")
    print(f"  test accuracy {result.test_accuracy:.1%}, training accuracy {result.train_accuracy:.1%}")

    if args.eager_steps:
        eager = train(data, steps=args.eager_steps, compile=False)
        per_step = eager.seconds / args.eager_steps
        compiled_per_step = (steps_time - trace_time) / steps
        print(f"eager: {per_step * 1e3:.0f} ms per step over {args.eager_steps} steps")
        print(f"  {steps} eager steps would take {per_step * steps:.0f} s")
        speedup = per_step / compiled_per_step
        print(f"  a compiled step takes {compiled_per_step * 1e3:.2f} ms: {speedup:.0f}x faster than eager")


if __name__ == "__main__":
    main()
