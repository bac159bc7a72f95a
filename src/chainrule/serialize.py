"""Checkpoints: save a module to a JSON file, and load it back as a new module.

A checkpoint is plain JSON text, never a pickle, so loading one cannot run code: the file
names its module type, which must be one of a short whitelist (Neuron, Layer, MLP, GPT: the
types registered for checkpoints), and holds only numbers, strings and booleans. Version 1 of
the format looks like this::

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
checkpoint as it was; the next save of the same checkpoint removes a temporary file that a
killed save left behind. ``load`` reads regular files of at most ``MAX_CHECKPOINT_BYTES``
describing at most ``MAX_CHECKPOINT_PARAMETERS`` parameters only, checks everything it reads
before building the module, and reports what is wrong with a ``CheckpointError`` (a
``ValueError``).

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

import errno
import json
import os
import random
from collections.abc import Iterator
from typing import Any, NamedTuple, NoReturn

from ._checks import is_integer
from ._files import NotRegularFileError, refuse_special_file, write_atomically
from ._state import CheckpointError, list_keys, state_problems
from .gpt import GPT  # noqa: F401 (registers GPT for checkpoints)
from .nn import CHECKPOINT_TYPES, Module, SkeletonTooBig, skeleton, state_shapes

__all__ = [
    "FORMAT",
    "MAX_CHECKPOINT_BYTES",
    "MAX_CHECKPOINT_PARAMETERS",
    "VERSION",
    "CheckpointError",
    "architecture_shapes",
    "from_architecture",
    "load",
    "save",
    "state_problems",
]

FORMAT = "chainrule-checkpoint"
VERSION = 1

# The largest checkpoint load will read, and save will write: two limits, both checked before
# anything is built. A parameter takes 2 to about 25 bytes of JSON ("0," to a long float),
# so bytes alone do not bound the work: load builds a Value per parameter (some microseconds
# and a few hundred bytes each), so the count of parameters is limited too, and checked
# twice: before parsing, by counting the file's commas and brackets (a bound on how many
# JSON values the parser would make), and after it, from the architecture. 300,000
# parameters is more than an MNIST MLP 784-256-256-10, far more than a scalar engine trains,
# and the worst such file loads in about 5 s and 300 MB (a GPT of width 1, whose every
# parameter is a row of its own). Raise them (``chainrule.serialize.MAX_CHECKPOINT_BYTES =
# ...``, ``MAX_CHECKPOINT_PARAMETERS``) to load a bigger model.
MAX_CHECKPOINT_BYTES = 32 * 1024 * 1024
MAX_CHECKPOINT_PARAMETERS = 300_000
_TOP_LEVEL_KEYS = ("format", "version", "architecture", "state")


# ---------------------------------------------------------------------------------------------
# Architectures. A checkpoint may name only a module type registered for checkpoints
# (``nn.CHECKPOINT_TYPES``: Neuron, Layer, MLP and GPT, and a user's ``class Mine(Module,
# checkpoint=True)``); the type lists its constructor's arguments, and its constructor checks
# them. Before a module is built for real, a skeleton of it (``nn.skeleton``: the constructor
# with one stand-in object per weight vector, drawing no random numbers) gives the names and
# shapes of its state and its number of parameters, from the module's own walk.


class _Skeleton(NamedTuple):
    """A skeleton's state shapes and its number of parameters (None: more than the limit of stand-ins)."""

    shapes: dict[str, int | None]
    parameter_count: int | None


