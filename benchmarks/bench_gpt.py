"""chainrule eager on the code people run on scalar engines, timed against the engines they come from.

Three workloads, each run interleaved in one process (the engines take turns, so a noisy
neighbour slows all of them alike) and summarised by the median:

1. The GPT-style training step of benchmarks/gpt_style.py (one layer, 4 heads, width 16,
   context 16, one name per step, Adam) on ``MinimalValue`` (the pure-Python GPT scripts'
   engine design: slotted nodes that store their local gradients), on ``chainrule.Value``
   (eager), on chainrule's own ``chainrule.gpt.GPT`` trained the way ``chainrule train names``
   does it (the recipe's loss through ``chainrule.compile``, backward, the recipe's Adam), and
   on PyTorch eager (benchmarks/gpt_torch.py: the same model on float64 tensors, one thread).
   All start from the same weights and see the same names; their losses must agree to 1e-9 at
   every step or the benchmark stops. The compiled step is timed after its traces (one per
   name length) are built; the tracing time of each length is reported on its own.
2. micrograd's demo step (moons, MLP 2-16-16-1, max-margin loss; benchmarks/bench_step.py) on
   micrograd 0.1.0 and on chainrule eager.
3. A chain of ``--chain`` multiplications ``y = y * c`` by one Value ``c``: the time to build it
   and the time to backpropagate through it, on chainrule and on micrograd.
4. The whole ``chainrule train names`` run (1,000 steps, defaults) in a subprocess: its wall
   time and the "mean loss over the last 100 steps" it prints. With ``--names-loss-steps N``
   the minimal engine also trains N steps on the same names, in the same order, from the same
   weights and with the same Adam and learning-rate schedule, and its last-100 mean loss is
   printed beside chainrule's (N = 1000 is the same run; it takes minutes, so 0 skips it).

The last column of the table is ``their time / chainrule's time``: above 1 means chainrule is
faster. The targets are those of the project's issue on eager speed.

Run:  python benchmarks/bench_gpt.py [--steps 20] [--moons-steps 20] [--chain 1000000] [--repeats 3]
                                      [--names-steps 1000] [--names-loss-steps 0]
      python benchmarks/bench_gpt.py --quick      # a smoke run of well under a minute
Peers: micrograd 0.1.0 (``pip install micrograd==0.1.0``) and scikit-learn for the moons data,
torch for the PyTorch step, numpy for the compiled step and the names package for the
``train names`` run; each is skipped with a note when what it needs is missing.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpt_style and bench_step live here

import gpt_style as gpt  # noqa: E402

import chainrule  # noqa: E402
from chainrule import training  # noqa: E402
from chainrule.datasets import TextDataset  # noqa: E402

LOSS_TOLERANCE = 1e-9


def timed(fn, *args):
    """(seconds, result) of one call, after a garbage collection so earlier garbage is not billed."""
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------------------------------
# 1. The GPT step


def scalar_runner(Value, chars: list[str], seed: int):
    """gpt_style's training step on the engine ``Value``: a function ``step(tokens, lr) -> loss``."""
    params = gpt.init_params(Value, len(chars) + 1, seed)
    adam = gpt.adam_state(params)
    return lambda tokens, lr: gpt.step(params, tokens, adam, lr)


class CompiledGPT:
    """chainrule's ``GPT`` trained step by step as ``chainrule train names`` trains it.

    The pieces are the names recipe's own (its model builder, its loss function, its Adam with
    a linear decay), and a step is the training loop's: the loss through ``chainrule.compile``
    (a replay once the name's length has been traced), ``zero_grad``, ``backward``, Adam's
    update. Only the weights are set by hand, to gpt_style's, so the losses can be compared
    with the other engines'. The learning rate comes from the recipe's schedule over ``steps``
    steps, which is gpt_style's ``lr_at`` (the losses check it).
    """

    def __init__(self, chars: list[str], seed: int, steps: int):
        recipe = training.RECIPES["names"]
        data = TextDataset("names", list(gpt.NAMES), "".join(chars))
        settings = recipe.check_options(data, {})
        self.model = recipe.build_model(data, settings)
        weights = gpt.flat_params(gpt.init_params(float, len(chars) + 1, seed))
        for p, w in zip(self.model.parameters(), weights, strict=True):
            p.data = w
        lr = recipe.lrs["adam"]
        self.optimizer = training._make_optimizer(recipe, "adam", self.model.parameters(), lr, steps)
        self.loss_fn = chainrule.compile(recipe.make_loss_fn(self.model, data, settings))
        self.trace_seconds = {}  # tokens per name -> seconds spent tracing that length

    def trace(self, tokens: list[int]) -> None:
        """Build the trace for names of this many tokens (a forward pass; nothing is updated)."""
        if len(tokens) not in self.trace_seconds:
            before = self.loss_fn.trace_seconds
            self.loss_fn(tokens)
            self.trace_seconds[len(tokens)] = self.loss_fn.trace_seconds - before

    def step(self, tokens: list[int], lr: float) -> float:
        loss, _ = self.loss_fn(tokens)  # ``lr`` is the schedule's own, so it is not needed here
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.data


