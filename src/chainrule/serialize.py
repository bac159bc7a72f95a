"""Checkpoints: save a module to a JSON file, and load it back as a new module.

A checkpoint is plain JSON text, never a pickle, so loading one cannot run code: the file
names its module type, which must be one of a short whitelist (Neuron, Layer, MLP), and
holds only numbers, strings and booleans. Version 1 of the format looks like this::

    {
      "format": "chainrule-checkpoint",
      "version": 1,
      "architecture": {"type": "MLP", "nin": 2, "nouts": [16, 16, 1], "activation": "relu"},
      "state": {
        "layers.0.neurons.0.w": [0.6888437030500962, 0.515908805880605],
        "layers.0.neurons.0.b": 0.0,
        ...
      }
    }

``state`` is ``Module.state_dict()``: one line per weight vector or bias, named by its path
through the model. Floats are written with Python's shortest round-tripping ``repr``, so a
loaded model is bit-for-bit the saved one. A checkpoint holds finite numbers only: saving a
model with a nan or infinite weight (usually the sign of a diverged training run) raises
``CheckpointError`` instead of writing a file that other JSON readers would reject.

``save`` writes a temporary file next to the target, flushes it to disk and renames it over
the target in one step (``os.replace``), so a crash during a save leaves the previous
checkpoint as it was. ``load`` checks everything it reads and reports what is wrong with a
``CheckpointError`` (a ``ValueError``).

>>> import os, random, tempfile
>>> from chainrule import save, load
>>> from chainrule.nn import MLP
>>> random.seed(0)
>>> model = MLP(2, [4, 1])
>>> with tempfile.TemporaryDirectory() as folder:
...     path = os.path.join(folder, "model.json")
...     save(model, path)
...     copy = load(path)
>>> copy
MLP(2, [4, 1], activation='relu')
>>> copy.state_dict() == model.state_dict()
True
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import random
import uuid
from collections.abc import Callable, Iterator

from .nn import ACTIVATIONS, MLP, Layer, Module, Neuron

__all__ = ["FORMAT", "VERSION", "CheckpointError", "from_architecture", "load", "save", "state_problems"]

FORMAT = "chainrule-checkpoint"
VERSION = 1
_TOP_LEVEL_KEYS = ("format", "version", "architecture", "state")


class CheckpointError(ValueError):
    """A checkpoint or a state dict that cannot be used: the message says what is wrong."""


# ---------------------------------------------------------------------------------------------
# Checking a state dict against the shapes a module needs.


def _number_problem(x, where: str) -> str | None:
    """Why ``x`` cannot be a parameter's value, or None if it can."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return f"{where} is {x!r} ({type(x).__name__}), not a number"
    try:
        finite = math.isfinite(float(x))
    except OverflowError:
        finite = False
    if not finite:
        return f"{where} is {x!r}; a checkpoint holds finite numbers only"
    return None


def _list_keys(keys: list) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def state_problems(state, shapes: dict[str, int | None]) -> list[str]:
    """Everything that stops ``state`` from filling a module whose entries have ``shapes``.

    ``shapes`` maps each name to the length of its list of numbers, or to None for a single
    number. The result is an empty list when ``state`` fits.

    >>> state_problems({"w": [1.0, "x"], "c": 2.0}, {"w": 2, "b": None})
    ["missing key 'b'", "unexpected key 'c'", "w[1] is 'x' (str), not a number"]
    """
    if not isinstance(state, dict):
        return [f"a state must be a dict of names to numbers, not {type(state).__name__}"]
    problems = []
    missing = [name for name in shapes if name not in state]
    unexpected = [name for name in state if name not in shapes]
    if missing:
        problems.append(f"missing key{'s' if len(missing) > 1 else ''} {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected key{'s' if len(unexpected) > 1 else ''} {_list_keys(unexpected)}")
    for name, length in shapes.items():
        if name not in state:
            continue
        value = state[name]
        if length is None:
            problem = _number_problem(value, name)
        elif not isinstance(value, (list, tuple)):
            problem = f"{name} should be a list of {length} numbers, not {type(value).__name__}"
        elif len(value) != length:
            problem = f"{name} has {len(value)} numbers, the model needs {length}"
        else:
            found = (_number_problem(x, f"{name}[{i}]") for i, x in enumerate(value))
            problem = next((p for p in found if p), None)
        if problem:
            problems.append(problem)
    if len(problems) > 6:
        problems = problems[:6] + [f"and {len(problems) - 6} more problems"]
    return problems


# ---------------------------------------------------------------------------------------------
# Architectures: the whitelist of module types a checkpoint may name, and how to build each.


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _field_problem(key: str, value) -> str | None:
    if key in ("nin", "nout") and not _positive_int(value):
        return f"{key} must be a positive integer, not {value!r}"
    if key == "nouts" and not (isinstance(value, list) and value and all(map(_positive_int, value))):
        return f"nouts must be a non-empty list of positive integers, not {value!r}"
    if key == "nonlin" and not isinstance(value, bool):
        return f"nonlin must be true or false, not {value!r}"
    if key == "activation" and value not in ACTIVATIONS:
        return f"activation must be one of {', '.join(ACTIVATIONS)}, not {value!r}"
    return None