def _constructor_arguments(architecture: object) -> tuple[type[Module], dict[str, Any]]:
    """The module type an architecture names and the arguments to build it with, or a CheckpointError."""
    if not isinstance(architecture, dict):
        raise CheckpointError(f"the architecture must be a JSON object, not {_json_type(architecture)}")
    kind = architecture.get("type")
    if not isinstance(kind, str) or kind not in CHECKPOINT_TYPES:
        raise CheckpointError(
            f"the architecture type {kind!r} is not one a checkpoint may hold ({', '.join(CHECKPOINT_TYPES)})"
        )
    cls = CHECKPOINT_TYPES[kind]
    optional = cls.optional_arguments
    missing = [key for key in cls.arguments if key not in architecture and key not in optional]
    unexpected = [key for key in architecture if key != "type" and key not in cls.arguments]
    if missing:
        raise CheckpointError(f"the {kind} architecture is missing {list_keys(missing)}")
    if unexpected:
        raise CheckpointError(f"the {kind} architecture has unexpected {list_keys(unexpected)}")
    return cls, {key: architecture.get(key, optional.get(key)) for key in cls.arguments}


def _refused_by_constructor(kind: str, error: Exception) -> CheckpointError:
    # The constructor says "MLP: nin must be ..."; the message names the architecture instead.
    message = str(error).removeprefix(f"{kind}: ")
    return CheckpointError(f"in the {kind} architecture, {message}")


def _skeleton(architecture: object, limit: int | None = None) -> _Skeleton:
    """The state shapes and parameter count of the module ``architecture`` describes, without building it."""
    cls, arguments = _constructor_arguments(architecture)
    try:
        bones = skeleton(cls, arguments, limit)
    except SkeletonTooBig:
        return _Skeleton({}, None)
    except (TypeError, ValueError) as error:
        raise _refused_by_constructor(cls.__name__, error) from None
    shapes = state_shapes(bones.state_entries())
    return _Skeleton(shapes, sum(1 if n is None else n for n in shapes.values()))


def from_architecture(architecture: dict) -> Module:
    """Build a fresh module from a dict made by ``Module.architecture()``.

    Only the types registered for checkpoints can be built (Neuron, Layer, MLP and GPT);
    anything else, and arguments the constructor refuses, raise ``CheckpointError``. The new
    module's weights are random, as from its constructor, but the global ``random`` state is
    left as it was.

    >>> from_architecture({"type": "MLP", "nin": 2, "nouts": [16, 16, 1], "activation": "relu"})
    MLP(2, [16, 16, 1], activation='relu')
    """
    cls, arguments = _constructor_arguments(architecture)
    # The constructors draw initial weights from the global random module; loading a model
    # should not shift the random numbers a user's program sees next.
    random_state = random.getstate()
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise _refused_by_constructor(cls.__name__, error) from None
    finally:
        random.setstate(random_state)


def architecture_shapes(architecture: dict) -> dict[str, int | None]:
    """The names and shapes of the state a module built from ``architecture`` has, without building it.

    Each name maps to the length of its list of numbers, or to None for a single number, as
    ``state_problems`` expects. Raises ``CheckpointError`` for an architecture
    ``from_architecture`` would refuse.

    >>> architecture_shapes({"type": "Layer", "nin": 3, "nout": 2, "nonlin": True, "activation": "relu"})
    {'neurons.0.w': 3, 'neurons.0.b': None, 'neurons.1.w': 3, 'neurons.1.b': None}
    """
    return _skeleton(architecture).shapes


def _parameter_count(architecture: dict) -> int:
    count = _skeleton(architecture).parameter_count
    assert count is not None  # (no limit, so it was counted)
    return count


# ---------------------------------------------------------------------------------------------
# Files. Checkpoints are read from and written to regular files only: a FIFO would block a
# read until some writer came along, a device such as /dev/zero never ends, and replacing a
# device or a folder is never what a save means.


def _refuse_special_file(mode: int, path: str, context: str) -> None:
    """Raise unless ``mode`` (an ``st_mode``) is a regular file's; ``context`` starts the message."""
    try:
        refuse_special_file(mode, path, context)
    except NotRegularFileError as error:
        raise CheckpointError(str(error)) from None


def _too_big(path: str, size: str, limit: int) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is {size} than the limit of {limit} bytes "
        "(chainrule.serialize.MAX_CHECKPOINT_BYTES; raise it to load a bigger model)"
    )


