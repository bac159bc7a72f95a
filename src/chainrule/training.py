"""Training a model on one of the data sets: the engine behind ``chainrule train``.

Every data set has a **recipe**: it names the data, builds the model, makes the loss of one
step's inputs, yields the inputs step after step, picks the optimizer and says what to report.
``train`` is one loop for all of them: each step is ``loss_fn`` on a batch (the model's
forward pass and the loss), ``zero_grad``, ``backward``, ``step``. ``loss_fn`` is one function
of the batch's numbers, so that ``chainrule.compile`` can trace it once and replay it. There
are three kinds of task:

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
- **language model** (names): the GPT scripts' run. A character-level ``GPT`` (1 layer, 4
  heads, width 16, context 16) learns to predict each next letter of a name; one name per
  step, 1,000 steps of Adam (with the scripts' betas, 0.85 and 0.99) whose learning rate
  falls linearly from 0.01 to 0. It reports
  names sampled from the trained model instead of an accuracy.

How long it takes on this 2-core machine (measured): every step runs through
``chainrule.compile`` when numpy is installed (the model applied to a batch with
``map_rows``, which a trace runs on one row), so moons' 100 steps take about 0.1 s (0.01 s
of it tracing) and digits' 500 steps about 1.2 s, reaching 99.5% training and 98.6%
test accuracy with an MLP 64-32-10. In eager mode (``compile=False``, ``--eager``) every
step builds and walks the Value graph: moons takes about 10 s, and a digits step of 32
images about 0.25 s (two minutes for the 500 steps).

>>> from chainrule.datasets import moons
>>> result = train(moons(n_samples=20, seed=0), steps=5, hidden=[4])
>>> len(result.losses), len(result.accuracies), result.test_accuracy is None
(5, 5, True)
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

from ._checks import check_integer, check_number
from .datasets import Dataset, TextDataset
from .engine import Value, map_rows, no_grad
from .gpt import GPT, encode, sample, sequence_loss
from .losses import cross_entropy, hinge, l2
from .nn import MLP, Module
from .optim import SGD, Adam, Optimizer, linear_decay

__all__ = [
    "DEFAULT_SEED",
    "RECIPES",
    "ClassifierRecipe",
    "DivergedError",
    "LanguageModelRecipe",
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
LossFunction = Callable[..., tuple[Value, list[Any]]]  # a step's (loss, outputs) from its inputs


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
    accuracy: float | None  # on this step's batch, before the update; None for a language model


@dataclass
class TrainResult:
    """A trained model with its history and settings."""

    model: Module
    data: Dataset | TextDataset  # as trained on: X_train (documents) holds only the examples used
    losses: list[float]  # one per step
    accuracies: list[float]  # one per step, on that step's batch (empty for a language model)
    train_accuracy: float | None  # over the whole training set, after the last step
    test_accuracy: float | None  # None when the data set has no test split
    seconds: float  # the time the training steps took, tracing included (not the final evaluation)
    trace_seconds: float  # the part of ``seconds`` spent tracing for chainrule.compile (0 in eager mode)
    settings: dict  # the values used for every option, defaults filled in
    samples: list[str] = field(default_factory=list)  # names a language model made up after training

    @property
    def binary(self) -> bool:
        return getattr(self.data, "n_classes", None) == 2

    @property
    def language_model(self) -> bool:
        return isinstance(self.data, TextDataset)


# ---------------------------------------------------------------------------------------------
# Predictions and accuracy.


def _class_of(output: Any, binary: bool) -> int:  # a score (binary), else a list of logits
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

    forward = compile_fn(lambda rows: map_rows(model, rows))
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


def make_loss_fn(model: MLP, binary: bool, alpha: float = 1e-4) -> LossFunction:
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

    def loss_fn(X_batch: list[list[float]], targets: list[Any]) -> tuple[Value, list[Any]]:
        outputs = map_rows(model, X_batch)  # (a compiled trace runs the model on one row)
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


# ---------------------------------------------------------------------------------------------
# Recipes


_Data = TypeVar("_Data", Dataset, TextDataset)
_Model = TypeVar("_Model", bound=Module)


@dataclass(frozen=True)
class Recipe(Generic[_Data, _Model]):
    """How to train on one data set; ``train`` runs every recipe with the same loop.

    The fields are the defaults of the options every recipe has. A subclass fills in the
    methods: ``load`` the data, check its own ``options``, ``build_model``, ``make_loss_fn``
    (a function of one step's inputs returning ``(loss, outputs)``), ``batches`` (each step's
    inputs, and what ``batch_accuracy`` needs to score the outputs), and ``report`` what the
    trained model does (final accuracies, or sampled names).
    """

    optimizer: str  # the default optimizer
    lrs: dict[str, float]  # the starting learning rate for each optimizer the recipe allows
    steps: int
    decay_to: float  # the learning rate falls linearly to this fraction of its start

    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)  # PyTorch's defaults
    options: ClassVar[tuple[str, ...]] = ()  # train()'s recipe-specific options this recipe takes

    def load(self, name: str, seed: int) -> _Data:
        raise NotImplementedError

    def check_options(self, data: _Data, options: dict[str, Any]) -> dict[str, Any]:
        """This recipe's own options, checked, with its defaults filled in."""
        return {}

    def examples(self, data: _Data) -> list[Any]:
        """The training examples."""
        raise NotImplementedError

    def subset(self, data: _Data, samples: int) -> _Data:
        """The data with only its first ``samples`` training examples."""
        raise NotImplementedError

    def build_model(self, data: _Data, settings: dict[str, Any]) -> _Model:
        raise NotImplementedError

    def make_loss_fn(self, model: _Model, data: _Data, settings: dict[str, Any]) -> LossFunction:
        raise NotImplementedError

    def batches(
        self, data: _Data, settings: dict[str, Any], rng: random.Random
    ) -> Iterator[tuple[tuple[Any, ...], Any]]:
        raise NotImplementedError

    def batch_accuracy(self, outputs: list[Any], batch: Any) -> float | None:
        return None

    def report(self, model: _Model, data: _Data, settings: dict[str, Any]) -> dict[str, Any]:
        """What ``TrainResult`` gets besides the history: accuracies or samples."""
        return {}


