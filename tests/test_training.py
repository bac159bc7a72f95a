"""chainrule.training: the recipes, the loop, the progress hook; checked against PyTorch when installed."""

import math
import random
import warnings

import pytest

from chainrule.datasets import blobs, moons
from chainrule.nn import MLP
from chainrule.optim import linear_decay
from chainrule.training import (
    DivergedError,
    LossIncreasedWarning,
    StepReport,
    _batches,
    accuracy,
    make_loss_fn,
    targets_for,
    train,
)

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def small_moons():
    return moons(n_samples=30, noise=0.1, seed=0)


# ---------------------------------------------------------------------------------------------
# The same training run written in PyTorch (float64), from the same initial weights.


def _initial_model(seed, nin, nouts):
    """The model ``train`` builds: it seeds ``random`` with ``seed`` right before building it."""
    random.seed(seed)
    return MLP(nin, nouts)


def _torch_layers(torch, model):
    layers = []
    for layer in model.layers:
        W = torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64)
        b = torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64)
        layers.append((W.requires_grad_(), b.requires_grad_()))
    return layers


def _torch_forward(torch, layers, X):
    h = X
    for i, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def _l2(layers):
    return sum((W * W).sum() + (b * b).sum() for W, b in layers)


def test_binary_recipe_matches_pytorch_step_by_step(small_moons):
    torch = pytest.importorskip("torch")
    steps, lr, alpha, seed = 12, 1.0, 1e-4, 7
    result = train(small_moons, steps=steps, seed=seed, hidden=[6, 5])

    layers = _torch_layers(torch, _initial_model(seed, 2, [6, 5, 1]))
    params = [p for pair in layers for p in pair]
    X = torch.tensor(small_moons.X_train, dtype=torch.float64)
    y = torch.tensor([2.0 * label - 1.0 for label in small_moons.y_train], dtype=torch.float64)
    expected_losses = []
    for k in range(steps):
        scores = _torch_forward(torch, layers, X)[:, 0]
        loss = torch.relu(1 - y * scores).mean() + alpha * _l2(layers)  # SVM hinge + L2, full batch
        expected_losses.append(loss.item())
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= (lr + (lr / 10 - lr) * k / steps) * p.grad  # linear decay from lr to lr/10

    assert result.losses == pytest.approx(expected_losses, rel=1e-10, abs=1e-12)
    final = [w.data for n in result.model.layers[0].neurons for w in n.w]
    assert final == pytest.approx(layers[0][0].detach().flatten().tolist(), rel=1e-9, abs=1e-12)


