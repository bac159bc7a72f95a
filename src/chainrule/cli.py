"""The ``chainrule`` command: train a small network, sample names, or take a gradient.

::

    chainrule train moons                  # micrograd's demo: 100% training accuracy in 100 steps
    chainrule train digits --samples 300   # 10 classes, on a subset of the training images
    chainrule train names                  # a character-level GPT on first names
    chainrule sample runs/names/model.json --n 20 --temperature 0.5
    chainrule grad "b = a + a" a=3         # b = 6, and a: 2 (both uses of a add up)
    chainrule grad "d = a*b; e = a + b; f = d*e" a=2 b=-3 --draw graph.svg
    chainrule explore "b = a + a" a=3 --open   # a page that steps through the backward pass
    chainrule info                         # the version, and which C parts and extras are here

Every error is reported as one line, ``chainrule: error: ...``, with a non-zero exit status:
2 for a bad command line or a bad expression, 1 for anything else (a file that cannot be
written, a missing optional library, ...). Ctrl-C stops quietly with status 130.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from . import __version__
from .expression import ExpressionError

if TYPE_CHECKING:  # (imported where they are used, so that `chainrule --help` stays fast)
    from .datasets import Dataset
    from .engine import Value
    from .training import StepReport

__all__ = ["build_parser", "describe_number", "format_number", "main"]

PROG = "chainrule"
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's status for a bad command line; also used for a bad expression
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C (128 + SIGINT)
DEMO_EXTRA = 'pip install "chainrule[demo]"'


class UsageError(Exception):
    """A bad command line: reported in one line with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is raised (and reported by ``main`` in one line), not printed with usage."""

    commands: dict[str, argparse.ArgumentParser]  # each command's parser by name (build_parser sets it)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class _OutputClosed(Exception):
    """Standard output was closed by its reader (e.g. ``chainrule grad ... | head -0``)."""


def _say(text: str) -> None:
    """Print a line to stdout at once, so that a closed stdout shows here and nowhere else."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise _OutputClosed from None