def _read_checkpoint(path: str) -> bytes:
    """The bytes of the file at ``path``: a regular file of at most MAX_CHECKPOINT_BYTES bytes."""
    limit = MAX_CHECKPOINT_BYTES
    try:
        info = os.stat(path)
        _refuse_special_file(info.st_mode, path, "checkpoint ")
        if info.st_size > limit:
            raise _too_big(path, f"{info.st_size} bytes, more", limit)
        # If the name was given to a FIFO since the check, O_NONBLOCK keeps the open from
        # waiting for a writer; for a regular file it changes nothing.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", path) from None
    with open(fd, "rb") as file:
        _refuse_special_file(os.fstat(fd).st_mode, path, "checkpoint ")  # the file actually opened
        raw = file.read(limit + 1)  # one byte more tells a file that grew since the check
    if len(raw) > limit:
        raise _too_big(path, "larger", limit)
    return raw


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


def _limited(chunks: Iterator[str], path: str) -> Iterator[bytes]:
    """``chunks`` as UTF-8, refusing to go past MAX_CHECKPOINT_BYTES: never write a file load would refuse."""
    size = 0
    for chunk in chunks:
        data = chunk.encode("utf-8")
        size += len(data)
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"cannot save the checkpoint to {path}: it would be larger than the limit "
                f"of {MAX_CHECKPOINT_BYTES} bytes that load reads "
                "(chainrule.serialize.MAX_CHECKPOINT_BYTES)"
            )
        yield data


def _write_checkpoint(path: str, chunks: Iterator[str]) -> None:
    """Write the checkpoint's text through the one atomic writer (see ``chainrule._files``)."""
    try:
        write_atomically(path, _limited(chunks, path), what="the checkpoint")
    except NotRegularFileError as error:  # a FIFO or a device at the path
        raise CheckpointError(str(error)) from None


