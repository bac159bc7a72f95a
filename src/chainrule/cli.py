"""The ``chainrule`` command: train a small network, or take the gradient of an expression.

::

    chainrule train moons                  # micrograd's demo: 100% training accuracy in 100 steps
    chainrule train digits --samples 300   # 10 classes, on a subset of the training images
    chainrule grad "b = a + a" a=3         # b = 6, and a: 2 (both uses of a add up)
    chainrule grad "d = a*b; e = a + b; f = d*e" a=2 b=-3 --draw graph.svg

Every error is reported as one line, ``chainrule: error: ...``, with a non-zero exit status:
2 for a bad command line or a bad expression, 1 for anything else (a file that cannot be
written, a missing optional library, ...). Ctrl-C stops quietly with status 130.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .expression import ExpressionError

__all__ = ["build_parser", "format_number", "main"]

PROG = "chainrule"
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's status for a bad command line; also used for a bad expression
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C (128 + SIGINT)
DEMO_EXTRA = 'pip install "chainrule[demo]"'


class UsageError(Exception):
    """A bad command line: reported in one line with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is raised (and reported by ``main`` in one line), not printed with usage."""

    def error(self, message):
        if message.startswith("unrecognized arguments: -"):
            message += (
                " (an EXPR that starts with '-' goes after '--', as in: chainrule grad -- '-a*b' a=1 b=2)"
            )
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------------
# Argument types: each turns a string into a value or says why it cannot.


def _number_type(convert: Callable[[str], float], accept: Callable[[float], bool], expected: str):
    """An argparse ``type``: ``convert`` the text, then check the number with ``accept``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number_type(int, lambda n: n >= 1, "a positive integer")
_positive_float = _number_type(float, lambda x: math.isfinite(x) and x > 0, "a positive number")
_seed = _number_type(int, lambda n: 0 <= n < 2**32, "an integer from 0 to 2**32 - 1")


