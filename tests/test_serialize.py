"""Tests for checkpoints: Module.state_dict/load_state_dict and chainrule.save/load."""

import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule
from chainrule import CheckpointError, load, save, serialize
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


def folder_listing(path):
    return sorted(os.listdir(path.parent))


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
        ({"type": "MLP", "nin": 2.0, "nouts": [1], "activation": "relu"}, "nin must be a positive integer"),
        ({"type": "MLP", "nin": True, "nouts": [1], "activation": "relu"}, "nin must be a positive integer"),
        ({"type": "MLP", "nin": 2, "nouts": [], "activation": "relu"}, "nouts must be a non-empty list"),
        ({"type": "MLP", "nin": 2, "nouts": [4, -1], "activation": "relu"}, "nouts must be a non-empty list"),
        ({"type": "MLP", "nin": 2, "nouts": [1], "activation": "gelu"}, "activation must be one of"),
        ({"type": "Neuron", "nin": 2, "nonlin": 1, "activation": "relu"}, "nonlin must be true or false"),
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


def test_a_killed_process_leaves_the_previous_file(saved):
    # A real crash: the process dies (os._exit, no cleanup) just before the rename.
    before = saved.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, random
        from chainrule import save, serialize
        from chainrule.nn import MLP
        serialize.os.replace = lambda *args: os._exit(3)
        random.seed(99)
        save(MLP(2, [16, 16, 1]), {str(saved)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert saved.read_bytes() == before
    load(saved)
    # The hard kill could not remove its (hidden, complete) temporary file; that is all it leaves.
    leftovers = [name for name in folder_listing(saved) if name != "model.json"]
    assert all(name.startswith(".model.json.") and name.endswith(".tmp") for name in leftovers)


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
    rewrite(saved, architecture={"type": "MLP", "nin": 10**12, "nouts": [10**6, 1], "activation": "relu"})
    assert_refused(saved, "needs 1000000000002000001 parameters, but its state holds only 337")


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