def _mlp_parameter_count(nin: int, nouts: list[int]) -> int:
    sizes = [nin, *nouts]
    return sum(nout * (n + 1) for n, nout in zip(sizes[:-1], nouts, strict=True))


# Each type's fields, its number of parameters, and its constructor. Nothing outside this
# table can be built from a file.
_TYPES: dict[str, tuple[tuple[str, ...], Callable[[dict], int], Callable[[dict], Module]]] = {
    "Neuron": (
        ("nin", "nonlin", "activation"),
        lambda a: a["nin"] + 1,
        lambda a: Neuron(a["nin"], nonlin=a["nonlin"], activation=a["activation"]),
    ),
    "Layer": (
        ("nin", "nout", "nonlin", "activation"),
        lambda a: a["nout"] * (a["nin"] + 1),
        lambda a: Layer(a["nin"], a["nout"], nonlin=a["nonlin"], activation=a["activation"]),
    ),
    "MLP": (
        ("nin", "nouts", "activation"),
        lambda a: _mlp_parameter_count(a["nin"], a["nouts"]),
        lambda a: MLP(a["nin"], a["nouts"], activation=a["activation"]),
    ),
}


def _architecture_problem(architecture) -> str | None:
    """Why ``architecture`` does not describe a module a checkpoint may hold, or None."""
    if not isinstance(architecture, dict):
        return f"the architecture must be a JSON object, not {_json_type(architecture)}"
    kind = architecture.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        return f"the architecture type {kind!r} is not one a checkpoint may hold ({', '.join(_TYPES)})"
    fields = _TYPES[kind][0]
    missing = [key for key in fields if key not in architecture]
    unexpected = [key for key in architecture if key != "type" and key not in fields]
    if missing:
        return f"the {kind} architecture is missing {_list_keys(missing)}"
    if unexpected:
        return f"the {kind} architecture has unexpected {_list_keys(unexpected)}"
    for key in fields:
        problem = _field_problem(key, architecture[key])
        if problem:
            return f"in the {kind} architecture, {problem}"
    return None


def from_architecture(architecture: dict) -> Module:
    """Build a fresh module from a dict made by ``Module.architecture()``.

    Only Neuron, Layer and MLP can be built; anything else raises ``CheckpointError``. The
    new module's weights are random, as from its constructor, but the global ``random``
    state is left as it was.

    >>> from_architecture({"type": "MLP", "nin": 2, "nouts": [16, 16, 1], "activation": "relu"})
    MLP(2, [16, 16, 1], activation='relu')
    """
    problem = _architecture_problem(architecture)
    if problem:
        raise CheckpointError(problem)
    build = _TYPES[architecture["type"]][2]
    # The constructors draw initial weights from the global random module; loading a model
    # should not shift the random numbers a user's program sees next.
    random_state = random.getstate()
    try:
        return build(architecture)
    finally:
        random.setstate(random_state)


def _parameter_count(architecture: dict) -> int:
    return _TYPES[architecture["type"]][1](architecture)


# ---------------------------------------------------------------------------------------------
# Saving.


def _json_lines(document: dict) -> Iterator[str]:
    """The checkpoint's JSON text, piece by piece: one line per top-level key and per state entry."""
    yield "{\n"
    for key in ("format", "version", "architecture"):
        yield f"  {json.dumps(key)}: {json.dumps(document[key], allow_nan=False)},\n"
    yield '  "state": {'
    separator = "\n"
    for name, value in document["state"].items():
        yield f"{separator}    {json.dumps(name)}: {json.dumps(value, allow_nan=False)}"
        separator = ",\n"
    yield "\n  }\n}\n"


