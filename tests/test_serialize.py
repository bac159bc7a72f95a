"""Tests for checkpoints: Module.state_dict/load_state_dict and chainrule.save/load, including
hostile paths and files: special files, huge or crafted checkpoints, long names, symlinks,
permissions, read-only folders, and temporary files left by a killed save."""

import errno
import json
import os
import pickle
import random
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import CheckpointError, Value, _files, load, nn, save, serialize
from chainrule.gpt import GPT
from chainrule.nn import MLP, Layer, Module, Neuron


def snapshot(module):
    """Every parameter's data (as exact hex) and gradient, to tell whether anything changed."""
    return [(p.data.hex(), p.grad) for p in module.parameters()]


@pytest.fixture
def model():
    random.seed(1234)
    m = MLP(2, [16, 16, 1])
    for i, p in enumerate(m.parameters()):
        p.grad = 0.5 * i  # gradients that load_state_dict must leave alone
    return m


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "model.json"
    save(model, path)
    return path


def listing(folder):
    return sorted(os.listdir(folder))


def folder_listing(path):
    return listing(path.parent)


posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX special files")


# ---------------------------------------------------------------------------------------------
# state_dict / load_state_dict


def test_state_dict_names_and_shapes():
    random.seed(0)
    state = MLP(3, [2, 1]).state_dict()
    assert list(state) == [
        "layers.0.neurons.0.w",
        "layers.0.neurons.0.b",
        "layers.0.neurons.1.w",
        "layers.0.neurons.1.b",
        "layers.1.neurons.0.w",
        "layers.1.neurons.0.b",
    ]
    assert [len(state[k]) for k in state if k.endswith(".w")] == [3, 3, 2]
    assert all(type(state[k]) is float for k in state if k.endswith(".b"))
    assert list(Neuron(2).state_dict()) == ["w", "b"]
    assert list(Layer(2, 2).state_dict()) == ["neurons.0.w", "neurons.0.b", "neurons.1.w", "neurons.1.b"]


def test_state_dict_is_a_copy():
    neuron = Neuron(2)
    state = neuron.state_dict()
    state["w"][0] = 99.0
    assert neuron.w[0].data != 99.0


@pytest.mark.parametrize("make", [lambda: Neuron(3), lambda: Layer(3, 4), lambda: MLP(3, [4, 2])])
def test_load_state_dict_copies_data_and_keeps_gradients(make):
    source, target = make(), make()
    for p in target.parameters():
        p.grad = 7.0
    target.load_state_dict(source.state_dict())
    assert [p.data for p in target.parameters()] == [p.data for p in source.parameters()]
    assert all(p.grad == 7.0 for p in target.parameters())


def test_load_state_dict_accepts_integers():
    neuron = Neuron(2)
    neuron.load_state_dict({"w": [1, -2], "b": 3})
    assert [neuron.w[0].data, neuron.w[1].data, neuron.b.data] == [1.0, -2.0, 3.0]
    assert type(neuron.b.data) is float