def _layer_sizes(text: str) -> list[int]:
    """``"16,16"`` as ``[16, 16]``; an empty string means no hidden layer (a linear model)."""
    if not text.strip():
        return []
    try:
        return [_positive_int(part.strip()) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected layer sizes separated by commas, such as 16,16, got {text!r}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chainrule`` command, with its ``train`` and ``grad`` commands.

    >>> args = build_parser().parse_args(["train", "moons", "--hidden", "8,8"])
    >>> args.dataset, args.hidden, args.steps, args.eager
    ('moons', [8, 8], None, False)
    """
    from .training import DEFAULT_SEED, RECIPES

    parser = _Parser(
        prog=PROG, description="A scalar autograd engine: train a small network or take gradients."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a small network on a toy data set",
        description="Train an MLP on a toy data set, with a progress bar; write a plot and a checkpoint. "
        "moons and circles use micrograd's demo recipe (hinge loss, full batch, SGD); "
        "blobs and digits use cross-entropy on minibatches with Adam.",
    )
    train.add_argument("dataset", choices=list(RECIPES), help="the data set")
    train.add_argument(
        "--steps", type=_positive_int, metavar="N", help="optimizer steps (default 100; digits: 500)"
    )
    train.add_argument(
        "--lr", type=_positive_float, help="starting learning rate, decaying linearly to a tenth of it"
    )
    train.add_argument(
        "--seed", type=_seed, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    train.add_argument(
        "--hidden",
        type=_layer_sizes,
        metavar="SIZES",
        help="hidden layer sizes (default 16,16; digits: 32)",
    )
    train.add_argument("--activation", choices=["relu", "tanh", "sigmoid"], default="relu")
    train.add_argument(
        "--optimizer", choices=["sgd", "adam"], help="default: sgd for moons/circles, else adam"
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="examples per step (default: all for moons/circles, else 32)",
    )
    train.add_argument(
        "--samples", type=_positive_int, metavar="N", help="train on only the first N training examples"
    )
    train.add_argument(
        "--eager",
        action="store_true",
        help="run every step through the Value graph, without chainrule.compile (slower)",
    )
    train.add_argument("--out", type=Path, metavar="FOLDER", help="output folder (default runs/DATASET/)")
    train.set_defaults(run=run_train)

    grad = commands.add_parser(
        "grad",
        help="the value of an expression and its gradient with respect to every input",
        description="Evaluate EXPR and print its gradient with respect to each input, "
        "e.g. chainrule grad 'd = a*b; e = a + b; f = d*e' a=2 b=-3. "
        "EXPR has numbers, names, + - * / **, exp log tanh sigmoid relu, and ';'-separated "
        "assignments. Put -- before an EXPR that starts with '-'.",
    )
    grad.add_argument("expression", metavar="EXPR", help="the expression, e.g. 'b = a + a'")
    grad.add_argument("values", metavar="NAME=VALUE", nargs="*", help="a value for each input, e.g. a=3")
    grad.add_argument(
        "--draw", type=Path, metavar="FILE", help="also draw the graph (.svg, .png, .pdf or .dot)"
    )
    grad.set_defaults(run=run_grad)
    return parser


# ---------------------------------------------------------------------------------------------
# chainrule grad


def format_number(x: float) -> str:
    """A float as short as it can be written exactly: ``2`` rather than ``2.0``.

    >>> format_number(2.0), format_number(-0.0), format_number(0.1 + 0.2), format_number(1e100)
    ('2', '0', '0.30000000000000004', '1e+100')
    """
    if x == 0:
        return "0"  # also for -0.0, whose sign means nothing to a reader here
    if math.isfinite(x) and x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def run_grad(args: argparse.Namespace) -> int:
    from .expression import evaluate, parse, parse_values

    expression = parse(args.expression)
    result = evaluate(expression, parse_values(args.values))
    try:
        result.output.backward()
    except (ValueError, ArithmeticError) as error:  # e.g. a derivative too large for a float
        raise ExpressionError(f"cannot compute the gradient: {error}") from None
    if args.draw is not None:  # before printing, so that a failure is the only thing reported
        from .draw import save_graph

        drawn = save_graph(result.output, args.draw)
    value = format_number(result.output.data)
    print(f"{result.name} = {value}" if result.name else f"value: {value}")
    if result.inputs:
        print(f"gradient of {result.name or 'the value'} with respect to each input:")
        for name, leaf in result.inputs.items():
            print(f"  {name}: {format_number(leaf.grad)}")
    else:
        print("(no inputs, so no gradient)")
    if args.draw is not None:
        print(f"drew the graph in {drawn}")
    return 0


# ---------------------------------------------------------------------------------------------
# chainrule train


def _require_demo_libraries() -> None:
    """Fail before training, not after it, when a library for the bar, the data or the plot is missing."""
    for module, package in (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"), ("tqdm", "tqdm")):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"chainrule train needs {package}: {DEMO_EXTRA}", name=module)


def _prepare_output_folder(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it, before training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"cannot use output folder {str(folder)!r}: it is a file") from None
    except OSError as error:
        raise OSError(f"cannot create output folder {str(folder)!r}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into output folder {str(folder)!r}: permission denied")


class _ProgressBar:
    """The progress hook of ``train``: a tqdm bar with the loss and the accuracy of each step."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __call__(self, report) -> None:
        if self.bar is None:  # the number of steps is known from the first report
            from tqdm import tqdm

            self.bar = tqdm(total=report.steps, desc=self.description, unit="step", file=sys.stderr)
        self.bar.set_postfix_str(f"loss={report.loss:.4f} acc={report.accuracy:.0%}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _accuracy_line(which: str, fraction: float, count: int) -> str:
    return f"{which} accuracy: {fraction:.1%} ({round(fraction * count)} of {count})"


def run_train(args: argparse.Namespace) -> int:
    from .serialize import save
    from .training import train

    _require_demo_libraries()
    out = args.out if args.out is not None else Path("runs") / args.dataset
    _prepare_output_folder(out)

    progress = _ProgressBar(args.dataset)
    try:
        result = train(
            args.dataset,
            steps=args.steps,
            lr=args.lr,
            seed=args.seed,
            hidden=args.hidden,
            activation=args.activation,
            optimizer=args.optimizer,
            batch_size=args.batch_size,
            samples=args.samples,
            progress=progress,
            compile=False if args.eager else None,
        )
    finally:
        progress.close()

    settings = result.settings
    print(
        f"{args.dataset}: {result.model!r}, {settings['optimizer']} from lr {settings['lr']:g}, "
        f"{settings['steps']} steps in {result.seconds:.1f} s"
        + (f" (compiled; tracing took {result.trace_seconds:.2f} s)" if settings["compile"] else " (eager)")
    )
    print(_accuracy_line("train", result.train_accuracy, len(result.data.X_train)))
    if result.test_accuracy is not None:
        print(_accuracy_line("test", result.test_accuracy, len(result.data.X_test)))

    from .plots import plot_training

    picture = plot_training(result, out / f"{args.dataset}.png")
    checkpoint = out / "model.json"
    save(result.model, checkpoint)
    print(f"wrote {picture} and {checkpoint}")
    return 0


# ---------------------------------------------------------------------------------------------
# main


def _describe(error: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {error.filename!s}"
    else:
        message = str(error) or type(error).__name__
        expected = (OSError, ValueError, ImportError, RuntimeError, ArithmeticError, UsageError)
        if not isinstance(error, expected):  # a bug rather than a user's mistake: name its type
            message = f"{type(error).__name__}: {message}"
    return " ".join(message.split())  # one line, whatever the message holds


def _fail(error: BaseException, status: int) -> int:
    print(f"{PROG}: error: {_describe(error)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chainrule`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    >>> main(["grad", "b = a + a", "a=3"])
    b = 6
    gradient of b with respect to each input:
      a: 2
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"choose a command, train or grad (see {PROG} --help)")
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (UsageError, ExpressionError) as error:
        return _fail(error, EXIT_USAGE)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly, and keep Python
        # from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as error:
        return _fail(error, EXIT_ERROR)