# Options of train() that only the MLP recipes take, with their defaults.
MLP_OPTIONS = {"hidden": None, "activation": "relu", "batch_size": None, "alpha": 1e-4}


@dataclass(frozen=True)
class ClassifierRecipe(Recipe[Dataset, MLP]):
    """An MLP classifier on points (moons, circles, blobs) or images (digits)."""

    data_options: dict = field(default_factory=dict)  # passed to the data set's maker in chainrule.datasets
    batch_size: int | None = None  # None: the whole training set every step
    hidden: tuple[int, ...] = (16, 16)

    options: ClassVar[tuple[str, ...]] = tuple(MLP_OPTIONS)

    def load(self, name: str, seed: int) -> Dataset:
        from . import datasets

        return cast(Dataset, datasets.load(name, seed=seed, **self.data_options))

    def check_options(self, data: Dataset, options: dict) -> dict:
        hidden, batch_size = options["hidden"], options["batch_size"]
        return {
            "hidden": [
                check_integer("train", "every hidden layer size", h)
                for h in (self.hidden if hidden is None else hidden)
            ],
            "activation": options["activation"],
            "batch_size": self.batch_size
            if batch_size is None
            else check_integer("train", "batch_size", batch_size),
            "alpha": check_number("train", "alpha", options["alpha"]),
        }

    def examples(self, data: Dataset) -> list:
        return data.X_train

    def subset(self, data: Dataset, samples: int) -> Dataset:
        if samples > len(data.X_train):
            raise ValueError(
                f"train: samples={samples} but {data.name} has only {len(data.X_train)} training examples"
            )
        return data._replace(X_train=data.X_train[:samples], y_train=data.y_train[:samples])

    def build_model(self, data: Dataset, settings: dict) -> MLP:
        n_outputs = 1 if data.n_classes == 2 else data.n_classes
        return MLP(data.n_features, settings["hidden"] + [n_outputs], activation=settings["activation"])

    def make_loss_fn(self, model: MLP, data: Dataset, settings: dict) -> Callable:
        return make_loss_fn(model, data.n_classes == 2, settings["alpha"])

    def batches(
        self, data: Dataset, settings: dict, rng: random.Random
    ) -> Iterator[tuple[tuple[Any, ...], tuple[list[int], bool]]]:
        for batch in _batches(len(data.X_train), settings["batch_size"], rng):
            labels = [data.y_train[i] for i in batch]
            inputs = ([data.X_train[i] for i in batch], targets_for(labels, data.n_classes))
            yield inputs, (labels, data.n_classes == 2)

    def batch_accuracy(self, outputs: list, batch: tuple[list[int], bool]) -> float:
        labels, binary = batch
        return _batch_accuracy(outputs, labels, binary)

    def report(self, model: MLP, data: Dataset, settings: dict) -> dict:
        def final_accuracy(X: list[list[float]], y: list[int]) -> float | None:
            return accuracy(model, X, y, data.n_classes, compile=settings["compile"]) if X else None

        return {
            "train_accuracy": final_accuracy(data.X_train, data.y_train),
            "test_accuracy": final_accuracy(data.X_test, data.y_test),
        }