def broken_states(model):
    """(description, state, text the error must contain) for states that must be refused."""
    good = model.state_dict()

    def changed(**edits):
        state = {k: list(v) if isinstance(v, list) else v for k, v in good.items()}
        for key, value in edits.items():
            key = key.replace("__", ".")
            if value is KeyError:
                del state[key]
            else:
                state[key] = value
        return state

    w, b = "layers__1__neurons__0__w", "layers__2__neurons__0__b"
    return [
        ("missing key", changed(**{b: KeyError}), "missing key 'layers.2.neurons.0.b'"),
        ("unexpected key", {**good, "layers.3.neurons.0.b": 0.0}, "unexpected key 'layers.3.neurons.0.b'"),
        (
            "short list",
            changed(**{w: [0.1, 0.2, 0.3]}),
            "layers.1.neurons.0.w has 3 numbers, the model needs 16",
        ),
        ("number for a list", changed(**{w: 0.5}), "layers.1.neurons.0.w should be a list of 16 numbers"),
        ("list for a number", changed(**{b: [0.5]}), "layers.2.neurons.0.b is [0.5] (list), not a number"),
        ("string", changed(**{b: "0.5"}), "layers.2.neurons.0.b is '0.5' (str), not a number"),
        ("bool", changed(**{b: True}), "layers.2.neurons.0.b is True (bool), not a number"),
        ("None in a list", changed(**{w: [0.0] * 15 + [None]}), r"layers.1.neurons.0.w[15] is None"),
        ("nan", changed(**{b: float("nan")}), "layers.2.neurons.0.b is nan; a checkpoint holds finite"),
        ("inf in a list", changed(**{w: [float("inf")] + [0.0] * 15}), "layers.1.neurons.0.w[0] is inf"),
        ("huge int", changed(**{b: 10**400}), "a checkpoint holds finite numbers only"),
        ("not a dict", list(good.items()), "a state must be a dict of names to numbers, not list"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_load_state_dict_refuses_bad_states_and_changes_nothing(model, case):
    description, state, message = broken_states(model)[case]
    # Make the good part of the state different from the model, so a partial load would show.
    if isinstance(state, dict):
        for key, value in state.items():
            if isinstance(value, list) and len(value) == 16 and all(isinstance(x, float) for x in value):
                state[key] = [x + 1.0 for x in value]
    before = snapshot(model)
    with pytest.raises(CheckpointError) as raised:
        model.load_state_dict(state)
    assert message in str(raised.value), description
    assert snapshot(model) == before
    assert isinstance(raised.value, ValueError)


def test_load_state_dict_lists_several_problems_at_once(model):
    state = model.state_dict()
    del state["layers.0.neurons.0.w"]
    state["extra"] = 1.0
    state["layers.2.neurons.0.b"] = "x"
    message = str(pytest.raises(CheckpointError, model.load_state_dict, state).value)
    assert "missing key 'layers.0.neurons.0.w'" in message
    assert "unexpected key 'extra'" in message
    assert "layers.2.neurons.0.b is 'x'" in message
    assert message.startswith("the state does not fit MLP(2, [16, 16, 1], activation='relu')")


# ---------------------------------------------------------------------------------------------
# Architecture


@pytest.mark.parametrize(
    "module",
    [
        Neuron(3),
        Neuron(3, nonlin=False),
        Neuron(2, activation="sigmoid"),
        Layer(2, 5, activation="tanh"),
        Layer(4, 1, nonlin=False),
        MLP(2, [16, 16, 1]),
        MLP(64, [32, 10], activation="tanh"),
        GPT(27, chars="abcdefghijklmnopqrstuvwxyz"),
        GPT(5, n_layer=2, n_head=2, n_embd=4, block_size=3),
    ],
    ids=repr,
)
def test_architecture_rebuilds_the_same_kind_of_module(module):
    architecture = module.architecture()
    assert json.loads(json.dumps(architecture)) == architecture  # JSON-ready
    rebuilt = serialize.from_architecture(architecture)
    assert type(rebuilt) is type(module)
    assert rebuilt.architecture() == architecture
    assert repr(rebuilt) == repr(module)
    assert [type(p) for p in rebuilt.parameters()] == [type(p) for p in module.parameters()]
    assert len(rebuilt.parameters()) == len(module.parameters())


def test_from_architecture_leaves_the_global_random_state_alone():
    random.seed(5)
    expected = random.random()
    random.seed(5)
    serialize.from_architecture({"type": "MLP", "nin": 2, "nouts": [8, 1], "activation": "relu"})
    assert random.random() == expected


@pytest.mark.parametrize(
    "architecture, message",
    [
        ({"type": "__import__", "nin": 2}, "type '__import__' is not one a checkpoint may hold"),
        ({"type": "os.system", "nin": 2}, "type 'os.system' is not one"),
        ({"type": "Module"}, "type 'Module' is not one"),
        ({"type": "Value"}, "type 'Value' is not one"),
        ({"type": ["MLP"]}, "type ['MLP'] is not one"),
        ({"nin": 2}, "type None is not one"),
        ("MLP", "must be a JSON object, not a string"),
        ({"type": "MLP", "nin": 2, "activation": "relu"}, "the MLP architecture is missing 'nouts'"),
        ({"type": "MLP", "nin": 2, "nouts": [1], "activation": "relu", "x": 1}, "has unexpected 'x'"),
        ({"type": "MLP", "nin": 0, "nouts": [1], "activation": "relu"}, "nin must be a positive integer"),
        ({"type": "MLP", "nin": 2.0, "nouts": [1], "activation": "relu"}, "nin must be an integer, got 2.0"),
        (
            {"type": "MLP", "nin": True, "nouts": [1], "activation": "relu"},
            "nin must be an integer, got True",
        ),
        ({"type": "MLP", "nin": 2, "nouts": [], "activation": "relu"}, "nouts must be a non-empty list"),
        (
            {"type": "MLP", "nin": 2, "nouts": [4, -1], "activation": "relu"},
            "size in nouts must be a positive",
        ),
        (
            {"type": "MLP", "nin": 2, "nouts": "16", "activation": "relu"},
            "nouts must be a list of layer sizes",
        ),
        ({"type": "MLP", "nin": 2, "nouts": [1], "activation": "gelu"}, "activation must be one of"),
        ({"type": "Neuron", "nin": 2, "nonlin": 1, "activation": "relu"}, "nonlin must be True or False"),
        (
            {"type": "Layer", "nin": 2, "nout": 0, "nonlin": True, "activation": "relu"},
            "nout must be a positive",
        ),
        ({"type": "Neuron", "nin": 2, "nonlin": True}, "the Neuron architecture is missing 'activation'"),
    ],
)
def test_from_architecture_refuses_anything_off_the_whitelist(architecture, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        serialize.from_architecture(architecture)


def test_custom_modules_cannot_be_saved(tmp_path):
    class Custom(Module):
        pass

    with pytest.raises(TypeError, match="Custom cannot describe its architecture"):
        save(Custom(), tmp_path / "custom.json")
    with pytest.raises(TypeError, match="expected a chainrule.nn Module, got list"):
        save([], tmp_path / "custom.json")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# save / load round trip


def test_round_trip_is_bit_exact(model, tmp_path):
    # Include floats whose shortest repr is long, tiny and huge ones, and a negative zero.
    special = [0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308, 1 / 3]
    for p, x in zip(model.parameters(), special, strict=False):
        p.data = x
    path = tmp_path / "model.json"
    save(model, path)
    loaded = load(path)
    assert isinstance(loaded, MLP)
    assert loaded.architecture() == model.architecture()
    assert [p.data.hex() for p in loaded.parameters()] == [p.data.hex() for p in model.parameters()]
    assert all(p.grad == 0.0 for p in loaded.parameters())  # gradients are not saved
    x = [0.7, -1.3]
    assert loaded(x).data == model(x).data


@pytest.mark.parametrize("module", [Neuron(3, activation="tanh"), Layer(3, 2, nonlin=False)], ids=repr)
def test_round_trip_of_neuron_and_layer(module, tmp_path):
    path = str(tmp_path / "m.json")  # a str path works as well as a Path
    save(module, path)
    loaded = load(path)
    assert type(loaded) is type(module)
    assert loaded.state_dict() == module.state_dict()
    assert loaded([0.1, 0.2, 0.3]) is not None


def test_the_file_is_plain_readable_json(saved):
    text = saved.read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["format"] == "chainrule-checkpoint"
    assert document["version"] == 1
    assert document["architecture"] == {"type": "MLP", "nin": 2, "nouts": [16, 16, 1], "activation": "relu"}
    assert len(document["state"]) == 2 * (16 + 16 + 1)
    assert '\n    "layers.0.neurons.0.w": [' in text  # one line per entry, for people reading it


def test_saving_again_replaces_the_file(model, saved):
    model.layers[0].neurons[0].b.data = 42.0
    save(model, saved)
    assert load(saved).layers[0].neurons[0].b.data == 42.0
    assert folder_listing(saved) == ["model.json"]


def test_a_model_with_nan_is_refused_and_the_old_file_kept(model, saved):
    before = saved.read_bytes()
    model.layers[1].neurons[2].w[5].data = float("nan")
    with pytest.raises(CheckpointError, match=r"layers.1.neurons.2.w\[5\] is nan"):
        save(model, saved)
    assert saved.read_bytes() == before
    assert folder_listing(saved) == ["model.json"]


def test_save_into_a_missing_folder(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        save(model, tmp_path / "nope" / "model.json")


def test_load_leaves_the_global_random_state_alone(saved):
    random.seed(9)
    expected = random.random()
    random.seed(9)
    load(saved)
    assert random.random() == expected


def test_top_level_names_are_the_serialize_ones():
    assert chainrule.save is serialize.save
    assert chainrule.load is serialize.load
    assert chainrule.CheckpointError is serialize.CheckpointError
    assert issubclass(CheckpointError, ValueError)


# ---------------------------------------------------------------------------------------------
# Crashes during save leave the previous checkpoint intact


class SimulatedCrash(Exception):
    pass


def crash(*args, **kwargs):
    raise SimulatedCrash("the power went out")


def json_dumps_that_crashes_after(calls):
    """json.dumps that works ``calls`` times, then crashes: the temporary file is half written."""
    real_dumps = json.dumps
    count = 0

    def dumps(*args, **kwargs):
        nonlocal count
        count += 1
        if count > calls:
            raise SimulatedCrash("crashed in the middle of writing")
        return real_dumps(*args, **kwargs)

    return dumps


@pytest.mark.parametrize(
    "where, replacement",
    [
        ("json.dumps", json_dumps_that_crashes_after(10)),
        ("os.fsync", crash),
        ("os.replace", crash),
    ],
)
def test_a_crash_during_save_keeps_the_previous_file(model, saved, monkeypatch, where, replacement):
    before = saved.read_bytes()
    module_name, function = where.split(".")
    monkeypatch.setattr(getattr(serialize, module_name), function, replacement)
    model.layers[0].neurons[0].b.data = 123.0  # the new save would change the file
    with pytest.raises(SimulatedCrash):
        save(model, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert folder_listing(saved) == ["model.json"]  # no temporary file left behind
    assert load(saved).layers[0].neurons[0].b.data == 0.0


def test_a_keyboard_interrupt_during_save_cleans_up(model, saved, monkeypatch):
    before = saved.read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialize.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save(model, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert folder_listing(saved) == ["model.json"]


def test_a_crash_during_the_first_save_leaves_no_file(model, tmp_path, monkeypatch):
    monkeypatch.setattr(serialize.os, "replace", crash)
    with pytest.raises(SimulatedCrash):
        save(model, tmp_path / "model.json")
    assert os.listdir(tmp_path) == []


def kill_during_save(path):
    """Run a save in a child process that dies (no cleanup at all) just before the rename."""
    script = textwrap.dedent(
        f"""
        import os, random
        from chainrule import save, serialize
        from chainrule.nn import MLP
        serialize.os.replace = lambda *args: os._exit(3)
        random.seed(99)
        save(MLP(2, [16, 16, 1]), {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr


def test_a_killed_process_leaves_the_previous_file(saved):
    # A real crash: the process dies (os._exit, no cleanup) just before the rename.
    before = saved.read_bytes()
    kill_during_save(saved)
    assert saved.read_bytes() == before
    load(saved)
    # The hard kill could not remove its (hidden, complete) temporary file; that is all it
    # leaves, and the next save of this checkpoint removes it.
    leftovers = [name for name in folder_listing(saved) if name != "model.json"]
    assert all(name.startswith(_files.temporary_prefix("model.json")) for name in leftovers)
    save(MLP(2, [3, 1]), saved)
    assert folder_listing(saved) == ["model.json"]


# ---------------------------------------------------------------------------------------------
# Damaged or foreign files


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "runs" / "x.json"
    with pytest.raises(FileNotFoundError, match="no such checkpoint file") as raised:
        load(path)
    assert str(path) in str(raised.value)


def assert_refused(path, *fragments):
    with pytest.raises(CheckpointError) as raised:
        load(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_truncated_file(saved):
    text = saved.read_bytes()
    saved.write_bytes(text[: len(text) // 2])
    assert_refused(saved, "is not valid JSON (line ", "ends too early")


def test_every_prefix_of_a_checkpoint_is_refused(tmp_path):
    random.seed(3)
    path = tmp_path / "small.json"
    save(MLP(2, [2, 1]), path)
    full = path.read_bytes()
    for end in range(len(full) - 1):  # all but the final newline
        path.write_bytes(full[:end])
        with pytest.raises(CheckpointError):
            load(path)


def test_garbage_bytes(saved):
    saved.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff garbage")
    assert_refused(saved, "not UTF-8 text (byte 0 is 0x89)")


def test_empty_file(saved):
    saved.write_bytes(b"")
    assert_refused(saved, "is empty")


def test_a_pickle_is_refused_not_run(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"format": "chainrule-checkpoint"}))
    assert_refused(path, "not UTF-8 text")


def rewrite(path, **changes):
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            del document[key]
        else:
            document[key] = value
    path.write_text(json.dumps(document))


def test_not_json_names_line_and_column(saved):
    lines = saved.read_text().splitlines()
    lines[2] = '  "version": 1 oops,'
    saved.write_text("\n".join(lines))
    assert_refused(saved, "is not valid JSON (line 3, column 16")


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"version": 2}, ["format version 2, written by a newer chainrule", "reads version 1"]),
        ({"version": "1"}, ["format version '1'"]),
        ({"version": True}, ["format version True"]),
        ({"version": KeyError}, ["missing key 'version'"]),
        ({"format": "pytorch"}, ["not a chainrule checkpoint: its format is 'pytorch'"]),
        ({"format": KeyError}, ["not a chainrule checkpoint: missing key 'format'"]),
        ({"architecture": KeyError}, ["missing key 'architecture'"]),
        ({"state": KeyError}, ["missing key 'state'"]),
        ({"extra": 1}, ["unexpected key(s) 'extra'"]),
        ({"architecture": {"type": "__import__", "name": "os"}}, ["type '__import__' is not one"]),
        ({"architecture": {"type": "eval"}}, ["type 'eval' is not one"]),
        ({"state": [1, 2]}, ["'state' should be a JSON object, not an array"]),
    ],
)
def test_wrong_header_or_architecture(saved, changes, fragments):
    rewrite(saved, **changes)
    assert_refused(saved, *fragments)


def test_a_json_array_is_not_a_checkpoint(saved):
    saved.write_text("[1, 2, 3]")
    assert_refused(saved, "should hold a JSON object, but holds an array")


def test_nan_in_the_file_is_refused(saved):
    saved.write_text(saved.read_text().replace('"layers.0.neurons.0.b": 0.0', '"layers.0.neurons.0.b": NaN'))
    assert_refused(saved, "it holds NaN")


def test_state_that_does_not_fit_the_architecture(saved):
    document = json.loads(saved.read_text())
    document["state"]["layers.1.neurons.0.w"] = [0.5, 0.25, 0.125]
    document["state"]["layers.9.neurons.0.w"] = [0.0] * 13  # keep the total count the same
    saved.write_text(json.dumps(document))
    message = assert_refused(saved, "layers.1.neurons.0.w has 3 numbers, the model needs 16")
    assert "unexpected key 'layers.9.neurons.0.w'" in message


def test_an_architecture_bigger_than_its_state_is_refused_before_building(saved):
    rewrite(saved, architecture={"type": "MLP", "nin": 1000, "nouts": [100, 1], "activation": "relu"})
    assert_refused(saved, "needs 100201 parameters, but its state holds only 337")  # 100*1001 + 101
    # Past the parameter limit, the limit is what the message names.
    rewrite(saved, architecture={"type": "MLP", "nin": 10**12, "nouts": [1], "activation": "relu"})
    assert_refused(saved, "has 1000000000001 parameters, more than the limit of", "MAX_CHECKPOINT_PARAMETERS")
    # A million neurons: the skeleton stops at its 338th weight vector or bias (each is a
    # parameter at least), more than the state's 337 numbers, so the refusal is quick.
    for nin in (2, 10**12):
        rewrite(saved, architecture={"type": "MLP", "nin": nin, "nouts": [10**6, 1], "activation": "relu"})
        start = time.monotonic()
        assert_refused(saved, "needs more parameters than the 337 its state holds")
        assert time.monotonic() - start < 1


def test_a_state_for_a_different_size_is_refused(saved, tmp_path):
    random.seed(0)
    other = tmp_path / "other.json"
    save(MLP(2, [8, 1]), other)
    document = json.loads(saved.read_text())
    document["architecture"] = json.loads(other.read_text())["architecture"]
    saved.write_text(json.dumps(document))
    assert_refused(saved, "unexpected keys", "layers.1.neurons.0.w has 16 numbers, the model needs 8")


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), byte=st.integers(0, 255))
def test_any_corrupted_byte_gives_a_checkpoint_or_a_checkpoint_error(tmp_path_factory, position, byte):
    random.seed(4)
    path = tmp_path_factory.mktemp("corrupt") / "model.json"
    save(MLP(2, [3, 1]), path)
    data = bytearray(path.read_bytes())
    data[position % len(data)] = byte
    path.write_bytes(bytes(data))
    try:
        loaded = load(path)
    except CheckpointError:
        return
    assert isinstance(loaded, MLP)  # a changed digit can still be a valid checkpoint


# ---------------------------------------------------------------------------------------------
# Hostile paths and files


def load_in_child(path, setup=""):
    """Run ``load(path)`` in a fresh interpreter that cannot hang or eat memory for long.

    A loader that blocks on a FIFO or reads /dev/zero to the end would take the test run down
    with it; in a child with a timeout and a 1 GB address-space limit it just fails the test.
    Returns what the child printed: the exception's type and message, or "loaded".
    """
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from chainrule import load, serialize
        {setup}
        try:
            load({str(path)!r})
        except BaseException as error:
            print(type(error).__name__, error)
        else:
            print("loaded")
        """
    )
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load({str(path)!r}) hung")
    return result.stdout.strip() + result.stderr.strip()


# ---------------------------------------------------------------------------------------------
# load: only regular files


@posix_only
def test_load_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.json"
    os.mkfifo(fifo)
    outcome = load_in_child(fifo)
    assert outcome.startswith("CheckpointError"), outcome
    assert "named pipe" in outcome and "not a regular file" in outcome and str(fifo) in outcome


@posix_only
def test_a_file_swapped_for_a_fifo_after_the_check_does_not_hang(tmp_path):
    # The race: os.stat saw a regular file, then the name was given to a FIFO. Opening must
    # not block, and the check on the opened file must refuse it.
    fifo = tmp_path / "model.json"
    os.mkfifo(fifo)
    regular = tmp_path / "regular.json"
    regular.write_text("{}")
    setup = textwrap.dedent(
        f"""
        import os
        real_stat = os.stat
        def stat(path, *args, **kwargs):
            if os.fspath(path) == {str(fifo)!r}:
                return real_stat({str(regular)!r})
            return real_stat(path, *args, **kwargs)
        serialize.os.stat = stat
        """
    ).replace("\n", "\n        ")
    outcome = load_in_child(fifo, setup)
    assert outcome.startswith("CheckpointError"), outcome
    assert "named pipe" in outcome


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_load_refuses_dev_zero_without_reading_it():
    outcome = load_in_child("/dev/zero")
    assert outcome.startswith("CheckpointError"), outcome
    assert "/dev/zero" in outcome and "device" in outcome


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_load_refuses_dev_null_as_a_device_not_as_an_empty_file():
    with pytest.raises(CheckpointError, match="/dev/null is a character device, not a regular file"):
        load("/dev/null")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_load_refuses_a_socket():
    # Unix socket paths are short (about 100 bytes), so not under pytest's long tmp_path.
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        path = os.path.join(folder, "s.json")
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(path)
            with pytest.raises(CheckpointError, match="is a socket, not a regular file"):
                load(path)
        finally:
            server.close()


def test_load_refuses_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError) as raised:
        load(tmp_path)
    assert raised.value.filename == str(tmp_path)


@posix_only
def test_load_follows_a_symlink_to_a_regular_file(saved, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(saved)
    assert load(link).state_dict() == load(saved).state_dict()


# ---------------------------------------------------------------------------------------------
# load: a size limit, checked before reading and while reading


def test_the_size_limit_is_generous_for_real_models():
    # MLP(784, [256, 256, 10]), an MNIST model far larger than a scalar engine trains
    # comfortably, needs about 270,000 numbers of at most 25 characters each.
    parameters = serialize._parameter_count(
        {"type": "MLP", "nin": 784, "nouts": [256, 256, 10], "activation": "relu"}
    )
    assert serialize.MAX_CHECKPOINT_BYTES >= 25 * parameters


def test_a_file_over_the_limit_is_refused_before_reading(saved, monkeypatch):
    size = saved.stat().st_size
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_BYTES", size - 1)
    with pytest.raises(CheckpointError) as raised:
        load(saved)
    message = str(raised.value)
    assert str(saved) in message
    assert f"is {size} bytes" in message and f"limit of {size - 1} bytes" in message
    assert "MAX_CHECKPOINT_BYTES" in message
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_BYTES", size)
    load(saved)  # exactly at the limit is fine


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_the_read_itself_stops_past_the_limit():
    # The size is checked before reading, but a file can grow between that check and the
    # read; the read itself must stop one byte past the limit. /dev/zero, disguised as a
    # small regular file, is a file that never ends.
    setup = textwrap.dedent(
        """
        import os, stat
        def disguise(info):
            fields = list(info)
            fields[stat.ST_MODE] = stat.S_IFREG | 0o644
            fields[stat.ST_SIZE] = 10
            return os.stat_result(fields)
        real_stat, real_fstat = os.stat, os.fstat
        serialize.os.stat = lambda *args, **kwargs: disguise(real_stat(*args, **kwargs))
        serialize.os.fstat = lambda fd: disguise(real_fstat(fd))
        serialize.MAX_CHECKPOINT_BYTES = 1000
        """
    ).replace("\n", "\n        ")
    outcome = load_in_child("/dev/zero", setup)
    assert outcome.startswith("CheckpointError"), outcome
    assert "/dev/zero is larger than the limit of 1000 bytes" in outcome


# ---------------------------------------------------------------------------------------------
# load: a crafted state is refused before any module is built


def crafted(tmp_path, architecture, state):
    path = tmp_path / "crafted.json"
    document = {"format": "chainrule-checkpoint", "version": 1, "architecture": architecture, "state": state}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def nothing_built(monkeypatch):
    """Make building any weight fail the test: a refusal must come from the file and a skeleton."""

    def refuse(*args, **kwargs):
        raise AssertionError("load built a module for a checkpoint it should refuse")

    monkeypatch.setattr(nn, "Parameter", refuse)


N = 20_000  # big enough that building first would be slow to notice, small enough to stay fast


@pytest.mark.parametrize(
    "state, fragments",
    [
        ({"junk": [0] * (N + 1)}, ["missing keys 'layers.0.neurons.0.w', 'layers.0.neurons.0.b'", "'junk'"]),
        (
            {"layers.0.neurons.0.w": [0] * N, "layers.0.neurons.0.bias": 0},
            ["missing key 'layers.0.neurons.0.b'", "unexpected key 'layers.0.neurons.0.bias'"],
        ),
        (
            {"layers.0.neurons.0.w": [0] * (N - 1), "layers.0.neurons.0.b": [0, 0]},
            [f"layers.0.neurons.0.w has {N - 1} numbers, the model needs {N}", "neurons.0.b is [0, 0]"],
        ),
        ({"layers.0.neurons.0.w": [0] * (N - 1) + ["x"], "layers.0.neurons.0.b": 0}, [f"w[{N - 1}] is 'x'"]),
    ],
    ids=["wrong keys", "renamed bias", "numbers moved between entries", "not a number"],
)
def test_a_state_that_does_not_fit_is_refused_before_building(tmp_path, nothing_built, state, fragments):
    architecture = {"type": "MLP", "nin": N, "nouts": [1], "activation": "relu"}
    assert_refused(crafted(tmp_path, architecture, state), *fragments)


def test_a_huge_architecture_is_refused_from_its_declared_size(tmp_path, nothing_built):
    architecture = {"type": "MLP", "nin": 10**6, "nouts": [10**6], "activation": "relu"}
    path = crafted(tmp_path, architecture, {"layers.0.neurons.0.w": [0.0] * 100, "layers.0.neurons.0.b": 0.0})
    with pytest.raises(CheckpointError, match="needs more parameters than the 101 its state holds"):
        load(path)
    architecture = {"type": "MLP", "nin": 10**6, "nouts": [10**6, 1], "activation": "relu"}
    path = crafted(tmp_path, architecture, {f"layers.0.neurons.{i}.w": [0.0] * 100 for i in range(4000)})
    expected = f"has more parameters than the limit of {serialize.MAX_CHECKPOINT_PARAMETERS}"
    with pytest.raises(CheckpointError, match=expected):
        load(path)


@pytest.mark.parametrize("kind", ["Neuron", "Layer"])
def test_the_other_types_are_checked_before_building_too(tmp_path, nothing_built, kind):
    architecture = {"type": kind, "nin": 3, "nonlin": True, "activation": "relu"}
    if kind == "Layer":
        architecture["nout"] = 1
    path = crafted(tmp_path, architecture, {"v": [0, 0, 0, 0]})
    with pytest.raises(CheckpointError, match="unexpected key 'v'"):
        load(path)


architectures = st.one_of(
    st.builds(
        lambda nin, nonlin, activation: {
            "type": "Neuron",
            "nin": nin,
            "nonlin": nonlin,
            "activation": activation,
        },
        st.integers(1, 4),
        st.booleans(),
        st.sampled_from(["relu", "tanh", "linear"]),
    ),
    st.builds(
        lambda nin, nout, nonlin: {
            "type": "Layer",
            "nin": nin,
            "nout": nout,
            "nonlin": nonlin,
            "activation": "tanh",
        },
        st.integers(1, 4),
        st.integers(1, 4),
        st.booleans(),
    ),
    st.builds(
        lambda nin, nouts: {"type": "MLP", "nin": nin, "nouts": nouts, "activation": "relu"},
        st.integers(1, 4),
        st.lists(st.integers(1, 4), min_size=1, max_size=3),
    ),
    st.builds(
        lambda vocab, layers, heads, width, block: {
            "type": "GPT",
            "vocab_size": vocab,
            "n_layer": layers,
            "n_head": heads,
            "n_embd": heads * width,
            "block_size": block,
        },
        st.integers(2, 4),
        st.integers(1, 2),
        st.integers(1, 2),
        st.integers(1, 2),
        st.integers(1, 3),
    ),
)


@settings(max_examples=40, deadline=None)
@given(architecture=architectures)
def test_the_shapes_read_from_an_architecture_are_the_built_modules_shapes(architecture):
    # load checks a file against shapes worked out from the architecture alone; they must be
    # exactly the shapes of the module that from_architecture builds.
    module = serialize.from_architecture(architecture)
    built = {name: len(e) if isinstance(e, list) else None for name, e in module.state_entries()}
    assert serialize.architecture_shapes(architecture) == built
    assert list(serialize.architecture_shapes(architecture)) == list(built)  # same order


# ---------------------------------------------------------------------------------------------
# save: what goes into the file


def test_a_value_gradient_from_create_graph_does_not_get_in_the_way(model, tmp_path):
    loss = model([0.5, -1.0]) ** 2
    loss.backward(create_graph=True)
    assert any(isinstance(p.grad, Value) for p in model.parameters())
    path = tmp_path / "model.json"
    save(model, path)
    assert load(path).state_dict() == model.state_dict()


def test_a_value_in_data_is_refused_clearly(model, tmp_path):
    inner = Value(0.5)
    inner.grad = Value(2.0)  # what create_graph leaves behind
    weights = model.layers[0].neurons[1].w
    weights[0].data = inner  # a Parameter's slot takes anything, as a plain Value's does
    with pytest.raises(CheckpointError, match=r"layers.0.neurons.1.w\[0\] is Value\(data=0.5, grad=Value"):
        save(model, tmp_path / "model.json")
    assert listing(tmp_path) == []


def test_numpy_numbers_in_data_are_saved_as_floats(model, tmp_path):
    np = pytest.importorskip("numpy")
    model.layers[1].neurons[0].b.data = np.float32(0.25)
    model.layers[0].neurons[0].w[1].data = np.int64(3)
    path = tmp_path / "model.json"
    save(model, path)
    loaded = load(path)
    assert loaded.layers[1].neurons[0].b.data == 0.25
    assert loaded.layers[0].neurons[0].w[1].data == 3.0


def test_save_refuses_a_checkpoint_that_load_would_refuse_as_too_big(model, saved, monkeypatch):
    before = saved.read_bytes()
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_BYTES", 200)
    model.layers[0].neurons[0].b.data = 1.0
    with pytest.raises(CheckpointError, match="larger than the limit of 200 bytes") as raised:
        save(model, saved)
    assert str(saved) in str(raised.value)
    assert saved.read_bytes() == before
    assert folder_listing(saved) == ["model.json"]


# ---------------------------------------------------------------------------------------------
# save: paths


def test_a_name_near_the_length_limit_works(model, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    path = tmp_path / ("m" * (limit - 5) + ".json")
    save(model, path)
    assert load(path).state_dict() == model.state_dict()
    assert listing(tmp_path) == [path.name]


def test_a_name_over_the_length_limit_names_the_users_path(model, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    path = tmp_path / ("m" * limit + ".json")
    with pytest.raises(OSError) as raised:
        save(model, path)
    assert raised.value.errno == errno.ENAMETOOLONG
    assert raised.value.filename == str(path)
    assert listing(tmp_path) == []


def test_a_missing_folder_names_the_users_path(model, tmp_path):
    path = tmp_path / "nope" / "model.json"
    with pytest.raises(FileNotFoundError, match="no such folder") as raised:
        save(model, path)
    assert raised.value.filename == str(path)


def test_a_file_in_the_way_of_the_folder_is_not_a_folder(model, saved):
    path = saved / "model.json"  # saved is a file, not a folder
    with pytest.raises(NotADirectoryError) as raised:
        save(model, path)
    assert raised.value.filename == str(path)
    assert "not a folder" in str(raised.value)


def test_a_path_ending_in_a_separator_is_refused(model, tmp_path):
    path = str(tmp_path / "model.json") + os.sep
    with pytest.raises(IsADirectoryError) as raised:
        save(model, path)
    assert raised.value.filename == path
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "error_number, error_type",
    [(errno.EROFS, OSError), (errno.EACCES, PermissionError), (errno.ENOSPC, OSError)],
)
def test_errors_creating_the_temporary_file_name_the_users_path(
    model, tmp_path, monkeypatch, error_number, error_type
):
    path = tmp_path / "model.json"
    real_open = os.open

    def failing_open(name, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(error_number, os.strerror(error_number), name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(serialize.os, "open", failing_open)
    with pytest.raises(error_type) as raised:
        save(model, path)
    error = raised.value
    assert error.errno == error_number
    assert error.filename == str(path)
    assert os.strerror(error_number) in str(error)
    assert ".tmp" not in str(error) and "chainrule-" not in str(error)


def test_errors_while_writing_and_renaming_name_the_users_path(model, saved, monkeypatch):
    before = saved.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(serialize.os, "fsync", full)
    with pytest.raises(OSError) as raised:
        save(model, saved)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(saved)
    monkeypatch.undo()

    def refuse(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), source, target)

    monkeypatch.setattr(serialize.os, "replace", refuse)
    with pytest.raises(OSError) as raised:
        save(model, saved)
    assert raised.value.filename == str(saved) and raised.value.filename2 is None
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert folder_listing(saved) == ["model.json"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_names_the_users_path(model, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as raised:
            save(model, folder / "model.json")
        assert raised.value.filename == str(folder / "model.json")
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# save: over what is already there


@posix_only
def test_saving_over_a_file_keeps_its_permissions(model, saved):
    saved.chmod(0o600)
    save(model, saved)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    saved.chmod(0o751)
    save(model, saved)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o751


@posix_only
def test_a_new_file_gets_the_usual_permissions(model, tmp_path):
    umask = os.umask(0o027)
    try:
        save(model, tmp_path / "model.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "model.json").stat().st_mode) == 0o640


@posix_only
def test_saving_to_a_symlink_writes_through_to_its_target(model, tmp_path):
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "best.json"
    save(Neuron(2), target)
    target.chmod(0o600)
    link = tmp_path / "model.json"
    link.symlink_to(os.path.join("runs", "best.json"))  # relative, as people make them
    save(model, link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("runs", "best.json")
    assert load(target).state_dict() == model.state_dict()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert listing(tmp_path) == ["model.json", "runs"] and listing(tmp_path / "runs") == ["best.json"]


@posix_only
def test_saving_to_a_dangling_symlink_creates_its_target(model, tmp_path):
    link = tmp_path / "model.json"
    link.symlink_to("new.json")
    save(model, link)
    assert link.is_symlink()
    assert load(tmp_path / "new.json").state_dict() == model.state_dict()


@posix_only
def test_a_symlink_loop_is_refused_naming_the_path(model, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError) as raised:
        save(model, a)
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(a)
    assert a.is_symlink() and b.is_symlink()


def test_saving_over_a_folder_is_refused(model, tmp_path):
    (tmp_path / "model.json").mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        save(model, tmp_path / "model.json")
    assert raised.value.filename == str(tmp_path / "model.json")
    assert listing(tmp_path) == ["model.json"]


@posix_only
def test_saving_over_a_fifo_is_refused_and_leaves_it(model, tmp_path):
    fifo = tmp_path / "model.json"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="is a named pipe"):
        save(model, fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert listing(tmp_path) == ["model.json"]


# ---------------------------------------------------------------------------------------------
# save: temporary files left by a killed save do not pile up


@posix_only
def test_the_next_save_removes_what_killed_saves_left(model, saved):
    before = saved.read_bytes()
    kill_during_save(saved)
    (first,) = set(folder_listing(saved)) - {"model.json"}  # a complete, hidden temporary file
    kill_during_save(saved)  # removes the first one's leftover, then leaves its own
    (second,) = set(folder_listing(saved)) - {"model.json"}
    assert second != first
    assert saved.read_bytes() == before
    save(model, saved)
    assert folder_listing(saved) == ["model.json"]


@posix_only
def test_cleaning_leaves_other_files_alone(model, saved, tmp_path):
    other = tmp_path / "other.json"
    kill_during_save(other)  # another checkpoint's leftover is that checkpoint's business
    leftover = set(listing(tmp_path)) - {"model.json"}
    for name in (".model.json.swp", "model.json.tmp", ".chainrule-notes.tmp"):
        (tmp_path / name).write_text("a user's file")
    save(model, saved)
    assert (
        set(listing(tmp_path))
        == {"model.json", ".model.json.swp", "model.json.tmp", ".chainrule-notes.tmp"} | leftover
    )


@posix_only
def test_a_temporary_file_still_being_written_is_not_removed(model, saved, tmp_path):
    # Another process saving the same checkpoint holds a lock on its temporary file until its
    # rename; a concurrent save must not delete it. (A lock held through another open file
    # description conflicts even within one process, so this process can play both parts.)
    fcntl = pytest.importorskip("fcntl")
    kill_during_save(saved)
    (leftover,) = set(listing(tmp_path)) - {"model.json"}
    with open(tmp_path / leftover, "rb") as busy:
        fcntl.flock(busy.fileno(), fcntl.LOCK_EX)
        save(model, saved)
        assert leftover in listing(tmp_path)
    save(model, saved)
    assert listing(tmp_path) == ["model.json"]


@posix_only
def test_a_temporary_file_removed_before_it_was_locked_is_replaced(model, saved, monkeypatch):
    # The narrow race: another save's cleaning removes our new temporary file between its
    # creation and our lock. The save must notice and carry on with a fresh one.
    fcntl = pytest.importorskip("fcntl")
    real_flock = fcntl.flock
    removed = []

    def flock(fd, operation):
        if not removed:
            name = next(n for n in os.listdir(saved.parent) if n != "model.json")
            os.unlink(saved.parent / name)
            removed.append(name)
        return real_flock(fd, operation)

    monkeypatch.setattr(_files.fcntl, "flock", flock)
    model.layers[0].neurons[0].b.data = 7.0
    save(model, saved)
    monkeypatch.undo()
    assert removed
    assert load(saved).layers[0].neurons[0].b.data == 7.0
    assert folder_listing(saved) == ["model.json"]


def test_temporary_names_are_short_whatever_the_target(tmp_path):
    for name in ("m.json", "m" * 255, "é" * 127):
        temporary = _files.temporary_prefix(name)
        assert temporary.startswith(".") and len(os.fsencode(temporary)) < 64


# ---------------------------------------------------------------------------------------------
# Files written before the module registry (tests/data/, saved at commit baa7dd0 by the
# hand-written save path) still load, to the same numbers, names, reprs and outputs.

DATA = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(DATA, "expected.json"), encoding="utf-8") as _file:
    EARLIER_CHECKPOINTS = json.load(_file)


@pytest.mark.parametrize("name", sorted(EARLIER_CHECKPOINTS))
def test_checkpoints_written_before_the_registry_still_load(name, tmp_path):
    path = os.path.join(DATA, name)
    expected = EARLIER_CHECKPOINTS[name]
    with open(path, encoding="utf-8") as file:
        document = json.load(file)
    model = load(path)
    assert repr(model) == expected["repr"]
    assert len(model.parameters()) == expected["parameters"]
    assert model.architecture() == document["architecture"]
    assert model.state_dict() == document["state"]  # every name, in order, every number bit for bit
    assert list(model.state_dict()) == list(document["state"])
    if isinstance(model, GPT):
        output = [z.data for z in model(4, 0, model.new_caches())]
    else:
        y = model([0.5, -1.25, 2.0][: 2 if name == "mlp.json" else 3])
        output = [v.data for v in y] if isinstance(y, list) else [y.data]
    assert output == expected["output"]
    # Saving it again writes the same file, byte for byte.
    save(model, tmp_path / name)
    assert (tmp_path / name).read_bytes() == open(path, "rb").read()