def _sync_folder(folder: str) -> None:
    """Flush the folder's list of names to disk, so the rename itself survives a power cut."""
    if os.name != "posix":  # elsewhere a folder cannot be opened for fsync
        return
    with contextlib.suppress(OSError):  # some file systems refuse; the file's data is already safe
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(path: str, chunks: Iterator[str]) -> None:
    """Write ``chunks`` to ``path`` so that ``path`` holds either its old content or all of the new."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "cannot save the checkpoint: no such folder", folder)
    # The temporary file lives in the same folder, because a rename is atomic only within one
    # file system. os.open with mode 0o666 lets the user's umask set the permissions, as for
    # any new file; O_EXCL makes sure we never write into someone else's file.
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the new name points at it
        os.replace(temporary, path)
    except BaseException:  # including KeyboardInterrupt: never leave a half-written file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def save(module: Module, path: str | os.PathLike) -> None:
    """Write ``module``'s architecture and parameters to ``path`` as a JSON checkpoint, atomically.

    The folder must exist. Gradients are not saved. A module with a nan or infinite
    parameter is refused with ``CheckpointError``, and the file is left as it was.

    >>> import os, tempfile
    >>> from chainrule.nn import Neuron
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "neuron.json")
    ...     save(Neuron(2), path)
    ...     with open(path) as file:
    ...         for line in file.read().splitlines()[:3]:
    ...             print(line)
    {
      "format": "chainrule-checkpoint",
      "version": 1,
    """
    if not isinstance(module, Module):
        raise TypeError(f"save: expected a chainrule.nn Module, got {type(module).__name__}")
    path = os.fspath(path)
    try:
        architecture = module.architecture()
    except NotImplementedError as error:
        raise TypeError(f"save: {error}") from None
    problem = _architecture_problem(architecture)
    if problem:  # never write a file that load would refuse
        raise CheckpointError(f"cannot save {module!r}: {problem}")
    state = module.state_dict()
    shapes = {name: len(v) if isinstance(v, list) else None for name, v in state.items()}
    problems = state_problems(state, shapes)
    if problems:
        raise CheckpointError(f"cannot save {module!r} to {path}: " + "; ".join(problems))
    document = {"format": FORMAT, "version": VERSION, "architecture": architecture, "state": state}
    _write_atomically(path, _json_lines(document))


# ---------------------------------------------------------------------------------------------
# Loading.


def _json_type(x) -> str:
    """The JSON name of a parsed value's type, for messages about the file."""
    if isinstance(x, bool):
        return "true/false"
    for python_type, name in (
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (type(None), "null"),
    ):
        if isinstance(x, python_type):
            return name
    return "a number"


def _refuse_constant(name: str):
    raise CheckpointError(f"it holds {name}, and a checkpoint holds finite numbers only")


def _parse(raw: bytes, path: str):
    """The JSON document in ``raw``, or a CheckpointError saying why there is none."""
    try:
        text = raw.decode("utf-8-sig")  # tolerate the byte-order mark some editors add
    except UnicodeDecodeError as error:
        raise CheckpointError(
            f"checkpoint {path} is not a chainrule checkpoint: it is not UTF-8 text "
            f"(byte {error.start} is {raw[error.start]:#04x})"
        ) from None
    if not text.strip():
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        cut_short = error.pos >= len(text.rstrip())
        hint = "; the file ends too early, was the save cut short?" if cut_short else ""
        raise CheckpointError(
            f"checkpoint {path} is not valid JSON "
            f"(line {error.lineno}, column {error.colno}: {error.msg}){hint}"
        ) from None
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path} is not usable: {error}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer with too many digits, deep nesting
        raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from None


def _check_header(document, path: str) -> None:
    if not isinstance(document, dict):
        raise CheckpointError(
            f"checkpoint {path} should hold a JSON object, but holds {_json_type(document)}"
        )
    if document.get("format") != FORMAT:
        found = f"its format is {document['format']!r}" if "format" in document else "missing key 'format'"
        raise CheckpointError(f"{path} is not a chainrule checkpoint: {found}, expected {FORMAT!r}")
    if "version" not in document:
        raise CheckpointError(f"checkpoint {path} is missing key 'version'")
    version = document["version"]
    if version != VERSION or isinstance(version, bool):
        newer = _positive_int(version) and version > VERSION
        written_by = ", written by a newer chainrule" if newer else ""
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}{written_by}; "
            f"this chainrule reads version {VERSION}"
        )
    for key in _TOP_LEVEL_KEYS:
        if key not in document:
            raise CheckpointError(f"checkpoint {path} is missing key {key!r}")
    unexpected = [key for key in document if key not in _TOP_LEVEL_KEYS]
    if unexpected:
        raise CheckpointError(f"checkpoint {path} has unexpected key(s) {_list_keys(unexpected)}")


def _state_size(state: dict) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for v in state.values())


def load(path: str | os.PathLike) -> Module:
    """Read a checkpoint written by ``save`` and return the module it describes.

    A missing file raises ``FileNotFoundError``; a file that is not a usable checkpoint
    (not JSON, cut short, another format or version, an unknown module type, numbers that
    do not fit the architecture) raises ``CheckpointError`` saying what is wrong.

    >>> load("no/such/checkpoint.json")
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] no such checkpoint file: 'no/such/checkpoint.json'
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", path) from None
    document = _parse(raw, path)
    _check_header(document, path)
    architecture, state = document["architecture"], document["state"]
    problem = _architecture_problem(architecture)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: 'state' should be a JSON object, not {_json_type(state)}")
    # Refuse to build a model bigger than the file could fill, so that a damaged architecture
    # ("nin": 1000000000000) fails at once instead of allocating memory without end.
    needed, held = _parameter_count(architecture), _state_size(state)
    if needed > held:
        raise CheckpointError(
            f"checkpoint {path}: its architecture needs {needed} parameters, but its state holds only {held}"
        )
    module = from_architecture(architecture)
    try:
        module.load_state_dict(state)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    return module
