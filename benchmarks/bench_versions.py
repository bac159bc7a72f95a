"""The eager demo step of two versions of chainrule, timed alternately: did a change slow it down?

Each version is checked out from git into a temporary worktree. The two then take turns: a
fresh interpreter imports one version, builds micrograd's demo model and times ``--steps``
eager steps (the loss, zero_grad, backward, SGD update of benchmarks/bench_step.py), and we
repeat this ``--rounds`` times per version, alternating, so a noisy neighbour slows both alike.
We print each version's median step time and their ratio.

Run:  python benchmarks/bench_versions.py BEFORE [AFTER] [--rounds 5] [--steps 5]
      (AFTER defaults to the working tree; BEFORE and AFTER are any git revisions)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter with one version's src/ first on sys.path.
TIMER = """
import json, random, sys, time
from sklearn.datasets import make_moons
from chainrule import Value
from chainrule.nn import MLP

X, y = make_moons(n_samples=100, noise=0.1, random_state=1337)
X, y = X.tolist(), (y * 2 - 1).tolist()
random.seed(1337)
model = MLP(2, [16, 16, 1])
times = []
for k in range(int(sys.argv[1])):
    start = time.perf_counter()
    scores = [model([Value(a), Value(b)]) for a, b in X]
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
    model.zero_grad()
    total.backward()
    for p in model.parameters():
        p.data -= (1.0 - 0.9 * k / 100) * p.grad
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def time_steps(src: Path, steps: int) -> list[float]:
    env_path = f"import sys; sys.path.insert(0, {str(src)!r})\n"
    out = subprocess.run(
        [sys.executable, "-c", env_path + TIMER, str(steps)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a git revision, e.g. a commit before the change")
    parser.add_argument("after", nargs="?", help="a git revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=5, help="runs per version, alternating")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        for name, revision in (("before", args.before), ("after", args.after)):
            if revision is None:
                sources[name] = REPO / "src"
                continue
            tree = Path(tmp) / name
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), revision],
                           check=True)  # fmt: skip
            sources[name] = tree / "src"
        try:
            times = {name: [] for name in sources}
            for _ in range(args.rounds):
                for name, src in sources.items():
                    times[name] += time_steps(src, args.steps)
        finally:
            for name in sources:
                tree = Path(tmp) / name
                if tree.exists():
                    subprocess.run(
                        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
                    )

    median = {name: statistics.median(t) for name, t in times.items()}
    labels = {"before": args.before, "after": args.after or "working tree"}
    print(f"median eager step over {args.rounds} alternating runs of {args.steps} steps")
    for name, t in median.items():
        print(f"  {name:7s} {labels[name]:14s} {t * 1e3:8.2f} ms")
    print(f"  after / before time ratio: {median['after'] / median['before']:.3f}")


if __name__ == "__main__":
    main()