def save(module: Module, path: str | os.PathLike) -> None:
    """Write ``module``'s architecture and parameters to ``path`` as a JSON checkpoint, atomically.

    The folder must exist. Gradients are not saved. A module with a nan or infinite
    parameter is refused with ``CheckpointError``, and the file is left as it was. Saving
    over a file keeps its permissions; saving to a symlink writes to the file it points to.
    A failure to write raises an ``OSError`` naming ``path``.

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
    path = os.fsdecode(path)
    try:
        architecture = module.architecture()
    except NotImplementedError as error:
        raise TypeError(f"save: {error}") from None
    # architecture() has checked that the module is what its constructor builds from it, so
    # its state is the one load will expect; never write a file that load would refuse.
    state = module.state_dict()
    if _state_size(state) > MAX_CHECKPOINT_PARAMETERS:
        raise CheckpointError(f"cannot save {module!r}: {_too_many_parameters(_state_size(state))}")
    shapes = {name: len(v) if isinstance(v, list) else None for name, v in state.items()}
    problems = state_problems(state, shapes)
    if problems:
        raise CheckpointError(f"cannot save {module!r} to {path}: " + "; ".join(problems))
    # Plain floats only: a numpy number in a parameter's data is a number, but not one JSON writes.
    state = {name: [float(x) for x in v] if isinstance(v, list) else float(v) for name, v in state.items()}
    document = {"format": FORMAT, "version": VERSION, "architecture": architecture, "state": state}
    _write_checkpoint(path, _json_lines(document))


# ---------------------------------------------------------------------------------------------
# Loading.


def _json_type(x: object) -> str:
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


def _refuse_constant(name: str) -> NoReturn:
    raise CheckpointError(f"it holds {name}, and a checkpoint holds finite numbers only")


def _parse(raw: bytes, path: str) -> Any:  # whatever JSON the file holds, checked by the caller
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


def _check_header(document: object, path: str) -> None:
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
        newer = is_integer(version) and version > VERSION
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
        raise CheckpointError(f"checkpoint {path} has unexpected key(s) {list_keys(unexpected)}")


def _too_many_parameters(count: int | None) -> str:
    """``count`` None: a skeleton that stopped at the limit of stand-ins, so more parameters still."""
    has = f"has {count} parameters, more than" if count is not None else "has more parameters than"
    return (
        f"its architecture {has} the limit of {MAX_CHECKPOINT_PARAMETERS} "
        "(chainrule.serialize.MAX_CHECKPOINT_PARAMETERS; raise it to load a bigger model)"
    )


def _check_value_count(raw: bytes, path: str) -> None:
    """Refuse, before parsing, a file that would make the parser build too many objects.

    Every JSON value but the outermost is an element of an array or an object, and all but the
    first in each follow a comma; so commas plus opening brackets, plus one, bound the count of
    values (those inside strings only make the bound larger). A checkpoint holds a number per
    parameter and at most one array per parameter, hence twice the parameter limit (and room
    for the header). Counting bytes runs at memory speed, before the first number is parsed.
    """
    limit = 2 * MAX_CHECKPOINT_PARAMETERS + 1000
    count = 1 + raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if count > limit:
        raise CheckpointError(
            f"checkpoint {path} may hold up to {count} JSON values (counting its commas and "
            f"brackets), more than the {limit} that a model of at most {MAX_CHECKPOINT_PARAMETERS} "
            "parameters needs (chainrule.serialize.MAX_CHECKPOINT_PARAMETERS; raise it to load a "
            "bigger model)"
        )


def _state_size(state: dict) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for v in state.values())


def load(path: str | os.PathLike) -> Module:
    """Read a checkpoint written by ``save`` and return the module it describes.

    A missing file raises ``FileNotFoundError`` and a folder ``IsADirectoryError``. A file
    that is not a usable checkpoint raises ``CheckpointError`` saying what is wrong: not a
    regular file (a FIFO, a device such as /dev/zero, a socket), larger than
    ``MAX_CHECKPOINT_BYTES`` or than ``MAX_CHECKPOINT_PARAMETERS`` parameters, not JSON, cut
    short, another format or version, an unknown module type, or numbers that do not fit the
    architecture. All of this is checked before the module is built.

    >>> load("no/such/checkpoint.json")
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] no such checkpoint file: 'no/such/checkpoint.json'
    """
    path = os.fsdecode(path)
    raw = _read_checkpoint(path)
    _check_value_count(raw, path)
    document = _parse(raw, path)
    _check_header(document, path)
    architecture, state = document["architecture"], document["state"]
    try:
        _constructor_arguments(architecture)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: 'state' should be a JSON object, not {_json_type(state)}")
    # Refuse a model bigger than the limit or than the file could fill, so that a damaged
    # architecture ("nin": 1000000000000) fails at once: its skeleton stops after as many
    # stand-ins (each one weight or more) as either allows.
    held = _state_size(state)
    try:
        shapes, needed = _skeleton(architecture, limit=min(MAX_CHECKPOINT_PARAMETERS, held))
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    if needed is None and held < MAX_CHECKPOINT_PARAMETERS:
        raise CheckpointError(
            f"checkpoint {path}: its architecture needs more parameters than the {held} its state holds"
        )
    if needed is None or needed > MAX_CHECKPOINT_PARAMETERS:
        raise CheckpointError(f"checkpoint {path}: {_too_many_parameters(needed)}")
    if needed > held:
        raise CheckpointError(
            f"checkpoint {path}: its architecture needs {needed} parameters, but its state holds only {held}"
        )
    # Check every name and shape before building anything: a file whose state does not fit
    # must not cost the time and memory of building the model it names.
    problems = state_problems(state, shapes)
    if problems:
        raise CheckpointError(
            f"checkpoint {path}: the state does not fit its {architecture['type']} architecture: "
            + "; ".join(problems)
        )
    module = from_architecture(architecture)
    try:
        module.load_state_dict(state)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    return module
