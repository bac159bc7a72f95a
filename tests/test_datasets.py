"""chainrule.datasets: plain lists from scikit-learn's generators, seeded, split, labelled 0..k-1."""

import sys

import numpy as np
import pytest

from chainrule import datasets
from chainrule.datasets import Dataset, blobs, circles, digits, moons

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _is_plain(data: Dataset) -> bool:
    """Lists of Python floats and ints all the way down (no numpy types leak out)."""
    rows = data.X_train + data.X_test
    labels = data.y_train + data.y_test
    return (
        all(type(row) is list and all(type(x) is float for x in row) for row in rows)
        and all(type(y) is int for y in labels)
        and type(data.X_train) is list
        and type(data.y_train) is list
    )


@pytest.mark.parametrize(
    "make, n_features, n_classes",
    [
        (lambda **kw: moons(n_samples=40, **kw), 2, 2),
        (lambda **kw: circles(n_samples=40, **kw), 2, 2),
        (lambda **kw: blobs(n_samples=40, centers=4, **kw), 2, 4),
    ],
)
def test_generated_sets_shapes_labels_and_split(make, n_features, n_classes):
    whole = make(seed=3)
    assert len(whole.X_train) == len(whole.y_train) == 40
    assert whole.X_test == [] and whole.y_test == []
    assert whole.n_features == n_features
    assert whole.n_classes == n_classes
    assert set(whole.y_train) == set(range(n_classes))
    assert _is_plain(whole)

    split = make(seed=3, test_size=0.25)
    assert (len(split.X_train), len(split.X_test)) == (30, 10)  # 25% of 40 held out
    assert len(split.y_train) == 30 and len(split.y_test) == 10
    assert _is_plain(split)
    # The split only moves examples: together they are the unsplit data set.
    pairs = sorted(zip(map(tuple, whole.X_train), whole.y_train))
    assert sorted(zip(map(tuple, split.X_train + split.X_test), split.y_train + split.y_test)) == pairs


@pytest.mark.parametrize("make", [moons, circles, blobs, digits])
def test_same_seed_same_data_other_seed_other_data(make):
    kwargs = {} if make is digits else {"test_size": 0.2}
    assert make(seed=5, **kwargs) == make(seed=5, **kwargs)
    assert make(seed=5, **kwargs) != make(seed=6, **kwargs)


def test_moons_with_seed_1337_is_micrograd_demo_data():
    # The demo calls np.random.seed(1337) and then make_moons(n_samples=100, noise=0.1).
    state = np.random.get_state()
    try:
        np.random.seed(1337)
        X, y = sklearn_datasets.make_moons(n_samples=100, noise=0.1)
    finally:
        np.random.set_state(state)
    data = moons(n_samples=100, noise=0.1, seed=1337)
    assert data.X_train == X.tolist()
    assert data.y_train == y.tolist()


def test_circles_inner_circle_is_class_1_at_the_given_factor():
    data = circles(n_samples=20, noise=0.0, factor=0.3, seed=0)
    for (x, y), label in zip(data.X_train, data.y_train):
        radius = (x * x + y * y) ** 0.5
        assert radius == pytest.approx(0.3 if label == 1 else 1.0)


def test_blobs_with_given_centres():
    data = blobs(n_samples=6, centers=[[0, 0, 0], [10, 10, 10]], cluster_std=0.0, seed=0)
    assert data.n_classes == 2 and data.n_features == 3
    for row, label in zip(data.X_train, data.y_train):
        assert row == [10.0 * label] * 3


def test_digits_are_sklearn_images_scaled_to_unit_interval():
    data = digits(seed=0)
    assert (len(data.X_train), len(data.X_test)) == (1437, 360)  # 20% of 1797, rounded up, held out
    assert data.n_features == 64 and data.n_classes == 10
    assert set(data.y_train) == set(range(10))
    assert _is_plain(data)
    loaded = sklearn_datasets.load_digits()
    expected = sorted(zip(map(tuple, (loaded.data / 16.0).tolist()), loaded.target.tolist()))
    got = sorted(zip(map(tuple, data.X_train + data.X_test), data.y_train + data.y_test))
    assert got == expected
    pixels = [x for row in data.X_train for x in row]
    assert min(pixels) == 0.0 and max(pixels) == 1.0


def test_load_by_name():
    assert datasets.load("moons", n_samples=10, seed=1) == moons(n_samples=10, seed=1)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        datasets.load("mnist")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: moons(n_samples=0), ValueError, "n_samples must be at least 2"),
        (lambda: moons(n_samples=2.5), TypeError, "n_samples must be an integer"),
        (lambda: moons(noise=-0.1), ValueError, "noise must be a finite number >= 0"),
        (lambda: moons(noise=float("nan")), ValueError, "noise must be a finite number >= 0"),
        (lambda: moons(seed=-1), ValueError, "seed must be between 0 and 2\\*\\*32 - 1"),
        (lambda: moons(seed="a"), TypeError, "seed must be an integer"),
        (lambda: moons(test_size=1.0), ValueError, "test_size must be a fraction in \\[0, 1\\)"),
        (lambda: moons(n_samples=2, test_size=0.9), ValueError, "leaves none for training"),
        (lambda: circles(factor=1.5), ValueError, "factor must be in \\[0, 1\\)"),
        (lambda: blobs(n_samples=2, centers=3), ValueError, "2 samples cannot fill 3 clusters"),
        (lambda: blobs(centers=[[0, 0], [1]]), ValueError, "same number of coordinates"),
        (lambda: blobs(centers="abc"), TypeError, "a number of clusters or a list of points"),
        (lambda: digits(test_size=-0.1), ValueError, "test_size must be a fraction"),
    ],
)
def test_bad_arguments_are_refused_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import sklearn...` fail
    with pytest.raises(ImportError, match=r'pip install "chainrule\[demo\]"'):
        moons()
