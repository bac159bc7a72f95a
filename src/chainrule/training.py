"""Training a small network on one of the toy data sets: the engine behind ``chainrule train``.

There are two kinds of task, each with a recipe:

- **binary** (moons, circles): micrograd's demo. An ``MLP(2, [16, 16, 1])`` gives one score
  per point; the loss is the SVM hinge loss on targets +1/-1 plus ``1e-4`` times the sum of
  the squared weights; every step uses the whole data set (full batch); 100 steps of plain
  SGD whose learning rate falls in a straight line from 1.0 to 0.1. With the default seed
  (1337, the demo's) this is the demo exactly, and it reaches 100% training accuracy on
  moons (first at step 41).
- **multi-class** (blobs, digits): the network has one output (a logit) per class (digits:
  ``MLP(64, [32, 10])``); the loss is softmax cross-entropy plus the same small L2 term, on
  minibatches of 32 examples (reshuffled every epoch); the optimizer is Adam, whose learning
  rate also decays linearly to a tenth of its start. Accuracy is reported on a held-out
  test split as well.

How long it takes on this 2-core machine (measured): every step runs through
``chainrule.compile`` when numpy is installed, so moons' 100 steps take about 0.3 s
(0.17 s of it tracing) and digits' 500 steps about 3 s, reaching 99.5% training and 98.6%
test accuracy with an MLP 64-32-10. In eager mode (``compile=False``, ``--eager``) every
step builds and walks the Value graph: moons takes about 10 s, and a digits step of 32
images about 0.25 s (two minutes for the 500 steps).

Every step is: ``loss_fn`` on a batch (the model's forward pass and the loss), ``zero_grad``,
``backward``, ``step``. ``loss_fn`` is one function of the batch's numbers (inputs and
targets), so that ``chainrule.compile`` can trace it once and replay it.

>>> from chainrule.datasets import moons
>>> result = train(moons(n_samples=20, seed=0), steps=5, hidden=[4])
>>> len(result.losses), len(result.accuracies), result.test_accuracy is None
(5, 5, True)
"""

from __future__ import annotations

import functools
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ._checks import check_integer, check_number
from .datasets import Dataset
from .engine import Value, no_grad, take
from .losses import cross_entropy, hinge, l2
from .nn import MLP
from .optim import SGD, Adam, Optimizer, linear_decay

__all__ = [
    "DEFAULT_SEED",
    "RECIPES",
    "DivergedError",
    "LossIncreasedWarning",
    "Recipe",
    "StepReport",
    "TrainResult",
    "accuracy",
    "make_loss_fn",
    "targets_for",
    "predict",
    "predict_all",
    "train",
]

DEFAULT_SEED = 1337  # micrograd's demo seeds both numpy (the data) and random (the weights) with it
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Recipe:
    """The default settings for one data set."""

    data_options: dict  # passed to the data set's maker in chainrule.datasets
    optimizer: str  # the default optimizer
    lrs: dict[str, float]  # the starting learning rate for each optimizer
    steps: int
    batch_size: int | None  # None: the whole training set every step
    hidden: tuple[int, ...] = (16, 16)


# Three clusters at fixed corners of a triangle, wide enough to touch a little.
BLOBS = {"n_samples": 300, "centers": [[-4, -3], [4, -3], [0, 4]], "cluster_std": 1.5, "test_size": 0.25}

# The learning rate of the optimizer a recipe does not use by default was measured on moons and
# blobs: each reaches the same accuracy as the recipe's own optimizer.
BINARY_LRS = {"sgd": 1.0, "adam": 0.05}
MULTICLASS_LRS = {"sgd": 0.1, "adam": 0.03}