def torch_runner(chars: list[str], seed: int):
    """PyTorch eager's step on the same model and weights (benchmarks/gpt_torch.py), or None."""
    try:
        import gpt_torch
        import torch
    except ImportError as missing:
        print(f"skipping the PyTorch GPT step: {missing}")
        return None
    torch.set_num_threads(1)  # the scalar engines use one core too
    return gpt_torch.TorchGPT(gpt.init_params(float, len(chars) + 1, seed)).step


def bench_gpt(steps: int, seed: int = 42) -> dict:
    chars = gpt.vocabulary(gpt.NAMES)
    runners = {
        "minimal": scalar_runner(gpt.MinimalValue, chars, seed),
        "chainrule": scalar_runner(chainrule.Value, chars, seed),
    }
    names = [gpt.encode(gpt.NAMES[k % len(gpt.NAMES)], chars) for k in range(steps)]
    compiled = None
    try:
        compiled = CompiledGPT(chars, seed, steps)
    except ImportError as missing:  # chainrule.compile needs numpy
        print(f"skipping the compiled GPT step: {missing}")
    if compiled is not None:
        for tokens in names:  # every length is traced before the timing starts
            compiled.trace(tokens)
        runners["compiled"] = compiled.step
    torch_step = torch_runner(chars, seed)
    if torch_step is not None:
        runners["torch"] = torch_step

    engines = list(runners)
    times = {name: [] for name in engines}
    worst = 0.0
    for k, tokens in enumerate(names):
        lr = gpt.lr_at(k, steps)
        order = engines[k % len(engines) :] + engines[: k % len(engines)]  # who goes first rotates
        losses = {}
        for name in order:
            seconds, losses[name] = timed(runners[name], tokens, lr)
            times[name].append(seconds)
        for name in engines:
            gap = abs(losses[name] - losses["minimal"])
            worst = max(worst, gap)
            if gap > LOSS_TOLERANCE * max(1.0, abs(losses["minimal"])):
                raise SystemExit(f"GPT step {k}: the losses differ: {losses}")
    return {
        **{name: statistics.median(t) for name, t in times.items()},
        "trace_seconds": compiled.trace_seconds if compiled is not None else {},
        "worst_gap": worst,
        "final_loss": losses["chainrule"],
        "engines": engines,
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
# 4. The whole ``chainrule train names`` run, and the minimal engine on the same run


def bench_train_names(steps: int) -> dict | None:
    """Wall time and printed numbers of ``python -m chainrule train names`` in a subprocess."""
    try:
        import names  # noqa: F401  (the data)
        import numpy  # noqa: F401  (compile, without which the run is eager and takes minutes)
    except ImportError as missing:
        print(f"skipping the train names run: {missing}")
        return None
    # The subprocess imports the same chainrule as this process (a worktree's, say).
    src = str(Path(chainrule.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "chainrule", "train", "names", "--out", out, "--steps", str(steps)]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout}{run.stderr}")

    def number(pattern: str) -> float:
        found = re.search(pattern, run.stdout)
        if found is None:
            raise SystemExit(f"train names printed no line matching {pattern!r}:\n{run.stdout}")
        return float(found.group(1))

    return {
        "wall": wall,
        "steps_seconds": number(r"steps in ([0-9.]+) s"),
        "trace_seconds": number(r"tracing took ([0-9.]+) s"),
        "window": int(number(r"mean loss over the last ([0-9]+) steps")),
        "mean_loss": number(r"mean loss over the last [0-9]+ steps: ([0-9.]+)"),
    }


def minimal_names_loss(steps: int) -> dict:
    """The minimal engine trained as ``train names`` trains: its mean loss over the last 100 steps.

    Same data (the names package's names, shuffled by the recipe's seed), same order (one name
    per step, from the first), same initial weights (the seed's draws, in the GPT's order),
    same Adam (the recipe's betas) and learning rate (0.01 falling linearly to 0 over ``steps``).
    """
    recipe, seed = training.RECIPES["names"], training.DEFAULT_SEED
    same = (
        recipe.adam_betas == (gpt.BETA1, gpt.BETA2)
        and recipe.lrs["adam"] == gpt.lr_at(0, steps)
        and recipe.decay_to == 0.0
        and (recipe.n_layer, recipe.n_head, recipe.n_embd, recipe.block_size)
        == (gpt.N_LAYER, gpt.N_HEAD, gpt.N_EMBD, gpt.BLOCK_SIZE)
    )
    if not same:
        raise SystemExit("the names recipe's settings are no longer gpt_style's: update this benchmark")
    data = recipe.load("names", seed)
    params = gpt.init_params(gpt.MinimalValue, len(data.chars) + 1, seed)
    # train() seeds the global random module and builds the GPT from it: the same numbers?
    random.seed(seed)
    built = recipe.build_model(data, recipe.check_options(data, {}))
    if [p.data for p in built.parameters()] != [p.data for p in gpt.flat_params(params)]:
        raise SystemExit("gpt_style's weights are not the names recipe's: update this benchmark")
    adam = gpt.adam_state(params)
    losses = []
    start = time.perf_counter()
    for k in range(steps):
        tokens = gpt.encode(data.documents[k % len(data.documents)], data.chars)
        losses.append(gpt.step(params, tokens, adam, gpt.lr_at(k, steps)))
        if (k + 1) % 100 == 0:
            print(f"minimal engine on names: step {k + 1}/{steps}, loss {losses[-1]:.4f}", file=sys.stderr)
    window = min(100, steps)
    return {
        "seconds": time.perf_counter() - start,
        "window": window,
        "mean_loss": sum(losses[-window:]) / window,
    }


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="GPT steps per engine (default 20)")
    parser.add_argument("--moons-steps", type=int, default=20, help="moons steps per engine (default 20)")
    parser.add_argument("--chain", type=int, default=1_000_000, help="nodes in the chain (default 1e6)")
    parser.add_argument("--repeats", type=int, default=3, help="chain builds per engine (default 3)")
    parser.add_argument(
        "--names-steps", type=int, default=1000, help="steps of the train names run (default 1000)"
    )
    parser.add_argument(
        "--names-loss-steps",
        type=int,
        default=0,
        help="train the minimal engine this many steps on train names' run (default 0: skip; 1000 is "
        "the same run, and takes minutes)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 GPT steps, 2 moons steps, one 100k chain, 50 names steps"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.moons_steps, args.chain, args.repeats, args.names_steps = 2, 2, 100_000, 1, 50
    for name in ("steps", "moons_steps", "chain", "repeats", "names_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.names_loss_steps < 0:
        parser.error("--names-loss-steps must be at least 0")

    rows = []  # (workload, their engine, their time, chainrule's time, target)
    g = bench_gpt(args.steps)
    median = f"(median of {args.steps})"
    rows.append((f"GPT step, eager {median}", "minimal", g["minimal"], g["chainrule"], ">= 1.5x (aim 3x)"))
    if "compiled" in g:
        rows.append((f"GPT step, compiled {median}", "minimal", g["minimal"], g["compiled"], ">= 50x"))
        if "torch" in g:
            rows.append((f"GPT step, compiled {median}", "torch", g["torch"], g["compiled"], "(reported)"))
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
    names = bench_train_names(args.names_steps)
    if names:
        target = "< 60 s" if args.names_steps == 1000 else "(< 60 s for 1,000 steps)"
        rows.append(
            (f"train names, {args.names_steps:,} steps: wall", "-", float("nan"), names["wall"], target)
        )
    minimal = minimal_names_loss(args.names_loss_steps) if args.names_loss_steps else None

    print(f"\nchainrule vs the engines its users come from (Python {sys.version.split()[0]})")
    header = (
        f"{'workload':40s} {'peer':>9s} {'peer time':>11s} {'chainrule':>11s} {'peer/chainrule':>15s}  target"
    )
    print(header)
    print("-" * len(header))
    for workload, peer, theirs, ours, target in rows:
        ratio = "-" if theirs != theirs else f"{theirs / ours:.2f}x"  # nan: no peer
        times = f"{_seconds(theirs):>11s} {_seconds(ours):>11s} {ratio:>15s}"
        print(f"{workload:40s} {peer:>9s} {times}  {target}")

    engines = ", ".join(g["engines"])
    gap, last = g["worst_gap"], g["final_loss"]
    print(f"\nGPT losses of {engines} agree at every step (largest gap {gap:.1e}; last loss {last:.4f})")
    if g["trace_seconds"]:
        lengths = ", ".join(f"{n - 2}: {seconds:.2f} s" for n, seconds in sorted(g["trace_seconds"].items()))
        print(f"compiled GPT, tracing time per name length (letters: seconds): {lengths}")
    if names:
        print(
            f"train names ({args.names_steps:,} steps, compiled, in a subprocess): "
            f"{names['wall']:.1f} s wall, "
            f"of which {names['steps_seconds']:.1f} s of steps ({names['trace_seconds']:.1f} s tracing); "
            f"mean loss over the last {names['window']} steps: {names['mean_loss']:.4f}"
        )
    if minimal:
        same = "the same run" if args.names_loss_steps == args.names_steps else "not the same run length"
        print(
            f"minimal engine, {args.names_loss_steps:,} steps of that run ({same}): "
            f"mean loss over the last {minimal['window']} steps: {minimal['mean_loss']:.4f} "
            f"({minimal['seconds']:.0f} s)"
        )
    else:
        print("minimal engine on the train names run: not run (--names-loss-steps 0)")
    return rows


def _seconds(t: float) -> str:
    return "-" if t != t else f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


if __name__ == "__main__":
    main()