def _unrecognized(extras: list[str], command: argparse.ArgumentParser) -> str:
    """The message for arguments that no option took, with the hint that fits ``command``."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    # argparse keeps a command's options in _actions; it has no public list of them.
    known = [option for action in command._actions for option in action.option_strings]
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.partition("=")[0], known, n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
                break
    if command.prog in (f"{PROG} grad", f"{PROG} explore") and any(
        e.startswith("-") and not e.startswith("--") for e in extras
    ):
        message += f" (an EXPR that starts with '-' goes after '--', as in: {command.prog} -- '-a*b' a=1 b=2)"
    return f"{message} (see {command.prog} --help)"


# ---------------------------------------------------------------------------------------------
# Argument types: each turns a string into a value or says why it cannot.


_Number = TypeVar("_Number", int, float)


def _number_type(
    convert: Callable[[str], _Number], accept: Callable[[_Number], bool], expected: str
) -> Callable[[str], _Number]:
    """An argparse ``type``: ``convert`` the text, then check the number with ``accept``."""

    def parse(text: str) -> _Number:
        value: _Number | None
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
    """``"16,16"`` as ``[16, 16]``."""
    try:
        return [_positive_int(part.strip()) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected layer sizes separated by commas, such as 16,16, got {text!r}"
        ) from None


def _path_type(what: str) -> Callable[[str], Path]:
    """An argparse ``type`` for a path; an empty one would quietly mean the current folder."""

    def parse(text: str) -> Path:
        if not text:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return Path(text)

    return parse


_folder = _path_type("a folder name")
_file = _path_type("a file name")


# ---------------------------------------------------------------------------------------------
# The parser


def build_parser() -> _Parser:
    """The argument parser of the ``chainrule`` command and its commands (``parser.commands``).

    >>> args = build_parser().parse_args(["train", "moons", "--hidden", "8,8"])
    >>> args.dataset, args.hidden, args.steps, args.eager
    ('moons', [8, 8], None, False)
    """
    from .training import DEFAULT_SEED, OPTIMIZERS, RECIPES

    parser = _Parser(
        prog=PROG, description="A scalar autograd engine: train a small network or take gradients."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a small network on a toy data set",
        description="Train a model on a toy data set, with a progress bar; write a plot and a checkpoint. "
        "moons and circles use micrograd's demo recipe (an MLP, hinge loss, full batch, SGD); "
        "blobs and digits use an MLP with cross-entropy on minibatches with Adam; "
        "names trains a character-level GPT (1 layer, 4 heads, width 16, context 16) on one name "
        "per step with Adam, and prints names sampled from it.",
    )
    train.add_argument("dataset", choices=list(RECIPES), help="the data set")
    train.add_argument(
        "--steps",
        type=_positive_int,
        metavar="N",
        help="optimizer steps (default 100; digits: 500; names: 1000)",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        help="starting learning rate, decaying linearly to a tenth of it (names: to 0) "
        f"(default, by data set: {_default_lrs(RECIPES)})",
    )
    train.add_argument(
        "--seed", type=_seed, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    train.add_argument(
        "--hidden",
        type=_layer_sizes,
        metavar="SIZES",
        help="hidden layer sizes of the MLP (default 16,16; digits: 32)",
    )
    train.add_argument(
        "--activation", choices=["relu", "tanh", "sigmoid"], help="of the MLP's hidden layers (default relu)"
    )
    train.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="default: sgd for moons/circles, else adam (names: adam only)"
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="examples per step, for the MLPs (default: all for moons/circles, else 32)",
    )
    train.add_argument(
        "--samples", type=_positive_int, metavar="N", help="train on only the first N training examples"
    )
    train.add_argument(
        "--eager",
        action="store_true",
        help="run every step through the Value graph, without chainrule.compile (slower)",
    )
    train.add_argument(
        "--backend",
        choices=["auto", "numpy", "c", "jax"],
        help="chainrule.compile's backend for the steps (default auto); jax: XLA (needs jax installed)",
    )
    train.add_argument(
        "--devices", type=_positive_int, metavar="N", help="--backend jax: split each batch over N devices"
    )
    train.add_argument("--out", type=_folder, metavar="FOLDER", help="output folder (default runs/DATASET/)")
    train.set_defaults(run=run_train)

    grad = commands.add_parser(
        "grad",
        help="the value of an expression and its gradient with respect to every input",
        description="Evaluate EXPR and print its gradient with respect to each input, "
        "e.g. chainrule grad 'd = a*b; e = a + b; f = d*e' a=2 b=-3. "
        "EXPR has numbers, names, + - * / **, exp log tanh sigmoid relu, and ';'-separated "
        "assignments. Put -- before an EXPR that starts with '-'.",
    )
    _add_expression_arguments(grad)
    grad.add_argument(
        "--draw", type=_file, metavar="FILE", help="also draw the graph (.svg, .png, .pdf or .dot)"
    )
    grad.set_defaults(run=run_grad)

    sample = commands.add_parser(
        "sample",
        help="names made up by a GPT trained with chainrule train names",
        description="Load a GPT checkpoint (as written by chainrule train names) and print the names "
        "it generates, one per line, letter by letter.",
    )
    sample.add_argument("checkpoint", type=_file, metavar="CHECKPOINT", help="e.g. runs/names/model.json")
    sample.add_argument(
        "--n", type=_positive_int, default=20, metavar="N", help="how many names (default 20)"
    )
    sample.add_argument(
        "--temperature",
        type=_positive_float,
        default=0.5,
        help="below 1: likelier names, above 1: more surprising ones (default 0.5)",
    )
    sample.add_argument(
        "--seed", type=_seed, help="random seed, for the same names every time (default: none)"
    )
    sample.set_defaults(run=run_sample)
    explore = _add_explore_command(commands)
    info = commands.add_parser(
        "info",
        help="the version, the Python, and which of chainrule's C parts and optional libraries are here",
        description="Print chainrule's version, the Python and the platform; which C parts are active "
        "(the engine's loops, the table program, the layout) and why not where one is not; "
        "chainrule.compile's default backend, the C compiler and the cache folder; and the optional "
        "libraries found, with their versions. Attach it to a bug report.",
    )
    info.add_argument("--json", action="store_true", help="print it as JSON, for a program to read")
    info.set_defaults(run=run_info)
    parser.commands = {
        "train": train,
        "grad": grad,
        "sample": sample,
        "explore": explore,
        "info": info,
    }  # for the hint after an unknown argument, and the list of commands
    return parser


def _default_lrs(recipes: dict) -> str:
    """``moons, circles: sgd 1, adam 0.05; blobs, digits: ...``: data sets with the same rates together."""
    groups: dict[str, list[str]] = {}
    for name, recipe in recipes.items():
        rates = ", ".join(f"{optimizer} {lr:g}" for optimizer, lr in recipe.lrs.items())
        groups.setdefault(rates, []).append(name)
    return "; ".join(f"{', '.join(names)}: {rates}" for rates, names in groups.items())


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


def describe_number(x: float) -> str:
    """``format_number(x)``, saying in words what nan and inf mean, so nobody takes them for answers.

    >>> describe_number(0.5), describe_number(float("-inf"))
    ('0.5', '-inf (infinite: too large for a float)')
    """
    if math.isnan(x):
        return "nan (not a number: the result is undefined, as inf - inf is)"
    if math.isinf(x):
        return f"{format_number(x)} (infinite: too large for a float)"
    return format_number(x)


def run_grad(args: argparse.Namespace) -> int:
    from .expression import evaluate, parse, parse_values

    expression = parse(args.expression)
    result = evaluate(expression, parse_values(args.values))
    try:
        result.output.backward()
    except (ValueError, ArithmeticError) as error:  # e.g. a derivative too large for a float
        raise ExpressionError(f"cannot compute the gradient: {error}") from None
    value = describe_number(result.output.data)
    _say(f"{result.name} = {value}" if result.name else f"value: {value}")
    if result.inputs:
        _say(f"gradient of {result.name or 'the value'} with respect to each input:")
        for name, leaf in result.inputs.items():
            _say(f"  {name}: {describe_number(leaf.grad)}")
    else:
        _say("(no inputs, so no gradient)")
    if args.draw is not None:  # after the numbers, which a failed drawing does not take back
        _draw(result.output, args.draw)
        _say(f"drew the graph in {args.draw}")
    return 0


class DrawingError(Exception):
    """The graph could not be drawn into the file the user named; the message says why."""


def _draw(root: Value, path: Path) -> None:
    """``save_graph`` for the command line: any failure becomes one ``DrawingError`` line about ``path``."""
    from ._files import NotRegularFileError
    from .draw import GraphTooLargeError, GraphvizNotFoundError, GraphvizTimeoutError, save_graph

    try:
        save_graph(root, path)
        return
    except GraphTooLargeError as error:
        reason = (
            f"it has {error.size} values, more than {error.max_nodes}, "
            "which Graphviz would take minutes to lay out; draw a smaller expression"
        )
    except NotRegularFileError:  # a FIFO or a device at the path (a ValueError, so before the next)
        reason = "it is not a regular file"
    except ValueError:  # the suffix names no format Graphviz writes
        what = f"Graphviz cannot write {path.suffix!r} files" if path.suffix else "no suffix tells the format"
        reason = f"{what}; name it e.g. graph.svg, graph.png, graph.pdf or graph.dot"
    except GraphvizNotFoundError:
        reason = (
            "Graphviz's `dot` program was not found on PATH; install Graphviz "
            "(sudo apt-get install graphviz, brew install graphviz, "
            "or conda install -c conda-forge graphviz), "
            "or write the graph's DOT text, which needs no Graphviz, with --draw graph.dot"
        )
    except GraphvizTimeoutError as error:
        reason = (
            f"Graphviz's dot was still laying it out after {error.seconds:g} s and was stopped; "
            "draw a smaller expression, or write the graph's DOT text with --draw graph.dot"
        )
    except subprocess.CalledProcessError as error:  # dot ran and failed; its first line says why
        stderr = error.stderr or b""
        if isinstance(stderr, bytes):
            stderr = stderr.decode("utf-8", errors="replace")
        lines = stderr.strip().splitlines()
        reason = f"Graphviz's dot failed (exit status {error.returncode})"
        if lines:
            reason += f": {lines[0][:200]}"
    except ImportError as error:  # the graphviz Python package
        reason = str(error)
    except OSError as error:
        reason = _os_reason(error)
    raise DrawingError(f"cannot draw the graph in {path}: {reason}")


# ---------------------------------------------------------------------------------------------
# chainrule explore


def _add_expression_arguments(command: argparse.ArgumentParser) -> None:
    """EXPR and its NAME=VALUE inputs, as grad and explore take them."""
    command.add_argument("expression", metavar="EXPR", help="the expression, e.g. 'b = a + a'")
    command.add_argument("values", metavar="NAME=VALUE", nargs="*", help="a value for each input, e.g. a=3")


def _add_explore_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    explore = commands.add_parser(
        "explore",
        help="write an HTML page that steps through the backward pass of an expression",
        description="Write one self-contained HTML page (no network needed) that draws the graph of "
        "EXPR and steps through its backward pass, with the lecture's overwrite bug next to the "
        "correct += rule, e.g. chainrule explore 'd = a*b; e = a + b; f = d*e' a=-2 b=3 --open. "
        "EXPR is written as for chainrule grad.",
    )
    _add_expression_arguments(explore)
    explore.add_argument(
        "--out",
        type=_file,
        default=Path("explore.html"),
        metavar="FILE",
        help="the page (default explore.html)",
    )
    explore.add_argument("--open", action="store_true", help="open the page in a web browser")
    explore.add_argument(
        "--expand",
        action="store_true",
        help="draw -, / and sums as micrograd builds them, chains of +, *, *-1 and **-1, "
        "with every intermediate value",
    )
    explore.set_defaults(run=run_explore)
    return explore


def run_explore(args: argparse.Namespace) -> int:
    import webbrowser

    from .draw import GraphTooLargeError
    from .explorer import explore
    from .expression import evaluate, parse, parse_values

    expression = parse(args.expression)
    result = evaluate(expression, parse_values(args.values))
    title = " ".join([args.expression, *args.values])
    try:
        page = explore(result.output, title=title, expand=args.expand)
    except GraphTooLargeError as error:
        raise ExpressionError(
            f"cannot explore the graph: it has {error.size} values, more than {error.max_nodes}, "
            "too many to follow step by step; explore a smaller expression"
        ) from None
    except (ValueError, ArithmeticError) as error:  # a backward rule outside its domain
        raise ExpressionError(f"cannot compute the gradient: {error}") from None
    page.save(args.out)
    value = describe_number(result.output.data)
    _say(f"{result.name} = {value}" if result.name else f"value: {value}")
    _say(f"wrote {args.out}: {page.size} values, laid out by {page.layout}; open it in a web browser")
    if args.open and not webbrowser.open(args.out.resolve().as_uri()):
        _say(f"could not start a web browser; open {args.out} yourself")
    return 0


# ---------------------------------------------------------------------------------------------
# chainrule train


def _require_demo_libraries(dataset: str) -> None:
    """Fail before training, not after it, when a library for the data, the bar or the plot is missing.

    Each is imported (it will be, soon), since a library can be present but broken, or lack
    numpy, which scikit-learn and matplotlib need.
    """
    libraries = [
        ("numpy", "numpy"),
        ("sklearn", "scikit-learn"),
        ("matplotlib", "matplotlib"),
        ("tqdm", "tqdm"),
    ]
    if dataset == "names":
        libraries.append(("names", "names"))
    for module, package in libraries:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(f"chainrule train needs {package}: {DEMO_EXTRA}", name=module) from None


def _os_reason(error: OSError) -> str:
    """What went wrong, in the system's words: ``read-only file system``, ``permission denied``..."""
    reason = error.strerror or str(error)
    return reason[:1].lower() + reason[1:]