@dataclass(frozen=True)
class LanguageModelRecipe(Recipe[TextDataset, GPT]):
    """A character-level GPT on short documents, one document per step, as the GPT scripts train."""

    n_layer: int = 1
    n_head: int = 4
    n_embd: int = 16
    block_size: int = 16
    shown_samples: int = 10  # names sampled after training
    temperature: float = 0.5  # for those samples: below 1, the model's likelier names

    adam_betas: ClassVar[tuple[float, float]] = (0.85, 0.99)  # the GPT scripts' Adam

    def load(self, name: str, seed: int) -> TextDataset:
        from . import datasets

        # A name of n letters is n + 1 predictions (the last one: "the name ends here").
        return cast(TextDataset, datasets.load(name, seed=seed, max_length=self.block_size - 1))

    def examples(self, data: TextDataset) -> list:
        return data.documents

    def check_options(self, data: TextDataset, options: dict) -> dict:
        sizes = ("n_layer", "n_head", "n_embd", "block_size")
        return {name: getattr(self, name) for name in sizes}

    def subset(self, data: TextDataset, samples: int) -> TextDataset:
        if samples > len(data.documents):
            raise ValueError(
                f"train: samples={samples} but {data.name} has only {len(data.documents)} documents"
            )
        return data._replace(documents=data.documents[:samples])

    def build_model(self, data: TextDataset, settings: dict) -> GPT:
        sizes = {name: settings[name] for name in ("n_layer", "n_head", "n_embd", "block_size")}
        return GPT(len(data.chars) + 1, **sizes, chars=data.chars)

    def make_loss_fn(self, model: GPT, data: TextDataset, settings: dict) -> Callable:
        def loss_fn(tokens: list[int]) -> tuple[Value, list]:
            return sequence_loss(model, tokens), []

        return loss_fn

    def batches(
        self, data: TextDataset, settings: dict, rng: random.Random
    ) -> Iterator[tuple[tuple[list[int]], None]]:
        # The documents come shuffled by the seed; go through them in that order, again and again.
        while True:
            for document in data.documents:
                yield (encode(document, data.chars),), None

    def report(self, model: GPT, data: TextDataset, settings: dict) -> dict:
        names = sample(model, self.shown_samples, temperature=self.temperature, seed=settings["seed"])
        return {"samples": names}


# Three clusters at fixed corners of a triangle, wide enough to touch a little.
BLOBS = {"n_samples": 300, "centers": [[-4, -3], [4, -3], [0, 4]], "cluster_std": 1.5, "test_size": 0.25}

# The learning rate of the optimizer a recipe does not use by default was measured on moons and
# blobs: each reaches the same accuracy as the recipe's own optimizer.
BINARY_LRS = {"sgd": 1.0, "adam": 0.05}
MULTICLASS_LRS = {"sgd": 0.1, "adam": 0.03}

