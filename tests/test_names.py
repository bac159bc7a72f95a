"""chainrule.datasets.names: the first names of the ``names`` package, ready for a language model."""

import builtins
import os
import sys

import pytest

names_package = pytest.importorskip("names")

from chainrule import datasets  # noqa: E402


def names_in_the_package_files():
    """The oracle: the files read directly by their path, one capitalised name per line."""
    folder = os.path.dirname(names_package.__file__)
    found = set()
    for filename in ("dist.female.first", "dist.male.first"):
        with open(os.path.join(folder, filename)) as file:
            found |= {line.split()[0].lower() for line in file if line.strip()}
    return found


def test_every_first_name_once_in_lower_case():
    data = datasets.names()
    assert data.name == "names"
    assert len(data.documents) == len(set(data.documents))
    assert set(data.documents) == names_in_the_package_files()
    assert all(name.isalpha() and name.islower() for name in data.documents)
    assert data.chars == "".join(sorted(set("".join(data.documents))))


def test_the_seed_fixes_the_shuffle():
    first, again, other = datasets.names(seed=3), datasets.names(seed=3), datasets.names(seed=4)
    assert first.documents == again.documents
    assert first.documents != other.documents
    assert sorted(first.documents) == sorted(other.documents)
    assert first.documents != sorted(first.documents)


def test_max_length_drops_longer_names():
    data = datasets.names(max_length=5)
    expected = {name for name in names_in_the_package_files() if len(name) <= 5}
    assert set(data.documents) == expected
    assert 0 < len(expected) < len(names_in_the_package_files())


def test_load_knows_names():
    assert datasets.load("names", seed=1) == datasets.names(seed=1)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": -1}, ValueError, "names: seed must be at least 0"),
        ({"seed": 1.5}, TypeError, "names: seed must be an integer"),
        ({"max_length": 0}, ValueError, "names: max_length must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.names(**kwargs)


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_names(name, *args, **kwargs):
        if name == "names":
            raise ModuleNotFoundError("No module named 'names'", name="names")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "names")
    monkeypatch.setattr(builtins, "__import__", no_names)
    monkeypatch.setattr("importlib.import_module", lambda name, package=None: no_names(name))
    with pytest.raises(ImportError, match=r'needs the names package: pip install "chainrule\[demo\]"'):
        datasets.names()