def _prepare_output_folder(folder: Path) -> list[Path]:
    """Create ``folder`` if needed and check that files can be written in it, before training.

    Returns the folders this made, outermost first, so that a run that ends without results
    (Ctrl-C, an error) can remove them again (``_remove_if_empty``).
    """
    missing = [f for f in [folder, *folder.parents] if not f.exists() and not f.is_symlink()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"cannot use output folder {str(folder)!r}: it is a file") from None
    except OSError as error:
        raise OSError(f"cannot create output folder {str(folder)!r}: {_os_reason(error)}") from None
    created = [f for f in reversed(missing) if f.is_dir()]
    # Writing a file is the only sure test: os.access says "no" for a read-only file system and
    # for a missing permission alike, and "yes" to root for any folder.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        _remove_if_empty(created)
        raise OSError(f"cannot write into output folder {str(folder)!r}: {_os_reason(error)}") from None
    return created


def _note_an_earlier_run(folder: Path, dataset: str) -> None:
    """Say, in one line on stderr before training, that this run's files will replace an earlier
    run's. Not a question: the command runs unattended too (CI), and the old files stay until
    the run has finished (each is replaced in one step), so a run stopped early loses nothing."""
    earlier = [name for name in (f"{dataset}.png", "model.json") if (folder / name).exists()]
    if earlier:
        print(
            f"{PROG}: note: {folder} holds an earlier run ({', '.join(earlier)}); "
            "this run replaces it when it finishes",
            file=sys.stderr,
            flush=True,
        )


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the folders a run made (innermost first), unless something was written into them."""
    for folder in reversed(created):
        try:
            folder.rmdir()  # refuses a folder that is not empty, which is what we want
        except OSError:
            return  # not empty (or not ours any more): its parents are not empty either


class _ProgressBar:
    """The progress hook of ``train``: a tqdm bar with the loss and the accuracy of each step."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None  # a tqdm bar, made at the first report

    def __call__(self, report: StepReport) -> None:
        if self.bar is None:  # the number of steps is known from the first report
            from tqdm import tqdm

            self.bar = tqdm(total=report.steps, desc=self.description, unit="step", file=sys.stderr)
        accuracy = "" if report.accuracy is None else f" acc={report.accuracy:.0%}"
        self.bar.set_postfix_str(f"loss={report.loss:.4f}{accuracy}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _accuracy_line(which: str, fraction: float, count: int) -> str:
    return f"{which} accuracy: {fraction:.1%} ({round(fraction * count)} of {count})"


# The MLP's options, which the names recipe does not take.
_MLP_FLAGS = {"hidden": "--hidden", "activation": "--activation", "batch_size": "--batch-size"}


def _check_options_fit_the_recipe(args: argparse.Namespace) -> None:
    from .training import RECIPES

    if args.eager and (args.backend or args.devices):
        raise UsageError("--backend and --devices choose how compiled steps run; --eager runs none")
    if args.devices and args.backend != "jax":
        raise UsageError("--devices N is for --backend jax")

    recipe = RECIPES[args.dataset]
    foreign = [
        flag
        for name, flag in _MLP_FLAGS.items()
        if getattr(args, name) is not None and name not in recipe.options
    ]
    if foreign:
        raise UsageError(
            f"{' '.join(foreign)}: options of the MLP data sets, not of {args.dataset} "
            f"(see {PROG} train --help)"
        )
    if args.optimizer is not None and args.optimizer not in recipe.lrs:
        raise UsageError(f"{args.dataset} trains with {', '.join(recipe.lrs)} only, not {args.optimizer}")


def run_train(args: argparse.Namespace) -> int:
    _check_options_fit_the_recipe(args)
    _require_demo_libraries(args.dataset)
    out = args.out if args.out is not None else Path("runs") / args.dataset
    created = _prepare_output_folder(out)
    _note_an_earlier_run(out, args.dataset)
    try:
        return _train_and_write(args, out)
    finally:
        # A run that ends early (Ctrl-C, an error) writes nothing: it leaves no empty folder
        # behind. A finished run's folders hold its results, so they stay.
        _remove_if_empty(created)


def _train_and_write(args: argparse.Namespace, out: Path) -> int:
    from .serialize import save
    from .training import LossIncreasedWarning, train

    progress = _ProgressBar(args.dataset)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LossIncreasedWarning)
            mlp_options = {
                name: getattr(args, name) for name in _MLP_FLAGS if getattr(args, name) is not None
            }
            result = train(
                args.dataset,
                steps=args.steps,
                lr=args.lr,
                seed=args.seed,
                optimizer=args.optimizer,
                samples=args.samples,
                progress=progress,
                compile=False if args.eager else None,
                backend=args.backend,
                devices=args.devices,
                **mlp_options,
            )
    finally:
        progress.close()
    for warning in caught:  # after the bar, one line each, without Python's source line
        if issubclass(warning.category, LossIncreasedWarning):
            print(f"{PROG}: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    settings = result.settings
    if settings["compile"]:
        on = f", {args.backend}" if args.backend else ""
        on += f" on {args.devices} devices" if args.devices else ""
        how = f" (compiled{on}; tracing took {result.trace_seconds:.2f} s)"
    elif args.eager:
        how = " (eager)"
    else:
        how = (
            " (eager: chainrule.compile cannot replay chainrule.take yet)"
            if result.language_model
            else " (eager)"
        )
    _say(
        f"{args.dataset}: {result.model!r}, {settings['optimizer']} from lr {settings['lr']:g}, "
        f"{settings['steps']} steps in {result.seconds:.1f} s{how}"
    )
    if result.language_model:
        window = min(100, len(result.losses))
        _say(f"mean loss over the last {window} steps: {sum(result.losses[-window:]) / window:.4f}")
        _say("names sampled from the model: " + ", ".join(result.samples))
    else:
        data = cast("Dataset", result.data)  # a classifier's, which has accuracies
        _say(_accuracy_line("train", cast(float, result.train_accuracy), len(data.X_train)))
        if result.test_accuracy is not None:
            _say(_accuracy_line("test", result.test_accuracy, len(data.X_test)))

    from .plots import plot_training

    picture = plot_training(result, out / f"{args.dataset}.png")
    checkpoint = out / "model.json"
    save(result.model, checkpoint)
    _say(f"wrote {picture} and {checkpoint}")
    return 0


# ---------------------------------------------------------------------------------------------
# chainrule sample


def run_sample(args: argparse.Namespace) -> int:
    from .gpt import GPT, sample
    from .serialize import CheckpointError, load

    model = load(args.checkpoint)
    if not isinstance(model, GPT):
        raise CheckpointError(
            f"{args.checkpoint} holds {model!r}, not a GPT; chainrule sample needs a checkpoint "
            "written by chainrule train names"
        )
    for name in sample(model, args.n, temperature=args.temperature, seed=args.seed):
        _say(_printable(name))
    return 0


def _printable(text: str) -> str:
    r"""``text`` with each character Python would not print written as its escape, e.g. ``\x1b``.

    A checkpoint's characters are checked at load, but a model built in a program can hold any:
    a raw ESC would let a sampled name retitle the window, clear the screen or fake a line.

    >>> _printable("ab\x1b[2Jc")
    'ab\\x1b[2Jc'
    """
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# ---------------------------------------------------------------------------------------------
# chainrule info


def run_info(args: argparse.Namespace) -> int:
    from .info import format_info, gather_info

    report = gather_info()
    _say(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


# ---------------------------------------------------------------------------------------------
# main


def _error_line(error: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        # A failed rename (of a temporary file onto the user's) names the user's file second.
        path = error.filename2 if error.filename2 is not None else error.filename
        message = f"{_os_reason(error)}: {path!s}"
    else:
        message = str(error) or type(error).__name__
        expected = (OSError, ValueError, ImportError, RuntimeError, ArithmeticError, UsageError, DrawingError)
        if not isinstance(error, expected):  # a bug rather than a user's mistake: name its type
            message = f"{type(error).__name__}: {message}"
    return " ".join(message.split())  # one line, whatever the message holds


def _fail(error: BaseException, status: int) -> int:
    print(f"{PROG}: error: {_error_line(error)}", file=sys.stderr)
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
        args, extras = parser.parse_known_args(argv)
        if extras:  # reported here, where the command they were given to is known
            raise UsageError(_unrecognized(extras, parser.commands.get(args.command, parser)))
        if args.command is None:
            *others, last = parser.commands
            raise UsageError(f"choose a command: {', '.join(others)} or {last} (see {PROG} --help)")
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (UsageError, ExpressionError) as error:
        return _fail(error, EXIT_USAGE)
    except _OutputClosed:
        # The reader of our output went away (e.g. `| head`): stop quietly, and keep Python
        # from complaining when it flushes stdout at exit. Any other broken pipe is an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as error:
        return _fail(error, EXIT_ERROR)