RECIPES: dict[str, Recipe[Any, Any]] = {
    "moons": ClassifierRecipe("sgd", BINARY_LRS, 100, 0.1, {"n_samples": 100, "noise": 0.1}),
    "circles": ClassifierRecipe("sgd", BINARY_LRS, 100, 0.1, {"n_samples": 100, "noise": 0.1, "factor": 0.5}),
    "blobs": ClassifierRecipe("adam", MULTICLASS_LRS, 100, 0.1, BLOBS, batch_size=32),
    "digits": ClassifierRecipe(
        "adam", MULTICLASS_LRS, 500, 0.1, {"test_size": 0.2}, batch_size=32, hidden=(32,)
    ),
    # The GPT scripts' run: Adam only (its rate is theirs), decaying to 0.
    "names": LanguageModelRecipe("adam", {"adam": 0.01}, 1000, 0.0),
}


def _recipe_and_data(
    dataset: str | Dataset | TextDataset, seed: int
) -> tuple[Recipe[Any, Any], Dataset | TextDataset]:
    """The recipe for ``dataset`` (a name from RECIPES, a Dataset or a TextDataset) and its data."""
    if isinstance(dataset, (Dataset, TextDataset)):
        if dataset.name in RECIPES:
            return RECIPES[dataset.name], dataset
        if isinstance(dataset, TextDataset):
            return RECIPES["names"], dataset
        return (RECIPES["moons"] if dataset.n_classes == 2 else RECIPES["blobs"]), dataset
    if not isinstance(dataset, str) or dataset not in RECIPES:
        raise ValueError(f"train: unknown data set {dataset!r}; choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[dataset]
    return recipe, recipe.load(dataset, seed)


def _numpy_is_installed() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _make_optimizer(recipe: Recipe, name: str, parameters: list[Value], lr: float, steps: int) -> Optimizer:
    schedule = linear_decay(lr, lr * recipe.decay_to, steps)
    if name == "sgd":
        return SGD(parameters, lr=schedule)
    return Adam(parameters, lr=schedule, betas=recipe.adam_betas)


# ---------------------------------------------------------------------------------------------
# The training loop.


def _diverged(when: str, what: str) -> DivergedError:
    return DivergedError(f"training diverged {when}: {what}; try a smaller learning rate")


def _check_the_last_update(
    model: Module, loss_fn: LossFunction, first_batch: tuple[Any, ...], first_loss: float, lr: float
) -> None:
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


def _use_compile(compile: bool | None) -> bool:
    """Whether to run the steps through chainrule.compile: by default, whenever numpy is there."""
    if compile is None:
        return _numpy_is_installed()
    return bool(compile)


def train(
    dataset: str | Dataset | TextDataset,
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
    backend: str | None = None,
    devices: int | None = None,
) -> TrainResult:
    """Train the recipe's model on ``dataset`` (a name from ``RECIPES``, or data) and return the result.

    Options left as None take the data set's recipe (see the module's docstring):

    - ``steps``: optimizer steps; ``lr``: the starting learning rate (it decays linearly to a
      tenth of it over the run, or to 0 for names); ``optimizer``: ``"sgd"`` or ``"adam"``
      (names: Adam only).
    - ``samples``: train on only the first ``samples`` training examples (a random subset,
      since the data sets come shuffled); the test split stays whole.
    - ``seed`` makes the run repeatable: it generates (or shuffles) the data set when given by
      name, seeds Python's global ``random`` module right before the model is built (the
      weights are drawn from it, as in micrograd) and shuffles the minibatches.
    - The MLP recipes only: ``hidden``, the hidden layers' sizes (None: the recipe's, 16,16
      or, for digits, 32); ``activation``; ``batch_size``, examples per step (None: the
      recipe's, which is the whole training set for the binary tasks); ``alpha``, the weight
      of the L2 penalty. Changing one of them for names is an error.
    - ``progress`` is called with a ``StepReport`` after every step.
    - ``compile``: run each step through ``chainrule.compile`` (traced on the first step of
      each input structure, replayed after). None means yes when numpy is installed (and, for
      names, when compile can replay ``chainrule.take``). The numbers are the same as eager
      mode's up to rounding; only the speed differs. ``backend``: the compiled steps' backend
      (see ``chainrule.compile``; None: its default), ``"jax"`` for XLA, with ``devices``
      (a count) to split each batch's rows over several devices.

    Raises ``DivergedError`` if the loss stops being a finite number, at any step or after the
    last update (whose effect is checked too: finite weights, and a finite loss on the first
    batch). Warns with ``LossIncreasedWarning`` if that final loss is higher than the first
    step's loss on the same batch, which usually means a learning rate far too large.

    >>> result = train("moons", steps=2, samples=10, hidden=[4])
    >>> result.settings["optimizer"], len(result.data.X_train)
    ('sgd', 10)
    """
    seed = check_integer("train", "seed", seed, low=0)  # random.seed takes no numpy integer
    recipe, data = _recipe_and_data(dataset, seed)
    given = {"hidden": hidden, "activation": activation, "batch_size": batch_size, "alpha": alpha}
    foreign = [
        name for name, value in given.items() if name not in recipe.options and value != MLP_OPTIONS[name]
    ]
    if foreign:
        raise ValueError(f"train: {', '.join(foreign)}: options of the MLP recipes, not of {data.name}")

    steps = check_integer("train", "steps", recipe.steps if steps is None else steps)
    optimizer = recipe.optimizer if optimizer is None else optimizer
    if optimizer not in recipe.lrs:
        raise ValueError(
            f"train: optimizer must be one of {tuple(recipe.lrs)} for {data.name}, got {optimizer!r}"
        )
    lr = check_number("train", "lr", recipe.lrs[optimizer] if lr is None else lr, strict=True)
    own = recipe.check_options(data, given)
    compile = _use_compile(compile)
    if (backend is not None or devices is not None) and not compile:
        raise ValueError("train: backend and devices are for compiled steps, not eager ones")
    if samples is not None:
        data = recipe.subset(data, check_integer("train", "samples", samples))
    if not recipe.examples(data):
        raise ValueError(f"train: {data.name} has no training examples")
    settings = {"dataset": data.name, "steps": steps, "lr": lr, "seed": seed, **own, "optimizer": optimizer}
    settings["compile"] = compile

    random.seed(seed)  # the weights come from the global random module, as in micrograd
    model = recipe.build_model(data, settings)
    opt = _make_optimizer(recipe, optimizer, model.parameters(), lr, steps)
    loss_fn = recipe.make_loss_fn(model, data, settings)
    if compile:
        from .compiler import compile as compile_fn

        loss_fn = compile_fn(loss_fn, backend=backend, devices=devices)
    batches = recipe.batches(data, settings, random.Random(seed))

    losses, accuracies = [], []
    start = time.perf_counter()
    first_batch = None
    with _parameters_kept(model, opt, backend, devices):
        for step in range(steps):
            inputs, batch = next(batches)
            if first_batch is None:
                first_batch = inputs
            loss, outputs = loss_fn(*inputs)
            if not math.isfinite(loss.data):
                raise _diverged(f"at step {step + 1}", f"the loss is {loss.data}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.data)
            batch_accuracy = recipe.batch_accuracy(outputs, batch)
            if batch_accuracy is not None:
                accuracies.append(batch_accuracy)
            if progress is not None:
                progress(StepReport(step + 1, steps, losses[-1], batch_accuracy))
    seconds = time.perf_counter() - start
    _check_the_last_update(model, loss_fn, first_batch, losses[0], lr)  # type: ignore[arg-type]  # (steps >= 1)

    settings["samples"] = len(recipe.examples(data))
    report = {"train_accuracy": None, "test_accuracy": None, **recipe.report(model, data, settings)}
    return TrainResult(
        model=model,
        data=data,
        losses=losses,
        accuracies=accuracies,
        seconds=seconds,
        trace_seconds=loss_fn.trace_seconds if compile else 0.0,  # type: ignore[attr-defined]  # (compiled)
        settings=settings,
        **report,
    )


def _parameters_kept(model: Any, opt: Any, backend: str | None, devices: Any) -> Any:
    """Where the parameters stay between steps: on JAX's device for ``backend="jax"`` on one
    device (chainrule.on_device), else where they are."""
    if backend == "jax" and devices is None:
        from .compiler import on_device

        return on_device(model, opt)
    return contextlib.nullcontext()