def test_multiclass_recipe_matches_pytorch_adam_and_cross_entropy():
    torch = pytest.importorskip("torch")
    data = blobs(n_samples=24, centers=3, seed=2)
    steps, lr, alpha, seed = 8, 0.03, 1e-4, 11
    # batch_size >= the data set: every step sees all examples, so no shuffling to reproduce.
    result = train(data, steps=steps, seed=seed, hidden=[5], batch_size=100)
    assert result.settings["optimizer"] == "adam" and result.settings["lr"] == lr

    layers = _torch_layers(torch, _initial_model(seed, 2, [5, 3]))
    params = [p for pair in layers for p in pair]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = linear_decay(lr, lr / 10, steps)
    X = torch.tensor(data.X_train, dtype=torch.float64)
    targets = torch.tensor(data.y_train)
    expected_losses = []
    for k in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule(k)
        logits = _torch_forward(torch, layers, X)
        loss = torch.nn.functional.cross_entropy(logits, targets) + alpha * _l2(layers)
        expected_losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    assert result.losses == pytest.approx(expected_losses, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The loop's bookkeeping


def test_progress_hook_hears_every_step(small_moons):
    reports = []
    result = train(small_moons, steps=4, hidden=[3], progress=reports.append)
    assert [r.step for r in reports] == [1, 2, 3, 4]
    assert all(isinstance(r, StepReport) and r.steps == 4 for r in reports)
    assert [r.loss for r in reports] == result.losses
    assert [r.accuracy for r in reports] == result.accuracies


def test_same_seed_same_run_and_the_seed_changes_it(small_moons):
    first = train(small_moons, steps=3, hidden=[3], seed=1)
    assert train(small_moons, steps=3, hidden=[3], seed=1).losses == first.losses
    assert train(small_moons, steps=3, hidden=[3], seed=2).losses != first.losses


def test_final_accuracies_are_measured_on_the_whole_splits():
    data = blobs(n_samples=40, centers=3, seed=0, test_size=0.25)
    result = train(data, steps=3, hidden=[4])
    assert result.train_accuracy == accuracy(result.model, data.X_train, data.y_train, 3)
    assert result.test_accuracy == accuracy(result.model, data.X_test, data.y_test, 3)


def test_samples_trains_on_a_subset_and_keeps_the_whole_test_split():
    result = train("digits", samples=30, steps=2, batch_size=10, hidden=[4])
    assert len(result.data.X_train) == 30
    assert len(result.data.X_test) == 360
    assert result.test_accuracy is not None
    assert result.settings["samples"] == 30


def test_recipes_by_name():
    binary = train("moons", steps=1, samples=10, hidden=[2]).settings
    assert (binary["optimizer"], binary["lr"], binary["batch_size"]) == ("sgd", 1.0, None)
    assert binary["seed"] == 1337  # micrograd's demo seed


def test_another_optimizer_gets_its_own_default_lr(small_moons):
    assert train(small_moons, steps=1, hidden=[2], optimizer="adam").settings["lr"] == 0.05


def test_minibatches_cover_every_example_once_per_epoch():
    batches = _batches(10, 3, random.Random(0))
    epoch = [next(batches) for _ in range(3)]  # 3 batches of 3; one example waits for the next epoch
    seen = [i for batch in epoch for i in batch]
    assert all(len(batch) == 3 for batch in epoch)
    assert len(set(seen)) == 9


def test_loss_fn_is_the_hinge_loss_plus_l2():
    model = MLP(1, [1])
    model.layers[0].neurons[0].w[0].data = 2.0  # score = 2x
    loss_fn = make_loss_fn(model, binary=True, alpha=0.5)
    # x = -1, class 1 (target +1): score -2, hinge max(0, 1 - (+1)(-2)) = 3; L2 = 0.5 * (2^2 + 0^2) = 2
    loss, scores = loss_fn([[-1.0]], targets_for([1], 2))
    assert [s.data for s in scores] == [-2.0]
    assert loss.data == 5.0


def test_diverging_training_is_reported():
    with pytest.raises(DivergedError, match="training diverged at step .*: the loss is"):
        train(moons(n_samples=10, seed=0), steps=5, lr=1e200, hidden=[4, 4])


def _modes():
    """Eager, and compiled when numpy is there: the checks must hold in both."""
    return [False, pytest.param(True, marks=pytest.mark.skipif(not _has_numpy(), reason="needs numpy"))]


def _has_numpy():
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("compile", _modes())
@pytest.mark.parametrize("lr", [1e150, 1e308])
def test_a_divergence_in_the_last_update_is_reported(small_moons, compile, lr):
    # Each step's loss is measured before its update, so a blow-up in the last update showed
    # no bad loss and the run "succeeded". With these rates the one update leaves the weights
    # finite (about 3e149 and 3e307) but the model's outputs, and so the loss, overflow.
    with pytest.raises(
        # inf, or nan where inf - inf meets a relu (which passes nan on since issue 8)
        DivergedError,
        match="training diverged after the last step: the loss is (inf|nan)",
    ) as caught:
        train(small_moons, steps=1, lr=lr, hidden=[4, 4], compile=compile)
    assert "try a smaller learning rate" in str(caught.value)


@pytest.mark.parametrize("compile", _modes())
def test_weights_that_are_no_longer_finite_after_the_last_step_are_a_divergence(small_moons, compile):
    # Inputs of size 100 make gradients of about that size, so lr 1e308 sends weights to inf.
    scaled = small_moons._replace(X_train=[[100 * v for v in x] for x in small_moons.X_train])
    with pytest.raises(DivergedError, match="after the last step: the weights are no longer finite"):
        train(scaled, steps=1, lr=1e308, hidden=[4, 4], compile=compile)


@pytest.mark.parametrize("compile", _modes())
def test_a_loss_that_ends_higher_than_it_started_warns(small_moons, compile):
    # lr 50 is far too large for this network: the loss climbs from about 1.2 to millions,
    # yet stays finite, so nothing raises.
    with pytest.warns(LossIncreasedWarning, match=r"the loss rose from 1\.2.* to .*learning rate"):
        result = train(small_moons, steps=10, lr=50, hidden=[4, 4], compile=compile)
    assert math.isfinite(result.losses[-1]) and result.losses[-1] > result.losses[0]
    assert issubclass(LossIncreasedWarning, RuntimeWarning)


@pytest.mark.parametrize("compile", _modes())
def test_a_run_that_learns_does_not_warn(small_moons, compile):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        result = train(small_moons, steps=20, hidden=[4, 4], compile=compile)
    assert result.losses[-1] < result.losses[0]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"samples": 1000}, "samples=1000 but moons has only 30 training examples"),
        ({"hidden": [4, 0]}, "every hidden layer size must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_options_are_refused(small_moons, options, message):
    with pytest.raises(ValueError, match=message):
        train(small_moons, **options)


def test_unknown_data_set_name():
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        train("mnist")


# ---------------------------------------------------------------------------------------------
# Compiled training (the default when numpy is installed) against eager training.


@pytest.mark.parametrize("which", ["moons", "blobs"])
def test_compiled_training_follows_eager_training(which):
    pytest.importorskip("numpy")
    data = moons(n_samples=40, seed=3) if which == "moons" else blobs(n_samples=60, centers=3, seed=3)
    eager = train(data, steps=12, hidden=[5, 4], batch_size=16, compile=False)
    fast = train(data, steps=12, hidden=[5, 4], batch_size=16, compile=True)
    assert (eager.settings["compile"], fast.settings["compile"]) == (False, True)
    assert eager.trace_seconds == 0.0 < fast.trace_seconds <= fast.seconds
    assert fast.losses == pytest.approx(eager.losses, rel=1e-9)
    assert fast.accuracies == eager.accuracies
    eager_weights = [p.data for p in eager.model.parameters()]
    assert [p.data for p in fast.model.parameters()] == pytest.approx(eager_weights, rel=1e-9, abs=1e-12)
    assert (fast.train_accuracy, fast.test_accuracy) == (eager.train_accuracy, eager.test_accuracy)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 150])