RECIPES = {
    "moons": Recipe({"n_samples": 100, "noise": 0.1}, "sgd", BINARY_LRS, 100, None),
    "circles": Recipe({"n_samples": 100, "noise": 0.1, "factor": 0.5}, "sgd", BINARY_LRS, 100, None),
    "blobs": Recipe(BLOBS, "adam", MULTICLASS_LRS, 100, 32),
    "digits": Recipe({"test_size": 0.2}, "adam", MULTICLASS_LRS, 500, 32, hidden=(32,)),
}


class DivergedError(ValueError):
    """The loss or the weights became infinite or nan: the learning rate is usually too large."""


class LossIncreasedWarning(RuntimeWarning):
    """The loss ended higher than it started, though finite: the learning rate is usually too large."""


@dataclass(frozen=True)
class StepReport:
    """What the progress hook hears after each step."""

    step: int  # how many steps are done, 1 to steps
    steps: int
    loss: float
    accuracy: float  # on this step's batch, from the forward pass before the update


@dataclass
class TrainResult:
    """A trained model with its history and settings."""

    model: MLP
    data: Dataset  # as trained on: X_train holds only the examples used
    losses: list[float]  # one per step
    accuracies: list[float]  # one per step, on that step's batch
    train_accuracy: float  # over the whole training set, after the last step
    test_accuracy: float | None  # None when the data set has no test split
    seconds: float  # the time the training steps took, tracing included (not the final evaluation)
    trace_seconds: float  # the part of ``seconds`` spent tracing for chainrule.compile (0 in eager mode)
    settings: dict  # the values used for every option, defaults filled in

    @property
    def binary(self) -> bool:
        return self.data.n_classes == 2


# ---------------------------------------------------------------------------------------------
# Predictions and accuracy.


def _class_of(output, binary: bool) -> int:
    """The predicted class from a model output: a score's sign, or the largest logit."""
    if binary:
        return int(output.data > 0)
    return max(range(len(output)), key=lambda j: output[j].data)


def predict(model: MLP, x: Sequence[float], n_classes: int) -> int:
    """The class the model predicts for one example.

    >>> import random; random.seed(0)
    >>> predict(MLP(2, [3, 4]), [0.5, -0.5], n_classes=4) in range(4)
    True
    """
    with no_grad():
        return _class_of(model(list(x)), n_classes == 2)


def accuracy(
    model: MLP, X: Sequence[Sequence[float]], y: Sequence[int], n_classes: int, *, compile: bool = False
) -> float:
    """The fraction of examples whose class the model predicts right.

    With ``compile=True`` the forward pass runs through ``chainrule.compile`` (on chunks of
    ``EVAL_CHUNK`` examples, so that one trace serves them all): the same answer, faster.

    >>> import random; random.seed(0)
    >>> model = MLP(1, [1])                            # score = w * x with w > 0 here
    >>> accuracy(model, [[1.0], [-1.0], [2.0]], [1, 0, 0], n_classes=2)
    0.6666666666666666
    """
    if not X:
        raise ValueError("accuracy: no examples to measure it on")
    if len(X) != len(y):
        raise ValueError(f"accuracy: {len(X)} examples but {len(y)} labels")
    predicted = predict_all(model, X, n_classes, compile=compile)
    return sum(p == label for p, label in zip(predicted, y, strict=True)) / len(X)


EVAL_CHUNK = 64


def predict_all(
    model: MLP, X: Sequence[Sequence[float]], n_classes: int, *, compile: bool = False
) -> list[int]:
    """The class the model predicts for each example; see ``accuracy`` for ``compile``.

    >>> import random; random.seed(0)
    >>> predict_all(MLP(1, [1]), [[1.0], [-1.0]], n_classes=2)
    [1, 0]
    """
    if not compile:
        return [predict(model, x, n_classes) for x in X]
    from .compiler import compile as compile_fn

    forward = compile_fn(lambda rows: [model(row) for row in rows])
    predicted = []
    for start in range(0, len(X), EVAL_CHUNK):
        rows = [list(x) for x in X[start : start + EVAL_CHUNK]]
        n = len(rows)
        rows += [rows[-1]] * (EVAL_CHUNK - n)  # pad the last chunk, so it replays the same trace
        outputs = forward(rows)[:n]
        predicted += [_class_of(output, n_classes == 2) for output in outputs]
    return predicted


