"""Toy data sets as plain Python lists, made by scikit-learn's generators and loaders.

chainrule works on Python floats, so every data set comes back as a ``Dataset`` of lists:
``X_train[i]`` is one example (a list of floats) and ``y_train[i]`` its class, an int from
0 to ``n_classes - 1``. ``seed`` fixes both the generated points and the train/test split;
``test_size`` is the fraction held out for testing (0.0, the default for the generated
sets, keeps everything for training, as micrograd's demo does).

scikit-learn does the work (``pip install "chainrule[demo]"``); it is imported only when a
data set is asked for, so ``import chainrule`` stays light.

One data set is text rather than points: ``names()``, the first names shipped by the ``names``
package (also in the demo extra), as a ``TextDataset`` for a character-level language model.

>>> from chainrule.datasets import moons
>>> data = moons(n_samples=10, seed=0, test_size=0.2)
>>> len(data.X_train), len(data.X_test), data.n_features, data.n_classes
(8, 2, 2, 2)
>>> sorted(set(data.y_train + data.y_test))
[0, 1]
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from ._checks import check_integer, check_number, is_integer

if TYPE_CHECKING:
    import numpy

__all__ = ["NAMES", "Dataset", "TextDataset", "blobs", "circles", "digits", "load", "moons", "names"]


class Dataset(NamedTuple):
    """A data set split into training and test examples, all plain Python lists."""

    name: str
    X_train: list[list[float]]
    y_train: list[int]
    X_test: list[list[float]]
    y_test: list[int]
    n_classes: int

    @property
    def n_features(self) -> int:
        """How many numbers make one example (2 for the generated sets, 64 for digits)."""
        return len((self.X_train or self.X_test)[0])


# ---------------------------------------------------------------------------------------------
# Checking arguments, importing scikit-learn, splitting.


def _import_sklearn() -> ModuleType:
    try:
        import sklearn.datasets
        import sklearn.model_selection
    except ImportError:
        raise ImportError(
            'chainrule.datasets needs scikit-learn: pip install "chainrule[demo]"', name="sklearn"
        ) from None
    return sklearn


def _check_seed(where: str, seed: Any) -> int:
    # numpy's random generators, which scikit-learn uses, take seeds from 0 to 2**32 - 1.
    if is_integer(seed) and not 0 <= seed < 2**32:
        raise ValueError(f"{where}: seed must be between 0 and 2**32 - 1, got {seed!r}")
    return check_integer(where, "seed", seed, low=0)  # a TypeError for anything but an integer


def _items(x: Any) -> list[Any] | None:
    """The items of a list, a tuple or a numpy array, as a list; None for anything else."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or not hasattr(x, "__iter__"):
        return None
    try:
        return list(x)
    except TypeError:  # a 0-d numpy array has both methods but no items
        return None


def _check_points(where: str, name: str, points: Any) -> list[list[float]]:
    """``points`` as a non-empty list of equally long lists of finite floats."""
    problem = f"{where}: {name} must be a number of clusters or a list of points, got {points!r}"
    rows = _items(points)
    if not rows:
        raise TypeError(problem)
    checked = []
    for point in rows:
        coordinates = _items(point)
        if not coordinates:
            raise TypeError(problem)
        checked.append([_check_coordinate(where, name, x) for x in coordinates])
    if len({len(point) for point in checked}) != 1:
        raise ValueError(f"{where}: the {name} must all have the same number of coordinates, got {points!r}")
    return checked


def _check_coordinate(where: str, name: str, x: Any) -> float:
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        raise ValueError(f"{where}: every coordinate of the {name} must be a finite number, got {x!r}")
    return float(x)


def _check_test_size(where: str, test_size: float, n_samples: int) -> float:
    """``test_size`` as a float, after checking that both sides of the split get examples."""
    if not isinstance(test_size, numbers.Real) or isinstance(test_size, bool):
        raise TypeError(f"{where}: test_size must be a fraction between 0 and 1, got {test_size!r}")
    if not 0.0 <= test_size < 1.0:
        raise ValueError(f"{where}: test_size must be a fraction in [0, 1), got {test_size!r}")
    n_test = math.ceil(test_size * n_samples)  # how scikit-learn rounds the test side
    if test_size > 0 and n_test >= n_samples:
        raise ValueError(f"{where}: test_size={test_size!r} of {n_samples} examples leaves none for training")
    return float(test_size)