def test_compiled_accuracy_equals_eager_accuracy(n):
    pytest.importorskip("numpy")
    data = blobs(n_samples=200, centers=3, seed=1, test_size=0.0) if n > 1 else blobs(n_samples=10, seed=1)
    random.seed(4)
    model = MLP(2, [6, 3])
    X, y = data.X_train[:n], data.y_train[:n]
    assert accuracy(model, X, y, 3, compile=True) == accuracy(model, X, y, 3)


def test_the_digits_recipe_reaches_95_percent_on_the_test_split():
    pytest.importorskip("numpy")
    result = train("digits")  # MLP 64-32-10, 500 minibatch steps of Adam, compiled
    assert [len(layer.neurons) for layer in result.model.layers] == [32, 10]
    assert result.settings["compile"] is True
    assert len(result.data.X_train) == 1437  # the whole training split
    assert result.test_accuracy >= 0.95


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 2.5}, "train: steps must be an integer, got 2.5"),
        ({"lr": "0.1"}, "train: lr must be a number, got '0.1'"),
        ({"alpha": None}, "train: alpha must be a number, got None"),
    ],
)
def test_options_of_the_wrong_kind_are_type_errors(small_moons, options, message):
    with pytest.raises(TypeError, match=message):
        train(small_moons, **options)


def test_a_picture_that_cannot_be_written_names_its_path_not_a_temporary_file(small_moons, tmp_path):
    pytest.importorskip("matplotlib")
    from chainrule.plots import plot_training

    result = train(small_moons, steps=2, hidden=[2], compile=False)
    target = tmp_path / "taken.png"
    target.mkdir()  # a folder where the picture should go
    with pytest.raises(IsADirectoryError) as refused:
        plot_training(result, target)
    assert refused.value.filename == str(target) and refused.value.filename2 is None
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]  # no temporary file left behind