def _batch_accuracy(outputs: list, labels: list[int], binary: bool) -> float:
    hits = sum(_class_of(out, binary) == label for out, label in zip(outputs, labels, strict=True))
    return hits / len(labels)


# ---------------------------------------------------------------------------------------------
# One step's computation: forward pass and loss.


def targets_for(labels: Sequence[int], n_classes: int) -> list:
    """The labels as the numbers ``make_loss_fn``'s loss takes: +1.0/-1.0 for the two classes
    of a binary task (the hinge loss's targets), one-hot rows of floats otherwise.

    Numbers rather than class indices, so that a compiled loss function can take them as
    inputs: ``chainrule.compile`` traces numbers, and an index that picks a logit would be
    frozen into the trace.

    >>> targets_for([0, 1], 2), targets_for([2], 3)
    ([-1.0, 1.0], [[0.0, 0.0, 1.0]])
    """
    if n_classes == 2:
        return [2.0 * label - 1.0 for label in labels]
    return [[1.0 if j == label else 0.0 for j in range(n_classes)] for label in labels]


def make_loss_fn(model: MLP, binary: bool, alpha: float = 1e-4) -> Callable:
    """``loss_fn(X_batch, targets) -> (loss, outputs)`` for this model and task.

    ``targets`` come from ``targets_for``. ``outputs`` are the model's outputs on the batch
    (a score per example for a binary task, a list of logits per example otherwise), kept to
    measure the batch's accuracy. ``alpha`` weighs the L2 penalty ``sum(p * p)`` over the
    parameters. The function reads no ``.data``, so ``chainrule.compile`` can trace it.

    >>> import random; random.seed(0)
    >>> model = MLP(2, [3, 1])
    >>> loss_fn = make_loss_fn(model, binary=True)
    >>> loss, scores = loss_fn([[0.0, 1.0], [1.0, 0.0]], targets_for([0, 1], 2))
    >>> len(scores), loss.data > 0
    (2, True)
    """
    parameters = model.parameters()

    def loss_fn(X_batch: list[list[float]], targets: list) -> tuple[Value, list]:
        outputs = [model(x) for x in X_batch]
        if binary:
            data_loss = hinge(outputs, targets)
        else:
            data_loss = cross_entropy(outputs, targets)
        if alpha == 0:
            return data_loss, outputs
        return data_loss + alpha * l2(parameters), outputs

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Batches and settings.


def _batches(n: int, batch_size: int | None, rng: random.Random) -> Iterator[list[int]]:
    """Index lists, forever: all of 0..n-1 each time (full batch), or shuffled minibatches.

    Minibatches go through a fresh shuffle of the data each epoch and all have the same
    size; the few examples left over at the end of an epoch wait for the next shuffle.
    """
    if batch_size is None or batch_size >= n:
        while True:
            yield list(range(n))
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _load(dataset: str | Dataset, seed: int) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    if dataset not in RECIPES:
        raise ValueError(f"train: unknown data set {dataset!r}; choose one of {', '.join(RECIPES)}")
    from . import datasets

    return datasets.load(dataset, seed=seed, **RECIPES[dataset].data_options)


def _numpy_is_installed() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _recipe_for(data: Dataset) -> Recipe:
    if data.name in RECIPES:
        return RECIPES[data.name]
    return RECIPES["moons"] if data.n_classes == 2 else RECIPES["blobs"]


def _make_optimizer(name: str, parameters: list[Value], lr: float, steps: int) -> Optimizer:
    schedule = linear_decay(lr, lr / 10, steps)
    if name == "sgd":
        return SGD(parameters, lr=schedule)
    return Adam(parameters, lr=schedule)