def _as_dataset(
    name: str, X: numpy.ndarray, y: numpy.ndarray, n_classes: int, test_size: float, seed: int
) -> Dataset:
    """Split numpy arrays ``X``, ``y`` and convert them to lists of Python floats and ints."""
    X_test, y_test = X[:0], y[:0]
    if test_size > 0:
        split = _import_sklearn().model_selection.train_test_split
        X, X_test, y, y_test = split(X, y, test_size=test_size, random_state=seed)
    return Dataset(
        name=name,
        X_train=X.astype(float).tolist(),
        y_train=y.astype(int).tolist(),
        X_test=X_test.astype(float).tolist(),
        y_test=y_test.astype(int).tolist(),
        n_classes=n_classes,
    )


# ---------------------------------------------------------------------------------------------
# The data sets.


def moons(n_samples: int = 100, noise: float = 0.1, seed: int = 0, test_size: float = 0.0) -> Dataset:
    """Two interleaving half circles in the plane (scikit-learn's ``make_moons``), 2 classes.

    ``noise`` is the standard deviation of the Gaussian noise added to the points. The
    defaults with ``seed=1337`` give exactly the data of micrograd's demo notebook.

    >>> data = moons(n_samples=6, seed=1)
    >>> len(data.X_train), len(data.X_train[0]), data.X_test
    (6, 2, [])
    """
    where = "moons"
    n_samples = check_integer(where, "n_samples", n_samples, low=2)
    noise, seed = check_number(where, "noise", noise), _check_seed(where, seed)
    test_size = _check_test_size(where, test_size, n_samples)
    X, y = _import_sklearn().datasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _as_dataset("moons", X, y, 2, test_size, seed)


def circles(
    n_samples: int = 100,
    noise: float = 0.1,
    factor: float = 0.5,
    seed: int = 0,
    test_size: float = 0.0,
) -> Dataset:
    """A small circle inside a large one (scikit-learn's ``make_circles``), 2 classes.

    ``factor`` is the inner circle's radius relative to the outer one's (between 0 and 1);
    class 1 is the inner circle.

    >>> data = circles(n_samples=8, noise=0.0, seed=0)
    >>> sorted(round(x * x + y * y, 6) for (x, y), label in zip(data.X_train, data.y_train) if label == 1)
    [0.25, 0.25, 0.25, 0.25]
    """
    where = "circles"
    n_samples = check_integer(where, "n_samples", n_samples, low=2)
    noise, seed = check_number(where, "noise", noise), _check_seed(where, seed)
    factor = check_number(where, "factor", factor)
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"circles: factor must be in [0, 1), got {factor!r}")
    test_size = _check_test_size(where, test_size, n_samples)
    X, y = _import_sklearn().datasets.make_circles(
        n_samples=n_samples, noise=noise, factor=factor, random_state=seed
    )
    return _as_dataset("circles", X, y, 2, test_size, seed)