def test_training_without_numpy_runs_eagerly(run_python, tmp_path):
    # numpy is optional for train() on a data set given as lists: without it every step is eager.
    stub = tmp_path / "numpy"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('No module named numpy (hidden by a test)')\n")
    code = """
from chainrule.datasets import Dataset
from chainrule.training import DivergedError, train
X = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.9], [0.9, 0.4]]
data = Dataset("toy", X, [1, 0, 1, 0], [], [], 2)
result = train(data, steps=3, hidden=[3])
assert result.settings["compile"] is False and len(result.losses) == 3
try:
    train(data, steps=1, lr=1e308, hidden=[3])
except DivergedError as error:
    print(error)
"""
    import os

    paths = [str(tmp_path), os.environ.get("PYTHONPATH", "")]
    done = run_python(code, env={"PYTHONPATH": os.pathsep.join(filter(None, paths))})
    assert done.stdout.startswith("training diverged after the last step")


# ---------------------------------------------------------------------------------------------
# The language-model recipe (names): the GPT scripts' training run


def _script_names(script):
    from chainrule.datasets import TextDataset

    chars = "".join(script.vocabulary(script.NAMES))
    return script, TextDataset("names", list(script.NAMES), chars)


def test_the_names_recipe_is_the_scripts_training_run_step_for_step(gpt_style):
    # The scripts' loop (benchmarks/gpt_style.py) on their minimal engine, with their own Adam
    # (betas 0.85, 0.99) and schedule (0.01 falling linearly to 0), one name per step, against
    # train() on the same names from the same seed: the scripts draw the weights with
    # random.Random(seed) in the order chainrule's GPT draws them from the seeded global random.
    script, data = _script_names(gpt_style)
    steps, seed = 6, 42
    params = script.init_params(script.MinimalValue, len(data.chars) + 1, seed)
    adam = script.adam_state(params)
    expected = [
        script.step(params, script.encode(script.NAMES[k], list(data.chars)), adam, script.lr_at(k, steps))
        for k in range(steps)
    ]
    reports = []
    result = train(data, steps=steps, seed=seed, compile=False, progress=reports.append)
    assert result.losses == pytest.approx(expected, rel=1e-9)
    assert [r.accuracy for r in reports] == [None] * steps and result.accuracies == []
    assert result.train_accuracy is None and result.test_accuracy is None
    assert len(result.samples) == 10 and result.language_model
    assert result.settings["optimizer"] == "adam" and result.settings["lr"] == 0.01
    assert result.settings["samples"] == len(script.NAMES)


def test_names_training_goes_round_the_documents_again():
    from chainrule.datasets import TextDataset

    data = TextDataset("names", ["ab", "ba"], "ab")
    result = train(data, steps=5, samples=1, compile=False)
    assert len(result.losses) == 5 and result.settings["samples"] == 1
    assert result.losses[-1] < result.losses[0]  # one name over and over: it learns it


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden": [4]}, "train: hidden: options of the MLP recipes, not of names"),
        ({"activation": "tanh", "alpha": 0.0}, "train: activation, alpha: options of the MLP recipes"),
        ({"optimizer": "sgd"}, r"optimizer must be one of \('adam',\) for names"),
        ({"samples": 500}, "samples=500 but names has only 228 documents"),
    ],
)
def test_names_refuses_options_it_does_not_take(gpt_style, options, message):
    _, data = _script_names(gpt_style)
    with pytest.raises(ValueError, match=message):
        train(data, steps=1, compile=False, **options)


def test_names_runs_compiled_by_default(gpt_style):
    # compile replays chainrule.take with each call's index, so the GPT trains compiled like the MLPs.
    pytest.importorskip("numpy")
    _, data = _script_names(gpt_style)
    assert train(data, steps=2).settings["compile"] is True
    assert train(data, steps=2, compile=False).settings["compile"] is False


def test_the_names_figure_shows_the_loss_curve_and_the_samples(gpt_style, tmp_path):
    pytest.importorskip("matplotlib")
    from chainrule.plots import _running_mean, plot_training, training_figure

    _, data = _script_names(gpt_style)
    result = train(data, steps=3, compile=False)
    figure = training_figure(result)
    curve, names = figure.axes
    assert [line.get_ydata().tolist() for line in curve.get_lines()][0] == result.losses
    assert [text.get_text() for text in names.texts] == [name or "(empty)" for name in result.samples]
    assert "mean loss" in figure._suptitle.get_text()
    assert plot_training(result, tmp_path / "names.png").read_bytes()[:4] == b"\x89PNG"
    assert _running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