# ---------------------------------------------------------------------------------------------
# The training loop.


def _diverged(when: str, what: str) -> DivergedError:
    return DivergedError(f"training diverged {when}: {what}; try a smaller learning rate")


def _check_the_last_update(model: MLP, loss_fn: Callable, first_batch: tuple, first_loss: float, lr) -> None:
    """Raise ``DivergedError`` if the last update broke the model; warn if training made it worse.

    The loop checks each step's loss, but that loss is measured *before* the step's update, so
    the last update would go unchecked: a run could end with weights of inf or nan, or so large
    that every output overflows, and still report an accuracy. Here the weights must be finite,
    and so must the loss on the first batch, measured again with the trained weights. Comparing
    it with the first step's loss on the same batch also tells a run that went the wrong way.
    """
    if not all(math.isfinite(p.data) for p in model.parameters()):
        raise _diverged("after the last step", "the weights are no longer finite numbers")
    with no_grad():  # only the number is needed, not a graph to differentiate
        final_loss = loss_fn(*first_batch)[0].data
    if not math.isfinite(final_loss):
        raise _diverged("after the last step", f"the loss is {final_loss}")
    # A tiny tolerance: a compiled replay may differ from the traced first step in the last bit.
    if final_loss > first_loss and not math.isclose(final_loss, first_loss, rel_tol=1e-9):
        warnings.warn(
            f"train: the loss rose from {first_loss:.4g} to {final_loss:.4g} on the first batch; "
            f"the learning rate ({lr:g}) is probably too large",
            LossIncreasedWarning,
            stacklevel=3,  # point at the caller of train()
        )