def blobs(
    n_samples: int = 300,
    centers: int | Sequence[Sequence[float]] = 3,
    cluster_std: float = 1.0,
    n_features: int = 2,
    seed: int = 0,
    test_size: float = 0.0,
) -> Dataset:
    """Gaussian clusters, one per class (scikit-learn's ``make_blobs``).

    ``centers`` is the number of classes, whose centres are then drawn at random in the box
    [-10, 10] in each of the ``n_features`` coordinates, or a list of the centres themselves
    (and then ``n_features`` is their length). Each cluster's points scatter around its
    centre with standard deviation ``cluster_std``.

    >>> data = blobs(n_samples=30, centers=4, seed=0)
    >>> data.n_classes, sorted(set(data.y_train))
    (4, [0, 1, 2, 3])
    >>> data = blobs(n_samples=4, centers=[[0, 0, 0], [5, 5, 5]], cluster_std=0.0)
    >>> sorted(data.X_train)
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
    """
    where = "blobs"
    n_samples = check_integer(where, "n_samples", n_samples)
    if is_integer(centers):
        n_classes = check_integer(where, "centers", centers)
        n_features = check_integer(where, "n_features", n_features)
    else:
        centers = _check_points(where, "centers", centers)
        n_classes, n_features = len(centers), len(centers[0])
    if n_samples < n_classes:
        raise ValueError(f"blobs: {n_samples} samples cannot fill {n_classes} clusters")
    cluster_std, seed = check_number(where, "cluster_std", cluster_std), _check_seed(where, seed)
    test_size = _check_test_size(where, test_size, n_samples)
    X, y = _import_sklearn().datasets.make_blobs(
        n_samples=n_samples,
        centers=centers,
        n_features=n_features,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return _as_dataset("blobs", X, y, n_classes, test_size, seed)


def digits(seed: int = 0, test_size: float = 0.2) -> Dataset:
    """The 1,797 handwritten digits that ship with scikit-learn: 8x8 images, 10 classes.

    Each example is the image's 64 pixels, row by row, scaled from 0..16 to [0, 1].
    ``seed`` fixes the train/test split (the images themselves are fixed).

    >>> data = digits(seed=0)
    >>> len(data.X_train), len(data.X_test), data.n_features, data.n_classes
    (1437, 360, 64, 10)
    >>> min(min(x) for x in data.X_train), max(max(x) for x in data.X_train)
    (0.0, 1.0)
    """
    where = "digits"
    seed = _check_seed(where, seed)
    loaded = _import_sklearn().datasets.load_digits()
    test_size = _check_test_size(where, test_size, len(loaded.target))
    return _as_dataset("digits", loaded.data / 16.0, loaded.target, 10, test_size, seed)


class TextDataset(NamedTuple):
    """Short documents (such as names) for a character-level language model."""

    name: str
    documents: list[str]  # in training order
    chars: str  # every character that occurs in the documents, sorted: token i is chars[i]


NAMES_FILES = ("dist.female.first", "dist.male.first")  # the files of the names package, version 0.3.0


def _names_files() -> list:
    """The first-name files inside the installed ``names`` package."""
    from importlib import resources

    try:
        package = resources.files("names")
    except ModuleNotFoundError:
        raise ImportError(
            'chainrule.datasets.names needs the names package: pip install "chainrule[demo]"', name="names"
        ) from None
    files = [package / name for name in NAMES_FILES]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"names: the installed names package has no {', '.join(missing)}; pip install names==0.3.0"
        )
    return files


def names(seed: int = 0, max_length: int | None = None) -> TextDataset:
    """The first names of the ``names`` package (US census lists, 5,163 of them), in lower case.

    Each line of its files starts with a name in capitals; the names of both files are
    lower-cased, duplicates (a name given to girls and boys) dropped, and the rest shuffled
    with ``random.Random(seed)``. ``max_length`` drops longer names (a model's context
    must hold a whole name). The names are 2 to 11 letters long.

    >>> data = names(seed=0)
    >>> len(data.documents), data.chars
    (5163, 'abcdefghijklmnopqrstuvwxyz')
    >>> names(seed=0).documents[:3] == data.documents[:3] != names(seed=1).documents[:3]
    True
    """
    where = "names"
    seed = check_integer(where, "seed", seed, low=0)
    if max_length is not None:
        max_length = check_integer(where, "max_length", max_length)
    found = set()
    for file in _names_files():
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found.add(line.split()[0].lower())
    documents = sorted(name for name in found if max_length is None or len(name) <= max_length)
    random.Random(seed).shuffle(documents)  # sorted first, so the seed alone fixes the order
    return TextDataset("names", documents, "".join(sorted(set("".join(documents)))))


NAMES = ("moons", "circles", "blobs", "digits", "names")


def load(name: str, **options: Any) -> Dataset | TextDataset:
    """The data set called ``name`` (one of ``NAMES``), made with ``options``.

    >>> load("blobs", n_samples=20, centers=2).n_classes
    2
    """
    makers: dict[str, Callable[..., Dataset | TextDataset]] = {
        "moons": moons,
        "circles": circles,
        "blobs": blobs,
        "digits": digits,
        "names": names,
    }
    if name not in makers:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return makers[name](**options)