def train(
    dataset: str | Dataset,
    *,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = DEFAULT_SEED,
    hidden: Sequence[int] | None = None,
    activation: str = "relu",
    optimizer: str | None = None,
    batch_size: int | None = None,
    samples: int | None = None,
    alpha: float = 1e-4,
    progress: Callable[[StepReport], None] | None = None,
    compile: bool | None = None,
) -> TrainResult:
    """Train an MLP on ``dataset`` (a name from ``RECIPES`` or a ``Dataset``) and return the result.

    Options left as None take the data set's recipe (see the module's docstring):

    - ``steps``: optimizer steps; ``lr``: the starting learning rate (it decays linearly to a
      tenth of it over the run); ``optimizer``: ``"sgd"`` or ``"adam"``.
    - ``batch_size``: examples per step (None: the recipe's, which is the whole training set
      for the binary tasks).
    - ``samples``: train on only the first ``samples`` training examples (a random subset,
      since the data sets come shuffled); the test split stays whole.
    - ``seed`` makes the run repeatable: it generates the data set (when given by name),
      seeds Python's global ``random`` module right before the model is built (the weights
      are drawn from it, as in micrograd) and shuffles the minibatches.
    - ``hidden``: the hidden layers' sizes (None: the recipe's, 16,16 or, for digits, 32).
    - ``progress`` is called with a ``StepReport`` after every step.
    - ``compile``: run each step through ``chainrule.compile`` (traced on the first step,
      replayed after). None means yes when numpy is installed. The numbers are the same as
      eager mode's up to rounding; only the speed differs.

    Raises ``DivergedError`` if the loss stops being a finite number, at any step or after the
    last update (whose effect is checked too: finite weights, and a finite loss on the first
    batch). Warns with ``LossIncreasedWarning`` if that final loss is higher than the first
    step's loss on the same batch, which usually means a learning rate far too large.

    >>> result = train("moons", steps=2, samples=10, hidden=[4])
    >>> result.settings["optimizer"], len(result.data.X_train)
    ('sgd', 10)
    """
    seed = check_integer("train", "seed", seed, low=0)  # random.seed takes no numpy integer
    data = _load(dataset, seed)
    recipe = _recipe_for(data)
    binary = data.n_classes == 2

    steps = check_integer("train", "steps", recipe.steps if steps is None else steps)
    optimizer = recipe.optimizer if optimizer is None else optimizer
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"train: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if lr is None:
        lr = recipe.lrs[optimizer]
    lr = check_number("train", "lr", lr, strict=True)
    batch_size = recipe.batch_size if batch_size is None else check_integer("train", "batch_size", batch_size)
    alpha = check_number("train", "alpha", alpha)
    hidden = [
        check_integer("train", "every hidden layer size", h)
        for h in (recipe.hidden if hidden is None else hidden)
    ]
    if compile is None:
        compile = _numpy_is_installed()
    if samples is not None:
        samples = check_integer("train", "samples", samples)
        if samples > len(data.X_train):
            raise ValueError(
                f"train: samples={samples} but {data.name} has only {len(data.X_train)} training examples"
            )
        data = data._replace(X_train=data.X_train[:samples], y_train=data.y_train[:samples])
    if not data.X_train:
        raise ValueError(f"train: {data.name} has no training examples")

    random.seed(seed)  # the weights come from the global random module, as in micrograd
    n_outputs = 1 if binary else data.n_classes
    model = MLP(data.n_features, hidden + [n_outputs], activation=activation)
    opt = _make_optimizer(optimizer, model.parameters(), lr, steps)
    loss_fn = make_loss_fn(model, binary, alpha)
    if compile:
        from .compiler import compile as compile_fn

        loss_fn = compile_fn(loss_fn)
    batches = _batches(len(data.X_train), batch_size, random.Random(seed))

    losses, accuracies = [], []
    first_batch = None
    start = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        labels = [data.y_train[i] for i in batch]
        inputs = ([data.X_train[i] for i in batch], targets_for(labels, data.n_classes))
        if first_batch is None:
            first_batch = inputs
        loss, outputs = loss_fn(*inputs)
        if not math.isfinite(loss.data):
            raise _diverged(f"at step {step + 1}", f"the loss is {loss.data}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.data)
        accuracies.append(_batch_accuracy(outputs, labels, binary))
        if progress is not None:
            progress(StepReport(step + 1, steps, losses[-1], accuracies[-1]))
    seconds = time.perf_counter() - start
    _check_the_last_update(model, loss_fn, first_batch, losses[0], lr)

    settings = {
        "dataset": data.name,
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "hidden": hidden,
        "activation": activation,
        "optimizer": optimizer,
        "batch_size": batch_size,
        "samples": len(data.X_train),
        "alpha": alpha,
        "compile": bool(compile),
    }

    def final_accuracy(X, y):
        return accuracy(model, X, y, data.n_classes, compile=compile) if X else None

    test_accuracy = final_accuracy(data.X_test, data.y_test)
    return TrainResult(
        model=model,
        data=data,
        losses=losses,
        accuracies=accuracies,
        train_accuracy=final_accuracy(data.X_train, data.y_train),
        test_accuracy=test_accuracy,
        seconds=seconds,
        trace_seconds=loss_fn.trace_seconds if compile else 0.0,
        settings=settings,
    )


@functools.cache
def compile_supports_take() -> bool:
    """Whether ``chainrule.compile`` replays ``chainrule.take`` with each call's index.

    Found by trying it: a tiny function that takes row ``i`` is traced with ``i = 0`` and
    replayed with ``i = 1``. A compiler that froze the traced index would give row 0 again,
    and a model whose token ids pick embedding rows would then train on the wrong rows; such
    a recipe runs eagerly instead. False too when numpy (which compile needs) is missing.
    """
    if not _numpy_is_installed():
        return False
    from .compiler import compile as compile_fn

    rows = [Value(1.0), Value(2.0)]
    pick = compile_fn(lambda i: take(rows, i) * 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TraceWarning of a compiler that reads the index
        try:
            return pick(0).data == 1.0 and pick(1).data == 2.0
        except NotImplementedError:
            return False
